package consensus

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"
)

// waitFor polls cond until it returns nil or the timeout passes. Timeouts
// are generous: the test machine is small and shared.
func waitFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", timeout, err)
		}
		<-tick.C
	}
}

func testLogger() *slog.Logger {
	if os.Getenv("COLONY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testConfig shortens the timers for loopback but keeps them long enough
// that a loaded 2-core machine does not flap leaders.
func testConfig(id, dir string) Config {
	cfg := DefaultConfig()
	cfg.NodeID = id
	cfg.DataDir = dir
	cfg.BindAddr = "127.0.0.1:0"
	cfg.HeartbeatTimeout = 500 * time.Millisecond
	cfg.ElectionTimeout = 500 * time.Millisecond
	cfg.LeaderLeaseTimeout = 250 * time.Millisecond
	cfg.CommitTimeout = 10 * time.Millisecond
	cfg.TransportTimeout = 2 * time.Second
	cfg.Logger = testLogger()
	return cfg
}

const waitLong = 20 * time.Second

func startNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("new node %s: %v", cfg.NodeID, err)
	}
	t.Cleanup(func() { _ = n.Shutdown() })
	return n
}

// startCluster starts a node per config, bootstraps the first, adds the
// others as voters and returns the nodes and their leader once all agree.
func startCluster(t *testing.T, cfgs ...Config) ([]*Node, *Node) {
	t.Helper()
	var nodes []*Node
	for _, cfg := range cfgs {
		nodes = append(nodes, startNode(t, cfg))
	}
	if err := nodes[0].BootstrapSelf(); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, nodes[0])
	for _, n := range nodes[1:] {
		if err := nodes[0].AddVoter(ctxT(t), n.ID(), n.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	return nodes, waitLeader(t, nodes...)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	t.Cleanup(cancel)
	return ctx
}

// waitLeader waits until every node in nodes names the same leader, which
// is one of them, and returns it.
func waitLeader(t *testing.T, nodes ...*Node) *Node {
	t.Helper()
	var leader *Node
	waitFor(t, waitLong, func() error {
		leader = nil
		var id string
		for i, n := range nodes {
			lid, _ := n.Leader()
			if lid == "" {
				return fmt.Errorf("%s knows no leader", n.ID())
			}
			if i > 0 && lid != id {
				return fmt.Errorf("leaders disagree: %s vs %s", id, lid)
			}
			id = lid
		}
		for _, n := range nodes {
			if n.ID() == id && n.IsLeader() {
				leader = n
			}
		}
		if leader == nil {
			return fmt.Errorf("leader %s is not among the nodes or has not taken office", id)
		}
		return nil
	})
	return leader
}

func setSetting(t *testing.T, n *Node, k, v string) uint64 {
	t.Helper()
	idx, _, err := n.Apply(ctxT(t), &SetSetting{Key: k, Value: v})
	if err != nil {
		t.Fatalf("set %s on %s: %v", k, n.ID(), err)
	}
	return idx
}

func waitSetting(t *testing.T, n *Node, k, want string) {
	t.Helper()
	waitFor(t, waitLong, func() error {
		s, ok, _ := n.State().Setting(k)
		if !ok || s.Value != want {
			return fmt.Errorf("%s: setting %s = %q (present %v), want %q", n.ID(), k, s.Value, ok, want)
		}
		return nil
	})
}

func netSplit(addr string) (string, string, error) { return net.SplitHostPort(addr) }
