// Package consensus runs Colony's Raft node: the cluster-state FSM, its
// boltdb log and stable stores, snapshots, voter management and forwarding.
package consensus
