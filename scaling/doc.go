// Package scaling holds Colony's pure decision logic: placement, the
// monitoring plan, the autoscaler and provider interfaces. Nothing here does
// I/O of its own; the agent feeds it cluster state and acts on its plans.
package scaling
