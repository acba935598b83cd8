package gossip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/memberlist"
)

// waitFor polls cond until it returns nil or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %s: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fastTimers keeps failure detection quick on loopback while leaving room
// for a loaded 2-core machine.
func fastTimers(c *memberlist.Config) {
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.GossipInterval = 50 * time.Millisecond
	c.SuspicionMult = 3
	c.PushPullInterval = 2 * time.Second
}

func newNode(t *testing.T, name string, id uuid.UUID, key []byte) *Gossip {
	t.Helper()
	cfg := DefaultConfig()
	cfg.NodeName = name
	cfg.BindAddr = "127.0.0.1"
	cfg.BindPort = 0
	cfg.Profile = ProfileLocal
	cfg.CompactMeta = compactMode
	cfg.SecretKey = key
	cfg.Meta = Meta{ID: id, CPUs: 1, OS: "linux", Labels: map[string]string{"zone": "z1"}}
	cfg.Tune = fastTimers
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Shutdown() })
	return g
}

func addr(g *Gossip) string {
	ip, port := g.LocalAddr()
	return fmt.Sprintf("%s:%d", ip, port)
}

func statuses(g *Gossip) map[string]Status {
	out := map[string]Status{}
	for _, m := range g.Members() {
		out[m.Name] = m.Status
	}
	return out
}

func expect(g *Gossip, want map[string]Status) error {
	got := statuses(g)
	for n, s := range want {
		if st, ok := got[n]; !ok || st != s {
			return fmt.Errorf("%s sees %s as %v, want %v (all: %v)", g.LocalName(), n, got[n], s, got)
		}
	}
	return nil
}

func quickRetry() RetryPolicy {
	return RetryPolicy{Interval: 50 * time.Millisecond, MaxInterval: 100 * time.Millisecond, Max: 3}
}

func TestClusterAliveLeftDead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := newNode(t, "a", uuid.New(), nil)
	b := newNode(t, "b", uuid.New(), nil)
	c := newNode(t, "c", uuid.New(), nil)
	for _, g := range []*Gossip{b, c} {
		if _, err := g.Join(ctx, []string{addr(a)}, quickRetry()); err != nil {
			t.Fatal(err)
		}
	}
	all := map[string]Status{"a": StatusAlive, "b": StatusAlive, "c": StatusAlive}
	for _, g := range []*Gossip{a, b, c} {
		waitFor(t, 10*time.Second, func() error { return expect(g, all) })
	}
	for _, m := range c.Members() {
		if m.Meta.Labels["zone"] != "z1" || m.Meta.ID == uuid.Nil {
			t.Fatalf("metadata not carried: %+v", m)
		}
	}
	if err := b.Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	_ = b.Shutdown()
	for _, g := range []*Gossip{a, c} {
		waitFor(t, 10*time.Second, func() error { return expect(g, map[string]Status{"b": StatusLeft}) })
	}
	_ = c.Shutdown()
	waitFor(t, 20*time.Second, func() error { return expect(a, map[string]Status{"c": StatusDead, "b": StatusLeft, "a": StatusAlive}) })
	if st := a.Stats(); st.Probes == 0 || st.UDPBytesSent == 0 || st.UDPBytesReceived == 0 || st.TCPBytesReceived == 0 || st.TCPBytesSent == 0 {
		t.Errorf("gossip counters not routed: %+v", a.Stats())
	}
}

func TestDuplicateIDRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := uuid.New()
	a := newNode(t, "orig", id, nil)
	clone := newNode(t, "clone", id, nil)
	_, err := clone.Join(ctx, []string{addr(a)}, quickRetry())
	if !errors.Is(err, ErrDuplicateID) {
		t.Fatalf("want ErrDuplicateID, got %v", err)
	}
	if _, ok := statuses(a)["clone"]; ok {
		t.Fatal("the clone entered the original's member list")
	}
}

func TestDuplicateNameRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := newNode(t, "same", uuid.New(), nil)
	b := newNode(t, "same", uuid.New(), nil)
	_, err := b.Join(ctx, []string{addr(a)}, quickRetry())
	if !errors.Is(err, ErrDuplicateName) {
		t.Fatalf("want ErrDuplicateName, got %v", err)
	}
}

func TestEncryptionMismatchDoesNotMerge(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k1 := []byte("0123456789abcdef0123456789abcdef")
	k2 := []byte("fedcba9876543210fedcba9876543210")
	a := newNode(t, "a", uuid.New(), k1)
	b := newNode(t, "b", uuid.New(), k2)
	plain := newNode(t, "plain", uuid.New(), nil)
	if _, err := b.Join(ctx, []string{addr(a)}, quickRetry()); !errors.Is(err, ErrJoinFailed) {
		t.Fatalf("mismatched key joined: %v", err)
	}
	if _, err := plain.Join(ctx, []string{addr(a)}, quickRetry()); !errors.Is(err, ErrJoinFailed) {
		t.Fatalf("unencrypted node joined an encrypted cluster: %v", err)
	}
	c := newNode(t, "c", uuid.New(), k1)
	if _, err := c.Join(ctx, []string{addr(a)}, quickRetry()); err != nil {
		t.Fatalf("same key failed to join: %v", err)
	}
	waitFor(t, 10*time.Second, func() error { return expect(a, map[string]Status{"c": StatusAlive}) })
	if len(a.Members()) != 2 {
		t.Fatalf("a sees %v", statuses(a))
	}
}

func TestJoinUnreachableAndUnresolvable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := newNode(t, "a", uuid.New(), nil)
	for _, target := range []string{"127.0.0.1:1", "no-such-host.invalid:7946"} {
		_, err := a.Join(ctx, []string{target}, quickRetry())
		if !errors.Is(err, ErrJoinFailed) || !strings.Contains(err.Error(), "3 attempts") {
			t.Fatalf("%s: want ErrJoinFailed after 3 attempts, got %v", target, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	c.BindAddr = "not-an-ip"
	c.SecretKey = []byte("short")
	c.Profile = "fast"
	err := c.Validate()
	for _, want := range []string{"node name is empty", "not an IP", "must be 16, 24 or 32", "unknown gossip profile"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validate: want %q in %v", want, err)
		}
	}
}

// rawDelegate gives a bare memberlist node whatever metadata a test wants.
type rawDelegate struct{ meta []byte }

func (d rawDelegate) NodeMeta(int) []byte           { return d.meta }
func (rawDelegate) NotifyMsg([]byte)                {}
func (rawDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (rawDelegate) LocalState(bool) []byte          { return nil }
func (rawDelegate) MergeRemoteState([]byte, bool)   {}

// TestGarbageMetadataRejected: a peer gossiping undecodable metadata never
// enters the member list, is counted, and nothing crashes.
func TestGarbageMetadataRejected(t *testing.T) {
	a := newNode(t, "a", uuid.New(), nil)
	for i, garbage := range [][]byte{{0xff, 0x00}, {1, 2, 3}, []byte("not metadata at all")} {
		mc := memberlist.DefaultLocalConfig()
		mc.Name = fmt.Sprintf("evil-%d", i)
		mc.BindAddr = "127.0.0.1"
		mc.BindPort = 0
		mc.Delegate = rawDelegate{meta: garbage}
		mc.LogOutput = io.Discard
		fastTimers(mc)
		evil, err := memberlist.Create(mc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = evil.Shutdown() })
		_, _ = evil.Join([]string{addr(a)})
	}
	waitFor(t, 10*time.Second, func() error {
		if a.Stats().RejectedNodes < 3 {
			return fmt.Errorf("rejected %d nodes, want at least 3", a.Stats().RejectedNodes)
		}
		return nil
	})
	for _, m := range a.Members() {
		if strings.HasPrefix(m.Name, "evil") {
			t.Fatalf("node with garbage metadata listed: %+v", m)
		}
	}
}

// partition cuts the network between two groups of nodes by address.
type partition struct {
	mu  sync.Mutex
	cut map[[2]string]bool
}

func (p *partition) dropFrom(self *string) func(string) bool {
	return func(to string) bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.cut[[2]string{*self, to}]
	}
}

func (p *partition) split(left, right []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = map[[2]string]bool{}
	for _, l := range left {
		for _, r := range right {
			p.cut[[2]string{l, r}] = true
			p.cut[[2]string{r, l}] = true
		}
	}
}

func (p *partition) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = nil
}

// TestPartitionHeals: both sides of a partition declare the other dead,
// and once it heals the reconnect loop merges them again.
func TestPartitionHeals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := &partition{}
	names := []string{"a", "b", "c"}
	addrs := make([]string, 3)
	var nodes []*Gossip
	for i, n := range names {
		cfg := DefaultConfig()
		cfg.NodeName = n
		cfg.BindAddr = "127.0.0.1"
		cfg.BindPort = 0
		cfg.Profile = ProfileLocal
		cfg.CompactMeta = compactMode
		cfg.Meta = Meta{ID: uuid.New()}
		cfg.Tune = func(c *memberlist.Config) {
			fastTimers(c)
			c.GossipToTheDeadTime = 500 * time.Millisecond
		}
		cfg.ReconnectInterval = 300 * time.Millisecond
		cfg.DropTo = p.dropFrom(&addrs[i])
		g, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.Shutdown() })
		addrs[i] = addr(g)
		nodes = append(nodes, g)
	}
	for _, g := range nodes[1:] {
		if _, err := g.Join(ctx, []string{addrs[0]}, quickRetry()); err != nil {
			t.Fatal(err)
		}
	}
	all := map[string]Status{"a": StatusAlive, "b": StatusAlive, "c": StatusAlive}
	for _, g := range nodes {
		waitFor(t, 10*time.Second, func() error { return expect(g, all) })
	}
	p.split(addrs[:2], addrs[2:])
	waitFor(t, 20*time.Second, func() error { return expect(nodes[0], map[string]Status{"c": StatusDead}) })
	waitFor(t, 20*time.Second, func() error { return expect(nodes[2], map[string]Status{"a": StatusDead, "b": StatusDead}) })
	// Long enough apart that memberlist has stopped gossiping to the dead.
	p.heal()
	for _, g := range nodes {
		waitFor(t, 20*time.Second, func() error { return expect(g, all) })
	}
}

// TestDeadNodeReturnsAtNewAddress: a node declared dead that comes back at
// another address (a restarted container with a new IP) is accepted at once.
func TestDeadNodeReturnsAtNewAddress(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := newNode(t, "a", uuid.New(), nil)
	id := uuid.New()
	b := newNode(t, "b", id, nil)
	if _, err := b.Join(ctx, []string{addr(a)}, quickRetry()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error { return expect(a, map[string]Status{"b": StatusAlive}) })
	old := addr(b)
	_ = b.Shutdown()
	waitFor(t, 20*time.Second, func() error { return expect(a, map[string]Status{"b": StatusDead}) })
	b2 := newNode(t, "b", id, nil) // same name and ID, new port
	if addr(b2) == old {
		t.Skip("the kernel gave the same port back")
	}
	if _, err := b2.Join(ctx, []string{addr(a)}, quickRetry()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() error {
		for _, m := range a.Members() {
			if m.Name == "b" && m.Status == StatusAlive && m.Address() == addr(b2) {
				return nil
			}
		}
		return fmt.Errorf("a sees %v", a.Members())
	})
}
