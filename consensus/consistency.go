package consensus

import (
	"context"
	"fmt"
)

// Consistency is a read mode, as in Consul's ?consistency= (stale,
// default, consistent).
type Consistency int

// Read modes, weakest first in cost, strongest last in guarantees.
const (
	// ConsistencyDefault reads the leader's state without a round trip.
	// Stale only for the lease timeout after a partition deposes the leader.
	ConsistencyDefault Consistency = iota
	// ConsistencyStale reads any voter's local state: fast, possibly
	// behind by the replication lag (or arbitrarily behind if partitioned).
	ConsistencyStale
	// ConsistencyConsistent confirms leadership with a quorum first and
	// waits for every committed entry to be applied: linearizable.
	ConsistencyConsistent
)

// String is the query-string name.
func (c Consistency) String() string {
	switch c {
	case ConsistencyStale:
		return "stale"
	case ConsistencyConsistent:
		return "consistent"
	default:
		return "default"
	}
}

// ParseConsistency reads a ?consistency= value; empty means default.
func ParseConsistency(s string) (Consistency, error) {
	switch s {
	case "", "default":
		return ConsistencyDefault, nil
	case "stale":
		return ConsistencyStale, nil
	case "consistent":
		return ConsistencyConsistent, nil
	}
	return 0, fmt.Errorf("unknown consistency mode %q (want stale, default or consistent)", s)
}

// ReadBarrier returns nil when this node may serve a read in mode c from
// its State, ErrNotLeader when the read must go to the leader (default and
// consistent), or an error when leadership cannot be confirmed.
//
// A newly elected leader may not yet have applied entries committed in
// earlier terms, so the first default or consistent read of a term waits
// for a barrier; later ones in the same term do not.
func (n *Node) ReadBarrier(ctx context.Context, c Consistency) error {
	if c == ConsistencyStale {
		return nil
	}
	if !n.IsLeader() {
		return ErrNotLeader
	}
	commit := n.raft.CommitIndex()
	if c == ConsistencyConsistent {
		if err := n.VerifyLeader(ctx); err != nil {
			return err
		}
	}
	term := n.raft.CurrentTerm()
	if n.readyTerm.Load() != term || (c == ConsistencyConsistent && n.raft.AppliedIndex() < commit) {
		if err := n.Barrier(ctx); err != nil {
			return err
		}
		// The barrier was appended in term (or later, in which case this
		// node is no longer leader of term and the next read re-checks).
		n.readyTerm.Store(term)
	}
	return nil
}
