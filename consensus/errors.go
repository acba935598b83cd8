package consensus

import "errors"

// Sentinel errors the agent maps to HTTP statuses and CLI messages.
var (
	// ErrNotLeader means the call must go to the leader (forward it).
	ErrNotLeader = errors.New("not the raft leader")
	// ErrNoLeader means the cluster has no known leader right now: an
	// election is in progress, or quorum is lost.
	ErrNoLeader = errors.New("no raft leader")
	// ErrQuorumLost means fewer than a majority of the voters are alive, so
	// no write or consistent read can succeed until voters come back or an
	// operator runs the recovery procedure (see DESIGN.md).
	ErrQuorumLost = errors.New("raft quorum lost")
	// ErrLeadershipLost means the leader stepped down while a write was in
	// flight: the write may or may not have been committed.
	ErrLeadershipLost = errors.New("raft leadership lost while writing; the outcome is unknown")
	// ErrShutdown means the node is shut down.
	ErrShutdown = errors.New("raft node is shut down")
	// ErrExistingState means a bootstrap was refused because the data dir
	// already holds Raft state (this node already belongs to a cluster).
	ErrExistingState = errors.New("raft state already exists; refusing to bootstrap")
	// ErrInvalidCommand means a command failed validation or decoding.
	ErrInvalidCommand = errors.New("invalid command")
	// ErrUnknownCommandVersion means a log entry uses an encoding version
	// this build does not understand (written by a newer agent).
	ErrUnknownCommandVersion = errors.New("unknown command encoding version")
	// ErrUnknownCommandType means a log entry holds a command type this
	// build does not know (written by a newer agent).
	ErrUnknownCommandType = errors.New("unknown command type")
	// ErrUnknownSnapshotVersion means a snapshot was written by a newer
	// agent with a format this build cannot read.
	ErrUnknownSnapshotVersion = errors.New("unknown snapshot format version")
)
