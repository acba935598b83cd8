package consensus

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// Config configures one Raft node. The agent fills it from flags; this
// package never reads flags, environment or files other than its data dir.
type Config struct {
	// NodeID is this node's permanent ID (the agent's UUID). It is the Raft
	// server ID, so it must never change for a given data dir.
	NodeID string
	// DataDir is the agent's data directory; Raft keeps its state in
	// DataDir/raft (raft.db for the log and stable store, snapshots/).
	DataDir string
	// BindAddr is the host:port the Raft transport listens on. Port 0 picks
	// a free port; Node.Addr reports the one chosen.
	BindAddr string
	// AdvertiseAddr is the host:port other voters use to reach this node.
	// Empty means the bound address, which must then not be 0.0.0.0 or ::.
	// A port of 0 means the bound port.
	AdvertiseAddr string
	// StreamLayer, if set, replaces the plain TCP listener and dialer
	// (BindAddr and AdvertiseAddr are then ignored). A later issue puts
	// mutual TLS here.
	StreamLayer raft.StreamLayer

	// HeartbeatTimeout is how long a follower waits without contact from
	// the leader before starting an election.
	HeartbeatTimeout time.Duration
	// ElectionTimeout is how long a candidate waits before a new election.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout is how long a leader stays leader without hearing
	// from a quorum; after it the leader steps down (quorum loss).
	LeaderLeaseTimeout time.Duration
	// CommitTimeout bounds how long a commit may wait for a batch to fill.
	CommitTimeout time.Duration
	// TransportTimeout bounds one Raft RPC (other than snapshot installs).
	TransportTimeout time.Duration
	// MaxPool is the number of idle connections kept per peer.
	MaxPool int

	// SnapshotThreshold is how many new log entries trigger a snapshot.
	SnapshotThreshold uint64
	// SnapshotInterval is how often Raft checks whether to snapshot.
	SnapshotInterval time.Duration
	// SnapshotRetain is how many snapshots are kept on disk.
	SnapshotRetain int
	// TrailingLogs is how many log entries are kept after a snapshot, so a
	// slightly lagging follower catches up without a full snapshot.
	TrailingLogs uint64

	// ApplyTimeout bounds how long Apply waits to enqueue a write when the
	// caller's context has no deadline.
	ApplyTimeout time.Duration

	// Logger receives Raft's logs with subsystem=raft; nil discards them.
	Logger *slog.Logger
	// RaftLogLevel is the lowest level of hashicorp/raft's own messages that
	// is passed on. Info keeps elections and membership changes, which are
	// what an operator needs; Debug adds per-RPC noise.
	RaftLogLevel slog.Level
}

// DefaultConfig returns timers suited to a LAN (hashicorp/raft's defaults)
// with a bind address of 127.0.0.1:0. NodeID and DataDir must be set.
func DefaultConfig() Config {
	return Config{
		BindAddr:           "127.0.0.1:0",
		HeartbeatTimeout:   1000 * time.Millisecond,
		ElectionTimeout:    1000 * time.Millisecond,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
		TransportTimeout:   10 * time.Second,
		MaxPool:            3,
		SnapshotThreshold:  8192,
		SnapshotInterval:   120 * time.Second,
		SnapshotRetain:     2,
		TrailingLogs:       10240,
		ApplyTimeout:       10 * time.Second,
		RaftLogLevel:       slog.LevelInfo,
	}
}

// Validate checks the fields and their relations, including the ones
// hashicorp/raft would otherwise reject (or panic on) later.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeID == "" {
		errs = append(errs, errors.New("node ID is required"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	if c.StreamLayer == nil {
		if _, _, err := net.SplitHostPort(c.BindAddr); err != nil {
			errs = append(errs, fmt.Errorf("bind address %q: %w", c.BindAddr, err))
		}
		if c.AdvertiseAddr != "" {
			if _, _, err := net.SplitHostPort(c.AdvertiseAddr); err != nil {
				errs = append(errs, fmt.Errorf("advertise address %q: %w", c.AdvertiseAddr, err))
			}
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"heartbeat timeout", c.HeartbeatTimeout},
		{"election timeout", c.ElectionTimeout},
		{"leader lease timeout", c.LeaderLeaseTimeout},
		{"commit timeout", c.CommitTimeout},
		{"transport timeout", c.TransportTimeout},
		{"snapshot interval", c.SnapshotInterval},
		{"apply timeout", c.ApplyTimeout},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %v", d.name, d.v))
		}
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		errs = append(errs, fmt.Errorf("leader lease timeout (%v) must not exceed the heartbeat timeout (%v)", c.LeaderLeaseTimeout, c.HeartbeatTimeout))
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		errs = append(errs, fmt.Errorf("election timeout (%v) must be at least the heartbeat timeout (%v)", c.ElectionTimeout, c.HeartbeatTimeout))
	}
	if c.SnapshotThreshold == 0 {
		errs = append(errs, errors.New("snapshot threshold must be positive"))
	}
	if c.SnapshotRetain < 1 {
		errs = append(errs, errors.New("snapshot retain must be at least 1"))
	}
	if c.MaxPool < 1 {
		errs = append(errs, errors.New("max pool must be at least 1"))
	}
	return errors.Join(errs...)
}

// raftConfig turns c into hashicorp/raft's configuration.
func (c *Config) raftConfig() *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.NodeID)
	rc.HeartbeatTimeout = c.HeartbeatTimeout
	rc.ElectionTimeout = c.ElectionTimeout
	rc.LeaderLeaseTimeout = c.LeaderLeaseTimeout
	rc.CommitTimeout = c.CommitTimeout
	rc.SnapshotThreshold = c.SnapshotThreshold
	rc.SnapshotInterval = c.SnapshotInterval
	rc.TrailingLogs = c.TrailingLogs
	// A voter removed from the configuration stops its Raft: in Colony a
	// node that is not a voter runs no Raft at all.
	rc.ShutdownOnRemove = true
	return rc
}
