package consensus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// Server is one member of the Raft configuration.
type Server struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	// Voter is false for a raft non-voter (Colony does not create them,
	// but a configuration may hold one after a manual change).
	Voter bool `json:"voter"`
}

// Node is this agent's Raft participant: one raft.Raft over a boltdb log
// and stable store, file snapshots and a TCP (or injected) transport, with
// the cluster State as its FSM. Only voters run a Node.
type Node struct {
	cfg       Config
	logger    *slog.Logger
	raft      *raft.Raft
	state     *State
	store     *raftboltdb.BoltStore
	snaps     *raft.FileSnapshotStore
	transport *raft.NetworkTransport
	observer  *raft.Observer

	leaderChanges atomic.Uint64
	// readyTerm is the term in which this node, as leader, last confirmed
	// with a barrier that its state holds every earlier entry.
	readyTerm atomic.Uint64

	shutdownOnce sync.Once
	shutdownErr  error
	shutdownCh   chan struct{}
	wg           sync.WaitGroup
}

// raftDir is where a node keeps its Raft state inside the data dir.
func raftDir(dataDir string) string { return filepath.Join(dataDir, "raft") }

// PeersFileName is the recovery file looked for in DataDir/raft at start
// (see Recover and DESIGN.md).
const PeersFileName = "peers.json"

// New opens (or creates) the Raft state under cfg.DataDir and starts Raft.
// A node with no state waits, as a follower with no peers, for either a
// Bootstrap call or an AddVoter from an existing leader. If
// DataDir/raft/peers.json exists, the configuration in it is forced first
// (quorum-loss recovery) and the file is renamed to peers.json.applied.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("consensus config: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("subsystem", "raft")
	hlog := newHCLogAdapter(logger, cfg.RaftLogLevel)

	n := &Node{cfg: cfg, logger: logger, state: NewState(), shutdownCh: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			n.closeStores()
		}
	}()

	dir := raftDir(cfg.DataDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create raft dir: %w", err)
	}
	var err error
	if n.store, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")}); err != nil {
		return nil, fmt.Errorf("open raft log store: %w", err)
	}
	if n.snaps, err = raft.NewFileSnapshotStoreWithLogger(dir, cfg.SnapshotRetain, hlog.Named("snapshot")); err != nil {
		return nil, fmt.Errorf("open raft snapshot store: %w", err)
	}
	if err := n.recoverFromPeersFile(dir, hlog); err != nil {
		return nil, err
	}

	stream := cfg.StreamLayer
	if stream == nil {
		if stream, err = newTCPStreamLayer(cfg.BindAddr, cfg.AdvertiseAddr); err != nil {
			return nil, err
		}
	}
	n.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: cfg.MaxPool,
		Timeout: cfg.TransportTimeout,
		Logger:  hlog.Named("net"),
	})

	rc := cfg.raftConfig()
	rc.Logger = hlog
	if n.raft, err = raft.NewRaft(rc, NewFSM(n.state, logger), n.store, n.store, n.snaps, n.transport); err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}

	obs := make(chan raft.Observation, 16)
	n.observer = raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(n.observer)
	n.wg.Add(1)
	go n.watchLeader(obs)

	ok = true
	logger.Info("raft started", "id", cfg.NodeID, "addr", n.Addr(), "data_dir", dir)
	return n, nil
}

// recoverFromPeersFile applies DataDir/raft/peers.json if present.
func (n *Node) recoverFromPeersFile(dir string, hlog *hclogAdapter) error {
	path := filepath.Join(dir, PeersFileName)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	conf, err := raft.ReadConfigJSON(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	n.logger.Warn("found peers file: forcing a new raft configuration (quorum-loss recovery)", "path", path, "servers", fmt.Sprint(conf.Servers))
	if err := recoverStores(n.cfg, hlog, n.store, n.snaps, conf); err != nil {
		return err
	}
	if err := os.Rename(path, path+".applied"); err != nil {
		return fmt.Errorf("recovery done, but could not rename %s (remove it before the next start): %w", path, err)
	}
	return nil
}

// watchLeader counts leader changes and forgets read readiness on every
// change of leader.
func (n *Node) watchLeader(obs chan raft.Observation) {
	defer n.wg.Done()
	var last raft.ServerID
	for {
		select {
		case <-n.shutdownCh:
			return
		case o := <-obs:
			lo := o.Data.(raft.LeaderObservation)
			if lo.LeaderID != last && lo.LeaderID != "" {
				n.leaderChanges.Add(1)
				n.logger.Info("raft leader changed", "leader_id", string(lo.LeaderID), "leader_addr", string(lo.LeaderAddr))
			}
			if lo.LeaderID == "" && last != "" {
				n.logger.Warn("raft leader lost", "previous_leader_id", string(last))
			}
			last = lo.LeaderID
		}
	}
}

// ID is this node's Raft server ID.
func (n *Node) ID() string { return n.cfg.NodeID }

// Addr is the address other voters reach this node at (the port actually
// bound when BindAddr asked for port 0).
func (n *Node) Addr() string { return string(n.transport.LocalAddr()) }

// State gives read access to the cluster state held by this voter.
func (n *Node) State() *State { return n.state }

// RaftState is this node's role: Follower, Candidate, Leader or Shutdown.
func (n *Node) RaftState() raft.RaftState { return n.raft.State() }

// IsLeader reports whether this node is the leader right now (without a
// round trip: a deposed leader may believe it for up to the lease timeout).
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// TransferLeadership hands leadership to the most up-to-date other voter
// and waits until it has taken over (or ctx ends): a leader that is about
// to stop steps down first, so the cluster has a leader again within a
// round trip instead of an election timeout. It is a no-op on a
// non-leader or a single-voter cluster.
func (n *Node) TransferLeadership(ctx context.Context) error {
	if !n.IsLeader() {
		return nil
	}
	servers, err := n.Servers()
	if err != nil {
		return err
	}
	others := 0
	for _, s := range servers {
		if s.Voter && s.ID != n.cfg.NodeID {
			others++
		}
	}
	if others == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("leadership transfer: %w", err)
	}
	f := n.raft.LeadershipTransfer()
	done := make(chan error, 1)
	// The future resolves within an election timeout, or when Raft shuts
	// down; Shutdown waits for this goroutine after stopping Raft.
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		done <- f.Error()
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("leadership transfer: %w", mapErr(err))
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("leadership transfer: %w", ctx.Err())
	}
}

// Leader returns the ID and address of the leader as this node knows it;
// both are empty when there is none.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// HasExistingState reports whether the data dir already holds Raft state.
func (n *Node) HasExistingState() (bool, error) {
	return raft.HasExistingState(n.store, n.store, n.snaps)
}

// BootstrapSelf makes this node the single voter of a new cluster. It
// returns ErrExistingState if the data dir already holds Raft state.
func (n *Node) BootstrapSelf() error {
	return n.Bootstrap([]Server{{ID: n.ID(), Address: n.Addr(), Voter: true}})
}

// Bootstrap starts a new cluster with the given voters (which must include
// this node). Every node bootstrapped with the identical list joins the
// same cluster; that is how --bootstrap-expect forms one cluster.
func (n *Node) Bootstrap(servers []Server) error {
	has, err := n.HasExistingState()
	if err != nil {
		return fmt.Errorf("check raft state: %w", err)
	}
	if has {
		return ErrExistingState
	}
	conf := raft.Configuration{}
	self := false
	for _, s := range servers {
		if s.ID == n.ID() {
			self = true
		}
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.Address)})
	}
	if !self {
		return fmt.Errorf("bootstrap configuration does not include this node %s", n.ID())
	}
	if err := n.raft.BootstrapCluster(conf).Error(); err != nil {
		if errors.Is(err, raft.ErrCantBootstrap) {
			return ErrExistingState
		}
		return fmt.Errorf("bootstrap raft: %w", err)
	}
	n.logger.Info("raft cluster bootstrapped", "voters", len(servers))
	return nil
}

// timeout turns ctx's deadline into a raft timeout (0 means none for
// raft, so fall back to ApplyTimeout).
func (n *Node) timeout(ctx context.Context) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if dl, ok := ctx.Deadline(); ok {
		d := time.Until(dl)
		if d <= 0 {
			return 0, context.DeadlineExceeded
		}
		return d, nil
	}
	return n.cfg.ApplyTimeout, nil
}

// mapErr turns raft's errors into this package's sentinels, keeping the
// original in the chain.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrNotVoter):
		return fmt.Errorf("%w: %w", ErrNotLeader, err)
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %w", ErrLeadershipLost, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrShutdown, err)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	return err
}

// Apply writes cmd through Raft and waits for this node to apply it. It
// returns the entry's index and the command's result. On a non-leader it
// returns ErrNotLeader at once (the caller forwards). ctx's deadline
// bounds the wait to enter the log; once in, Apply waits for the outcome
// (commit, loss of leadership or shutdown) because abandoning it would
// leave the caller unsure whether the write happened.
func (n *Node) Apply(ctx context.Context, cmd Command) (uint64, any, error) {
	data, err := EncodeCommand(cmd)
	if err != nil {
		return 0, nil, err
	}
	if !n.IsLeader() {
		return 0, nil, ErrNotLeader
	}
	timeout, err := n.timeout(ctx)
	if err != nil {
		return 0, nil, err
	}
	f := n.raft.Apply(data, timeout)
	if err := f.Error(); err != nil {
		return 0, nil, mapErr(err)
	}
	res, _ := f.Response().(ApplyResult)
	return f.Index(), res.Value, res.Err
}

// AddVoter adds (or promotes) a voter; leader only. Adding a server that
// is already a voter at the same address is a no-op.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	timeout, err := n.timeout(ctx)
	if err != nil {
		return err
	}
	if err := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout).Error(); err != nil {
		return fmt.Errorf("add voter %s: %w", id, mapErr(err))
	}
	n.logger.Info("raft voter added", "id", id, "addr", addr)
	return nil
}

// RemoveServer removes a server from the configuration; leader only.
// Removing the leader itself makes it step down once the change commits.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	timeout, err := n.timeout(ctx)
	if err != nil {
		return err
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, timeout).Error(); err != nil {
		return fmt.Errorf("remove server %s: %w", id, mapErr(err))
	}
	n.logger.Info("raft server removed", "id", id)
	return nil
}

// Servers returns the latest Raft configuration known to this node.
func (n *Node) Servers() ([]Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, mapErr(err)
	}
	return fromRaftServers(f.Configuration().Servers), nil
}

func fromRaftServers(in []raft.Server) []Server {
	out := make([]Server, 0, len(in))
	for _, s := range in {
		out = append(out, Server{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out
}

// VerifyLeader confirms with a quorum that this node is still the leader.
func (n *Node) VerifyLeader(ctx context.Context) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	done := make(chan error, 1)
	f := n.raft.VerifyLeader()
	// VerifyLeader's future resolves once a quorum answers, the node steps
	// down (after the lease timeout without quorum), or raft shuts down, so
	// this goroutine always ends; ctx only stops the caller from waiting.
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return mapErr(err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Barrier waits until every entry before it is applied to this node's
// state; leader only. It is a write to the log, so it also proves the
// leader still has a quorum.
func (n *Node) Barrier(ctx context.Context) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	timeout, err := n.timeout(ctx)
	if err != nil {
		return err
	}
	return mapErr(n.raft.Barrier(timeout).Error())
}

// Stats is a point-in-time view of this node's Raft for the API and metrics.
type Stats struct {
	State         string    `json:"state"`
	Term          uint64    `json:"term"`
	LastIndex     uint64    `json:"last_index"`
	CommitIndex   uint64    `json:"commit_index"`
	AppliedIndex  uint64    `json:"applied_index"`
	StateIndex    uint64    `json:"state_index"`
	LastContact   time.Time `json:"last_contact"` // zero on the leader or before any contact
	LeaderChanges uint64    `json:"leader_changes"`
	LeaderID      string    `json:"leader_id"`
	LeaderAddr    string    `json:"leader_addr"`
	Voters        int       `json:"voters"`
}

// Stats returns the current figures. It is cheap (no round trip).
func (n *Node) Stats() Stats {
	st := n.raft.State()
	id, addr := n.Leader()
	s := Stats{
		State:         st.String(),
		Term:          n.raft.CurrentTerm(),
		LastIndex:     n.raft.LastIndex(),
		CommitIndex:   n.raft.CommitIndex(),
		AppliedIndex:  n.raft.AppliedIndex(),
		StateIndex:    n.state.Index(),
		LeaderChanges: n.leaderChanges.Load(),
		LeaderID:      id,
		LeaderAddr:    addr,
	}
	if st != raft.Leader {
		s.LastContact = n.raft.LastContact()
	}
	if servers, err := n.Servers(); err == nil {
		for _, sv := range servers {
			if sv.Voter {
				s.Voters++
			}
		}
	}
	return s
}

// Snapshot forces a snapshot now (tests, and before a planned upgrade).
func (n *Node) Snapshot() error {
	if err := n.raft.Snapshot().Error(); err != nil {
		return fmt.Errorf("snapshot: %w", mapErr(err))
	}
	return nil
}

// Shutdown stops Raft and closes the stores. It does not leave the
// cluster (the leader's voter management does that). Safe to call twice.
func (n *Node) Shutdown() error {
	n.shutdownOnce.Do(func() {
		// Raft first: it must stop using the transport and stores before
		// they are closed underneath it.
		err := n.raft.Shutdown().Error()
		n.raft.DeregisterObserver(n.observer)
		close(n.shutdownCh)
		n.state.Close()
		n.wg.Wait()
		n.shutdownErr = errors.Join(err, n.closeStores())
		n.logger.Info("raft stopped")
	})
	return n.shutdownErr
}

func (n *Node) closeStores() error {
	var errs []error
	if n.transport != nil {
		errs = append(errs, n.transport.Close())
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	return errors.Join(errs...)
}

// ApplyVoterActions carries out a plan from PlanVoters in order, stopping
// at the first error (the next plan starts from whatever was done).
func (n *Node) ApplyVoterActions(ctx context.Context, actions []Action) error {
	for _, a := range actions {
		var err error
		if a.Kind == ActionAddVoter {
			err = n.AddVoter(ctx, a.ID, a.Address)
		} else {
			err = n.RemoveServer(ctx, a.ID)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", a, err)
		}
		n.logger.Info("raft voter change", "action", a.Kind.String(), "id", a.ID, "reason", a.Reason)
	}
	return nil
}

// ReconcileVoters is one pass of the leader's voter loop: it plans against
// the current configuration and the given gossip view (policy.LeaderID is
// set to this node) and applies the plan. It returns what it did.
func (n *Node) ReconcileVoters(ctx context.Context, members []Member, policy VoterPolicy) ([]Action, error) {
	if err := policy.Validate(); err != nil {
		return nil, err
	}
	if !n.IsLeader() {
		return nil, ErrNotLeader
	}
	servers, err := n.Servers()
	if err != nil {
		return nil, err
	}
	policy.LeaderID = n.ID()
	actions := PlanVoters(servers, members, policy)
	return actions, n.ApplyVoterActions(ctx, actions)
}
