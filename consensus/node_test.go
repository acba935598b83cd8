package consensus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestSingleNodeBootstrapAndRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig("node-a", dir)
	n := startNode(t, cfg)
	if has, err := n.HasExistingState(); err != nil || has {
		t.Fatalf("fresh dir has state %v (%v)", has, err)
	}
	if err := n.BootstrapSelf(); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, n)
	setSetting(t, n, "cluster.name", "colony")
	idx := setSetting(t, n, "scaling/cooldown", "5m")
	_, res, err := n.Apply(ctxT(t), &DeleteSetting{Key: "nope"})
	if err != nil || res.(DeleteResult).Existed {
		t.Fatalf("delete missing key: %v %v", res, err)
	}
	if got := n.State().Index(); got != idx+1 {
		t.Fatalf("state index %d, want %d", got, idx+1)
	}
	wantSettings, wantIdx := n.State().Settings()
	wantIndex := n.State().Index()
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatalf("second shutdown: %v", err)
	}

	n2 := startNode(t, cfg)
	if err := n2.BootstrapSelf(); !errors.Is(err, ErrExistingState) {
		t.Fatalf("bootstrap over existing state: %v, want ErrExistingState", err)
	}
	waitLeader(t, n2)
	// Entries after the last snapshot are replayed once the node knows
	// they are committed, i.e. after it wins its election.
	waitFor(t, waitLong, func() error {
		if got := n2.State().Index(); got != wantIndex {
			return fmt.Errorf("state index %d, want %d", got, wantIndex)
		}
		return nil
	})
	got, gotIdx := n2.State().Settings()
	if !slices.Equal(got, wantSettings) || gotIdx != wantIdx {
		t.Fatalf("after restart: %v @%d, want %v @%d", got, gotIdx, wantSettings, wantIdx)
	}
}

func TestThreeNodes(t *testing.T) {
	var cfgs []Config
	for _, id := range []string{"a", "b", "c"} {
		cfgs = append(cfgs, testConfig(id, t.TempDir()))
	}
	nodes, leader := startCluster(t, cfgs...)
	waitFor(t, waitLong, func() error {
		for _, n := range nodes {
			if s, err := n.Servers(); err != nil || len(s) != 3 {
				return fmt.Errorf("%s sees servers %v (%v)", n.ID(), s, err)
			}
		}
		return nil
	})
	for i := range 5 {
		setSetting(t, leader, fmt.Sprintf("k%d", i), fmt.Sprint(i))
	}
	for _, n := range nodes {
		waitSetting(t, n, "k4", "4")
	}
	var follower *Node
	for _, n := range nodes {
		if n != leader {
			follower = n
		}
	}
	if _, _, err := follower.Apply(ctxT(t), &SetSetting{Key: "x", Value: "y"}); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("apply on follower: %v, want ErrNotLeader", err)
	}
	if err := follower.ReadBarrier(ctxT(t), ConsistencyDefault); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("default read on follower: %v", err)
	}
	if err := follower.ReadBarrier(ctxT(t), ConsistencyStale); err != nil {
		t.Fatalf("stale read on follower: %v", err)
	}
	if err := leader.ReadBarrier(ctxT(t), ConsistencyConsistent); err != nil {
		t.Fatalf("consistent read on leader: %v", err)
	}
	committed := setSetting(t, leader, "before-failover", "yes")

	// Kill the leader: the other two elect one of themselves and keep
	// every committed write.
	old := leader
	if err := old.Shutdown(); err != nil {
		t.Fatal(err)
	}
	var rest []*Node
	for _, n := range nodes {
		if n != old {
			rest = append(rest, n)
		}
	}
	leader = waitLeader(t, rest...)
	// A new leader holds every committed entry but may not have applied
	// them yet: read as the API does, after the read barrier.
	if err := leader.ReadBarrier(ctxT(t), ConsistencyConsistent); err != nil {
		t.Fatal(err)
	}
	if s, ok, _ := leader.State().Setting("before-failover"); !ok || s.ModifyIndex != committed {
		t.Fatalf("committed write lost on new leader: %+v %v", s, ok)
	}
	setSetting(t, leader, "after-failover", "yes")

	// The dead voter is removed by the new leader.
	if err := leader.RemoveServer(ctxT(t), old.ID()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitLong, func() error {
		for _, n := range rest {
			s, err := n.Servers()
			if err != nil || len(s) != 2 {
				return fmt.Errorf("%s sees servers %v (%v)", n.ID(), s, err)
			}
		}
		return nil
	})

	// The removed node comes back from its old data dir: it must not
	// disrupt the cluster (not in the configuration, so its vote requests
	// are rejected) and must not be re-added on its own.
	var oldCfg Config
	for _, c := range cfgs {
		if c.NodeID == old.ID() {
			oldCfg = c
		}
	}
	back := startNode(t, oldCfg)
	waitFor(t, waitLong, func() error {
		if st := back.RaftState().String(); st != "Candidate" {
			return fmt.Errorf("returning node is %s, waiting for it to campaign", st)
		}
		return nil
	})
	for i := range 5 {
		setSetting(t, leader, fmt.Sprintf("during-return-%d", i), "ok")
	}
	now := waitLeader(t, rest...)
	if now.ID() == old.ID() {
		t.Fatal("removed node became leader")
	}
	servers, err := now.Servers()
	if err != nil || len(servers) != 2 || slices.ContainsFunc(servers, func(s Server) bool { return s.ID == old.ID() }) {
		t.Fatalf("configuration after the removed node returned: %v (%v)", servers, err)
	}
	t.Logf("leader %s before, %s after the removed node returned", leader.ID(), now.ID())
}

func TestSnapshotRestoreAndCatchUp(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig("snap-a", dir)
	cfg.TrailingLogs = 2
	n := startNode(t, cfg)
	if err := n.BootstrapSelf(); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, n)
	for i := range 20 {
		setSetting(t, n, fmt.Sprintf("s%02d", i), fmt.Sprint(i))
	}
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := 20; i < 23; i++ {
		setSetting(t, n, fmt.Sprintf("s%02d", i), fmt.Sprint(i))
	}
	snaps, _ := filepath.Glob(filepath.Join(dir, "raft", "snapshots", "*", "meta.json"))
	if len(snaps) == 0 {
		t.Fatal("no snapshot on disk")
	}

	// A fresh voter gets the state by snapshot install (the log before the
	// snapshot is gone), then the tail by replication.
	fresh := startNode(t, testConfig("snap-b", t.TempDir()))
	if err := n.AddVoter(ctxT(t), fresh.ID(), fresh.Addr()); err != nil {
		t.Fatal(err)
	}
	waitSetting(t, fresh, "s22", "22")
	waitSetting(t, fresh, "s00", "0")

	want, wantIdx := n.State().Settings()
	wantIndex := n.State().Index()
	_ = fresh.Shutdown()
	_ = n.Shutdown()

	// Restart alone (the second voter is gone: recover to a single voter
	// so the node can elect itself) and check nothing was lost.
	if err := Recover(cfg, []Server{{ID: cfg.NodeID, Address: "127.0.0.1:1", Voter: true}}); err != nil {
		t.Fatal(err)
	}
	n2 := startNode(t, cfg)
	waitLeader(t, n2)
	waitFor(t, waitLong, func() error {
		if got := n2.State().Index(); got != wantIndex {
			return fmt.Errorf("index %d, want %d", got, wantIndex)
		}
		return nil
	})
	got, gotIdx := n2.State().Settings()
	if !slices.Equal(got, want) || gotIdx != wantIdx || len(got) != 23 {
		t.Fatalf("after restart: %d settings @%d, want %d @%d", len(got), gotIdx, len(want), wantIdx)
	}
}

func TestQuorumLossRecovery(t *testing.T) {
	var cfgs []Config
	for _, id := range []string{"r1", "r2", "r3"} {
		cfgs = append(cfgs, testConfig(id, t.TempDir()))
	}
	nodes, leader := startCluster(t, cfgs...)
	setSetting(t, leader, "survives", "yes")
	for _, n := range nodes {
		waitSetting(t, n, "survives", "yes")
	}
	for _, n := range nodes {
		_ = n.Shutdown()
	}

	servers, err := ReadServers(cfgs[0].DataDir)
	if err != nil || len(servers) != 3 {
		t.Fatalf("ReadServers: %v (%v)", servers, err)
	}

	// Two of three voters are lost for good. The survivor alone has no
	// quorum: it must not become leader.
	alone := startNode(t, cfgs[0])
	waitFor(t, waitLong, func() error {
		if st := alone.RaftState().String(); st != "Candidate" {
			return fmt.Errorf("survivor is %s, waiting for it to campaign", st)
		}
		return nil
	})
	if alone.IsLeader() {
		t.Fatal("a single survivor of three voters became leader")
	}
	q := CheckQuorum(servers, []Member{{ID: "r1", Status: MemberAlive}, {ID: "r2", Status: MemberDead}, {ID: "r3", Status: MemberDead}})
	if !errors.Is(q.Err(), ErrQuorumLost) {
		t.Fatalf("CheckQuorum: %+v", q)
	}
	_ = alone.Shutdown()

	// Recovery through the peers file: the survivor becomes the only voter.
	if err := WritePeersFile(cfgs[0].DataDir, []Server{{ID: "r1", Address: "127.0.0.1:1", Voter: true}}); err != nil {
		t.Fatal(err)
	}
	rec := startNode(t, cfgs[0])
	waitLeader(t, rec)
	waitSetting(t, rec, "survives", "yes")
	setSetting(t, rec, "after-recovery", "yes")
	if _, err := os.Stat(filepath.Join(cfgs[0].DataDir, "raft", PeersFileName+".applied")); err != nil {
		t.Fatalf("peers file not marked applied: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	cfg := DefaultConfig()
	if err := cfg.Validate(); err == nil {
		t.Fatal("missing node ID and data dir accepted")
	}
	cfg = testConfig("x", t.TempDir())
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.LeaderLeaseTimeout = cfg.HeartbeatTimeout * 2
	if err := cfg.Validate(); err == nil {
		t.Fatal("lease above heartbeat accepted")
	}
	cfg = testConfig("x", t.TempDir())
	cfg.BindAddr = "0.0.0.0:0"
	if _, err := New(cfg); err == nil {
		t.Fatal("unspecified bind without advertise accepted")
	}
	cfg.AdvertiseAddr = "127.0.0.1:0"
	n := startNode(t, cfg)
	if _, port, _ := netSplit(n.Addr()); port == "0" {
		t.Fatalf("advertised port 0: %s", n.Addr())
	}
}

// TestTransferLeadership: a leader hands over to another voter; with a
// context already ended it starts no transfer and returns at once.
func TestTransferLeadership(t *testing.T) {
	nodes, old := startCluster(t, testConfig("a", t.TempDir()), testConfig("b", t.TempDir()), testConfig("c", t.TempDir()))
	if err := old.TransferLeadership(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitLong, func() error {
		if l := waitLeader(t, nodes...); l == old {
			return fmt.Errorf("%s still leads", old.ID())
		}
		return nil
	})
	leader := waitLeader(t, nodes...)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := leader.TransferLeadership(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("transfer with an ended context: %v", err)
	}
	if err := leader.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := old.TransferLeadership(ctxT(t)); err != nil {
		t.Fatalf("transfer on a node that does not lead: %v", err)
	}
}
