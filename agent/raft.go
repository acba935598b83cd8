package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"

	"colony/consensus"
	"colony/gossip"
)

// Raft in the agent. Only voters run a consensus.Node; every other node
// finds the leader and the voters through gossip metadata (roles) and
// forwards to them. The leader keeps the voter set at its target with
// consensus.PlanVoters: it asks a chosen node to start Raft over the API,
// then adds it; a removed voter stops Raft and wipes its Raft state, so a
// later restart brings it back as a plain member.

// startConsensus decides at start whether this node runs Raft: with Raft
// state in the data dir it resumes; a node starting alone with an empty
// data dir and no --bootstrap-expect bootstraps a one-voter cluster; any
// other node waits to be promoted (or, with --bootstrap-expect, for its peers).
func (a *Agent) startConsensus(alone bool) error {
	switch {
	case a.raftDataExists():
		n, err := a.startRaft()
		if err != nil {
			return err
		}
		if a.removedFrom(n) {
			// Removed while it was leaving or down (the removal reached it,
			// or a later configuration it holds leaves it out): it is no
			// voter now. Wipe, and come back as a plain member. Checked only
			// here, on our own log: a node just promoted replays older
			// configurations without itself while it catches up.
			a.logger.Info("this node was removed from the voters while it was away", "subsystem", "raft")
			return a.stopRaft(true)
		}
		return nil
	case alone && a.cfg.BootstrapExpect == 0:
		n, err := a.startRaft()
		if err != nil {
			return err
		}
		if err := n.BootstrapSelf(); err != nil && !errors.Is(err, consensus.ErrExistingState) {
			return fmt.Errorf("bootstrap a single-node cluster: %w", err)
		}
		a.logger.Info("no cluster to join: bootstrapped a new one with this node as its only voter", "subsystem", "raft")
	}
	return nil
}

// raftNode returns the running Raft node, or nil on a non-voter.
func (a *Agent) raftNode() *consensus.Node {
	a.raftMu.Lock()
	defer a.raftMu.Unlock()
	return a.raft
}

func (a *Agent) raftDataExists() bool {
	_, err := os.Stat(filepath.Join(a.cfg.DataDir, "raft", "raft.db"))
	return err == nil
}

// raftAddr is the Raft address this node advertises (whether or not it runs Raft).
func (a *Agent) raftAddr() string { return a.gossip.LocalMeta().RaftAddr }

// raftListener returns the Raft listener, reopening it on the same port
// when a previous Raft run closed it.
func (a *Agent) raftListener() (net.Listener, error) {
	if a.raftLn != nil {
		ln := a.raftLn
		a.raftLn = nil
		return ln, nil
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(a.bindIP, strconv.Itoa(a.raftPort)))
	if err != nil {
		return nil, fmt.Errorf("raft: listen: %w", err)
	}
	return ln, nil
}

// startRaft starts this node's Raft (idempotent) and advertises the role.
func (a *Agent) startRaft() (*consensus.Node, error) {
	a.raftMu.Lock()
	defer a.raftMu.Unlock()
	if a.raft != nil {
		return a.raft, nil
	}
	if a.ctx == nil || a.ctx.Err() != nil {
		return nil, errors.New("agent is not running")
	}
	cc := raftTimers(a.cfg.GossipProfile, a.cfg.RaftMultiplier)
	cc.NodeID = a.id.String()
	cc.DataDir = a.cfg.DataDir
	cc.Logger = a.logger
	ln, err := a.raftListener()
	if err != nil {
		return nil, err
	}
	adv, err := net.ResolveTCPAddr("tcp", a.raftAddr())
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("raft advertise address: %w", err)
	}
	sl := &streamLayer{Listener: ln, advertise: adv, drop: a.cfg.DropTo}
	if a.tls != nil {
		sl.Listener = tls.NewListener(ln, a.tls.ServerConfig())
		sl.tls = a.tls.ClientConfig()
	}
	cc.StreamLayer = sl
	if a.cfg.TuneRaft != nil {
		a.cfg.TuneRaft(&cc)
	}
	n, err := consensus.New(cc)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	a.raft = n
	a.raftCollector = n.Collector()
	_ = a.reg.Register(a.raftCollector)
	a.logger.Info("raft running on this node", "subsystem", "raft", "addr", n.Addr(),
		"raft_multiplier", raftMultiplier(a.cfg.GossipProfile, a.cfg.RaftMultiplier),
		"heartbeat_timeout", cc.HeartbeatTimeout, "election_timeout", cc.ElectionTimeout,
		"leader_lease_timeout", cc.LeaderLeaseTimeout)
	return n, nil
}

// stopRaft stops Raft; with wipe it also deletes the Raft state, which a
// node removed from the voters must do so that it never disrupts the
// cluster with an outdated configuration.
func (a *Agent) stopRaft(wipe bool) error {
	a.raftMu.Lock()
	n := a.raft
	a.raft = nil
	if a.raftCollector != nil {
		a.reg.Unregister(a.raftCollector)
		a.raftCollector = nil
	}
	a.raftMu.Unlock()
	if n != nil {
		_ = n.Shutdown()
	}
	if wipe {
		if err := os.RemoveAll(filepath.Join(a.cfg.DataDir, "raft")); err != nil {
			return fmt.Errorf("wipe raft state: %w", err)
		}
		a.logger.Info("no longer a voter: raft stopped and its state removed", "subsystem", "raft")
	}
	return nil
}

// consensusMembers converts the gossip view for voter planning.
func (a *Agent) consensusMembers() []consensus.Member {
	ms := a.gossip.Members()
	out := make([]consensus.Member, 0, len(ms))
	now := time.Now()
	for _, m := range ms {
		cm := consensus.Member{
			ID: m.Meta.ID.String(), RaftAddr: m.Meta.RaftAddr, StatusFor: now.Sub(m.Since),
			Labels: m.Meta.Labels, HasRaft: m.Meta.Roles&(gossip.RoleVoter|gossip.RoleLeader) != 0,
			BootstrapExpect: int(m.Meta.BootstrapExpect),
		}
		switch m.Status {
		case gossip.StatusAlive:
			cm.Status = consensus.MemberAlive
		case gossip.StatusSuspect:
			cm.Status = consensus.MemberSuspect
		case gossip.StatusDead:
			cm.Status = consensus.MemberDead
		default:
			cm.Status = consensus.MemberLeft
		}
		out = append(out, cm)
	}
	return out
}

// memberByID finds a member by node ID in the gossip view.
func (a *Agent) memberByID(id string) (gossip.Member, bool) {
	u, err := uuid.Parse(id)
	if err != nil {
		return gossip.Member{}, false
	}
	return a.gossip.MemberByID(u)
}

// apiAddr is a member's HTTP API address.
func apiAddr(m gossip.Member) string {
	return net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Meta.APIPort)))
}

// leaderMember returns the member this node believes leads Raft: its own
// Raft's view when it runs Raft, else the member advertising the leader
// role in gossip.
func (a *Agent) leaderMember() (gossip.Member, bool) {
	if n := a.raftNode(); n != nil {
		id, _ := n.Leader()
		if id == "" {
			return gossip.Member{}, false
		}
		return a.memberByID(id)
	}
	return a.leaderFromGossip()
}

// leaderFromGossip returns the live member advertising the leader role.
// A killed leader looks alive until failure detection catches up; its
// successor's higher term settles who leads.
func (a *Agent) leaderFromGossip() (gossip.Member, bool) {
	var best gossip.Member
	found := false
	for _, m := range a.gossip.Members() {
		if m.Status == gossip.StatusAlive && m.Meta.Roles&gossip.RoleLeader != 0 && (!found || m.Meta.Term > best.Meta.Term) {
			best, found = m, true
		}
	}
	return best, found
}

// voterMembers are the live members advertising the voter role.
func (a *Agent) voterMembers() []gossip.Member {
	var out []gossip.Member
	for _, m := range a.gossip.Members() {
		if liveVoter(m) {
			out = append(out, m)
		}
	}
	return out
}

// liveVoter reports whether m is alive (or suspect) and gossips the voter role.
func liveVoter(m gossip.Member) bool {
	return (m.Status == gossip.StatusAlive || m.Status == gossip.StatusSuspect) && m.Meta.Roles&gossip.RoleVoter != 0
}

// raftLoop runs on every node for the agent's lifetime: it keeps the
// gossiped roles current, bootstraps when asked to, notices its own
// removal, and on the leader manages the voter set.
func (a *Agent) raftLoop() {
	t := time.NewTicker(a.cfg.RaftTick)
	defer t.Stop()
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-t.C:
		}
		a.raftTick()
	}
}

func (a *Agent) raftTick() {
	n := a.raftNode()
	if n == nil && a.cfg.BootstrapExpect > 0 && !a.raftDataExists() {
		a.tryBootstrapExpect()
		n = a.raftNode()
	}
	if n != nil && n.RaftState() == raft.Shutdown {
		// Raft shut itself down: this node was removed from the voters.
		_ = a.stopRaft(true)
		n = nil
	}
	if n != nil && a.orphaned(n) {
		a.logger.Info("the cluster's leader does not count this node among its voters: it was removed while away", "subsystem", "raft")
		_ = a.stopRaft(true)
		n = nil
	}
	a.updateRoles(n)
	if n != nil && n.IsLeader() {
		a.manageVoters(n)
		a.placeTick(n)
		a.autoscaleTick(n)
		a.monitorPlanTick(n)
	}
}

// orphanGrace is how long a voter may go without hearing from a live
// leader that leaves it out before it retires itself.
const orphanGrace = 10 * time.Second

// orphaned reports whether this node runs Raft for a configuration the
// cluster has moved on from: for orphanGrace it has heard from no leader,
// its own configuration is not empty, and a live leader at least as recent
// (by term) gossips a complete voter list without it. Two ways lead here:
// a voter removed while it was down restarts from its own log (which still
// lists it), and a voter removed while partitioned receives the removal
// when the partition heals but Raft keeps running without a leader. The
// leader also tells the first kind to stop (manageVoters); this covers
// both, and a leader that cannot reach the node. A node that started Raft
// empty (to be promoted, or as a bootstrap voter) hears from the leader
// within a tick or two; if no leader takes it for orphanGrace it stops
// too, and may be promoted later.
func (a *Agent) orphaned(n *consensus.Node) bool {
	if n.IsLeader() {
		a.orphanSince = time.Time{}
		return false
	}
	l, ok := a.leaderFromGossip()
	lid, _ := n.Leader()
	orphan := lid == "" && ok && l.Meta.ID != a.id && len(l.Meta.Voters) > 0 &&
		len(l.Meta.Voters) < gossip.MaxMetaVoters && !slices.Contains(l.Meta.Voters, a.id) && l.Meta.Term >= n.Stats().Term
	if !orphan {
		a.orphanSince = time.Time{}
		return false
	}
	if a.orphanSince.IsZero() {
		a.orphanSince = time.Now()
	}
	return time.Since(a.orphanSince) >= orphanGrace
}

// removedFrom reports whether n's configuration lists other servers but
// not this node.
func (a *Agent) removedFrom(n *consensus.Node) bool {
	servers, err := n.Servers()
	if err != nil || len(servers) == 0 {
		return false
	}
	for _, s := range servers {
		if s.ID == a.id.String() {
			return false
		}
	}
	return true
}

// updateRoles gossips whether this node is a voter and/or the leader.
func (a *Agent) updateRoles(n *consensus.Node) {
	var roles gossip.Role
	var voters []uuid.UUID
	if n != nil {
		if servers, err := n.Servers(); err == nil {
			for _, s := range servers {
				if !s.Voter {
					continue
				}
				if s.ID == a.id.String() {
					roles |= gossip.RoleVoter
				}
				if id, err := uuid.Parse(s.ID); err == nil && len(voters) < gossip.MaxMetaVoters {
					voters = append(voters, id)
				}
			}
		}
		if n.IsLeader() {
			roles |= gossip.RoleLeader | gossip.RoleVoter
		}
	}
	if roles&gossip.RoleVoter == 0 {
		voters = nil
	}
	var term uint64
	if roles&gossip.RoleLeader != 0 {
		term = n.Stats().Term
	}
	slices.SortFunc(voters, func(x, y uuid.UUID) int { return strings.Compare(x.String(), y.String()) })
	meta := a.gossip.LocalMeta()
	if meta.Roles == roles && slices.Equal(meta.Voters, voters) && meta.Term == term {
		return
	}
	meta.Roles, meta.Voters, meta.Term = roles, voters, term
	if err := a.gossip.UpdateMeta(meta, 5*time.Second); err != nil {
		a.logger.Warn("could not gossip raft roles", "subsystem", "raft", "error", err)
	}
}

// tryBootstrapExpect forms one cluster out of nodes started together with
// --bootstrap-expect N. A single node decides: the lowest node ID among the
// first N candidates, once that candidate set has held still for
// bootstrapStable (so a node still joining is not left out of one node's
// list and in another's). It bootstraps, then gossips the voter list; every
// other chosen node adopts exactly that list and bootstraps with it (Raft
// requires identical configurations), and everyone else waits to be
// promoted by the leader.
func (a *Agent) tryBootstrapExpect() {
	self := a.id.String()
	if list := a.gossipedVoters(); len(list) > 0 {
		if !slices.Contains(list, a.id) {
			return // not chosen: wait to be promoted
		}
		servers := make([]consensus.Server, 0, len(list))
		for _, id := range list {
			m, ok := a.memberByID(id.String())
			if !ok || m.Meta.RaftAddr == "" {
				// Gossip has not brought every chosen voter yet (under a
				// join storm that can take a push/pull interval).
				a.startRaftEmpty(len(list))
				return
			}
			servers = append(servers, consensus.Server{ID: id.String(), Address: m.Meta.RaftAddr, Voter: true})
		}
		a.bootstrapWith(servers)
		return
	}
	servers, ok, err := consensus.PlanBootstrap(self, a.consensusMembers(), a.cfg.BootstrapExpect)
	if err != nil {
		a.logger.Error("cannot bootstrap", "subsystem", "raft", "error", err)
		return
	}
	key := ""
	for _, s := range servers {
		key += s.ID + ","
	}
	if !ok || key != a.bootKey {
		a.bootKey, a.bootSince = key, time.Now()
		return
	}
	stable := max(3*a.cfg.RaftTick, 2*time.Second)
	held := time.Since(a.bootSince)
	switch {
	case held < stable:
	case servers[0].ID == self:
		a.bootstrapWith(servers)
	case held >= 2*stable && slices.ContainsFunc(servers, func(s consensus.Server) bool { return s.ID == self }):
		// Chosen by the same rule, but the voter list the deciding node
		// gossips after bootstrapping has not reached this node (a missed
		// broadcast waits for the next push/pull). Had this node's view
		// been wrong, it is in no configuration and retires (see orphaned).
		a.startRaftEmpty(len(servers))
	}
}

// startRaftEmpty starts Raft without a configuration on a node chosen as
// a bootstrap voter: it votes for the node that bootstrapped and receives
// the configuration from it as the first log entry.
func (a *Agent) startRaftEmpty(voters int) {
	if _, err := a.startRaft(); err != nil {
		a.logger.Error("cannot start raft for bootstrap", "subsystem", "raft", "error", err)
		return
	}
	a.logger.Info("chosen as a bootstrap voter; waiting for the configuration from the node that bootstrapped", "subsystem", "raft", "voters", voters)
}

func (a *Agent) bootstrapWith(servers []consensus.Server) {
	n, err := a.startRaft()
	if err != nil {
		a.logger.Error("cannot start raft for bootstrap", "subsystem", "raft", "error", err)
		return
	}
	if err := n.Bootstrap(servers); err != nil && !errors.Is(err, consensus.ErrExistingState) {
		a.logger.Error("bootstrap failed", "subsystem", "raft", "error", err)
		return
	}
	a.logger.Info("bootstrapped raft with the expected voters", "subsystem", "raft", "voters", len(servers))
}

// manageVoters applies the leader's voter plan, one step per tick.
func (a *Agent) manageVoters(n *consensus.Node) {
	servers, err := n.Servers()
	if err != nil {
		return
	}
	members := a.consensusMembers()
	inConfig := map[string]bool{}
	for _, s := range servers {
		inConfig[s.ID] = true
	}
	ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	defer cancel()
	// A node that still runs Raft but is not in the configuration (it was
	// removed while it was down) is told to stop first, whatever the plan
	// below does (a step that keeps failing must not keep it running).
	for _, m := range a.gossip.Members() {
		id := m.Meta.ID.String()
		if m.Status == gossip.StatusAlive && m.Meta.Roles&gossip.RoleVoter != 0 && !inConfig[id] && id != a.id.String() {
			if err := a.internalCall(ctx, m, "PUT", "/v1/internal/raft/disable"); err != nil {
				a.logger.Warn("could not retire a stale voter", "subsystem", "raft", "node", m.Name, "error", err)
			}
		}
	}
	actions := consensus.PlanVoters(servers, members, consensus.VoterPolicy{Voters: a.cfg.Voters, DeadVoterTimeout: a.cfg.DeadVoterTimeout, LeaderID: a.id.String()})
	for _, act := range actions {
		var err error
		switch act.Kind {
		case consensus.ActionAddVoter:
			err = a.promote(ctx, n, act.ID, act.Address)
		case consensus.ActionRemoveServer:
			err = n.RemoveServer(ctx, act.ID)
		}
		if err != nil {
			a.logger.Warn("voter change failed; will retry", "subsystem", "raft", "action", act.String(), "error", err)
			return
		}
		a.logger.Info("voter change", "subsystem", "raft", "action", act.String())
	}
}

// promote asks a member to start Raft, then adds it as a voter.
func (a *Agent) promote(ctx context.Context, n *consensus.Node, id, addr string) error {
	m, ok := a.memberByID(id)
	if !ok {
		return fmt.Errorf("member %s not in gossip", id)
	}
	if err := a.internalCall(ctx, m, "PUT", "/v1/internal/raft/enable"); err != nil {
		return err
	}
	return n.AddVoter(ctx, id, addr)
}

// internalCall sends one agent-to-agent API request.
func (a *Agent) internalCall(ctx context.Context, m gossip.Member, method, path string) error {
	c, err := NewClient(a.apiURL(m))
	if err != nil {
		return err
	}
	c.http = a.httpClient
	return c.Do(ctx, method, path, nil, nil)
}
