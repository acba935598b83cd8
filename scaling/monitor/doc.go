// Package monitor holds the pure decision logic and data types of Colony's
// hierarchical monitoring: the monitoring plan (who reports to whom), the
// compact mergeable summaries nodes push up that tree, their wire encoding and
// validation, and alarm evaluation.
//
// Nothing here does I/O or reads a clock: the agent feeds it members,
// summaries and timestamps and acts on what it returns. That keeps every
// decision reproducible in a unit test and identical on every node that sees
// the same input.
package monitor
