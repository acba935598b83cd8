package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"colony/consensus"
	"colony/gossip"
	"colony/test/retry"
)

func fastGossip(c *memberlist.Config) {
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.GossipInterval = 50 * time.Millisecond
	c.SuspicionMult = 3
	c.PushPullInterval = 2 * time.Second
}

func testConfig(t *testing.T, name, dataDir string) Config {
	cfg := DefaultConfig()
	cfg.NodeName = name
	cfg.DataDir = dataDir
	cfg.BindAddr = "127.0.0.1"
	cfg.GossipPort = 0
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.GossipProfile = gossip.ProfileLocal
	cfg.RetryInterval = 50 * time.Millisecond
	cfg.RetryMax = 3
	cfg.LeaveTimeout = 2 * time.Second
	cfg.TuneGossip = fastGossip
	cfg.RaftPort = 0
	cfg.RaftTick = 100 * time.Millisecond
	cfg.DeadVoterTimeout = 2 * time.Second
	cfg.TuneRaft = fastRaft
	if os.Getenv("COLONY_TEST_LOG") != "" {
		// Agent logs on stderr, for diagnosing a failure: COLONY_TEST_LOG=1 go test -run X -v ./agent
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
	}
	return cfg
}

// fastRaft shortens Raft's timers for loopback tests, leaving room for a
// loaded 2-core machine.
func fastRaft(c *consensus.Config) {
	c.HeartbeatTimeout = 500 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.LeaderLeaseTimeout = 250 * time.Millisecond
}

// startAgent builds an agent through the same constructor the binary uses.
func startAgent(t *testing.T, cfg Config) *Agent {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Shutdown() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return a
}

func client(t *testing.T, a *Agent) *Client {
	c, err := NewClient(a.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// view is a node's member list as "name=status" strings, sorted.
func view(c *Client) (string, error) {
	ms, err := c.Members(context.Background())
	if err != nil {
		return "", err
	}
	var out []string
	for _, m := range ms {
		out = append(out, m.Name+"="+m.Status.String())
	}
	sort.Strings(out)
	return strings.Join(out, " "), nil
}

func allSee(t *testing.T, agents []*Agent, want string) {
	t.Helper()
	for _, a := range agents {
		c := client(t, a)
		retry.Until(t, 20*time.Second, func() error {
			got, err := view(c)
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("%s sees %q, want %q", a.Name(), got, want)
			}
			return nil
		})
	}
}

func TestClusterThroughAPI(t *testing.T) {
	seed := startAgent(t, testConfig(t, "a", t.TempDir()))
	var agents = []*Agent{seed}
	dirs := map[string]string{}
	for _, n := range []string{"b", "c"} {
		cfg := testConfig(t, n, t.TempDir())
		cfg.Join = []string{seed.GossipAddr()}
		cfg.Labels = map[string]string{"zone": "z-" + n}
		dirs[n] = cfg.DataDir
		agents = append(agents, startAgent(t, cfg))
	}
	allSee(t, agents, "a=alive b=alive c=alive")

	// Every node gives the same answer, capabilities and labels included.
	ms, err := client(t, agents[2]).Members(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Capabilities.CPUs == 0 || m.Capabilities.OS == "" || m.ID == "" || m.APIAddress == "" {
			t.Errorf("incomplete member: %+v", m)
		}
		if m.Name == "b" && m.Labels["zone"] != "z-b" {
			t.Errorf("label lost: %+v", m)
		}
	}

	// Graceful leave over the API: the others see "left".
	bID := agents[1].ID()
	if err := client(t, agents[1]).Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-agents[1].Done():
	case <-time.After(20 * time.Second):
		t.Fatal("agent did not stop after leave")
	}
	allSee(t, []*Agent{agents[0], agents[2]}, "a=alive b=left c=alive")

	// Restart b from its data dir with no join address: it rejoins from the
	// saved peers and keeps its ID.
	cfg := testConfig(t, "b", dirs["b"])
	b2 := startAgent(t, cfg)
	if b2.ID() != bID {
		t.Fatalf("ID changed across restart: %s -> %s", bID, b2.ID())
	}
	allSee(t, []*Agent{agents[0], b2, agents[2]}, "a=alive b=alive c=alive")

	// Crash c (no leave): the others see it dead.
	_ = agents[2].Shutdown()
	allSee(t, []*Agent{agents[0], b2}, "a=alive b=alive c=dead")
}

func TestCopiedDataDirRefused(t *testing.T) {
	seed := startAgent(t, testConfig(t, "orig", t.TempDir()))
	clone := t.TempDir()
	b, err := os.ReadFile(filepath.Join(seed.cfg.DataDir, nodeIDFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(clone, nodeIDFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, "copy", clone)
	cfg.Join = []string{seed.GossipAddr()}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	err = a.Start(context.Background())
	if !errors.Is(err, gossip.ErrDuplicateID) || !strings.Contains(err.Error(), filepath.Join(clone, nodeIDFile)) {
		t.Fatalf("want a duplicate-ID error naming the file to delete, got %v", err)
	}
	if got, _ := view(client(t, seed)); got != "orig=alive" {
		t.Fatalf("the copy entered the cluster: %s", got)
	}
}

func TestDataDirLocked(t *testing.T) {
	dir := t.TempDir()
	startAgent(t, testConfig(t, "a", dir))
	_, err := New(testConfig(t, "b", dir))
	if err == nil || !strings.Contains(err.Error(), "in use by another colony agent") {
		t.Fatalf("second agent on one data dir: %v", err)
	}
}

func TestJoinUnreachableFailsStart(t *testing.T) {
	cfg := testConfig(t, "a", t.TempDir())
	cfg.Join = []string{"127.0.0.1:1", "no-such-host.invalid"}
	cfg.RetryMax = 2
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	err = a.Start(context.Background())
	if !errors.Is(err, gossip.ErrJoinFailed) || !strings.Contains(err.Error(), "2 attempts") {
		t.Fatalf("want join failure after 2 attempts, got %v", err)
	}
}

func TestRetryJoinGivesUpAndStops(t *testing.T) {
	cfg := testConfig(t, "a", t.TempDir())
	cfg.RetryJoin = []string{"127.0.0.1:1"}
	cfg.RetryMax = 2
	a := startAgent(t, cfg)
	select {
	case <-a.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("agent kept running after retry-join gave up")
	}
	if !errors.Is(a.Err(), gossip.ErrJoinFailed) {
		t.Fatalf("Err() = %v", a.Err())
	}
}

func TestConfigErrors(t *testing.T) {
	cfg := testConfig(t, "", "")
	cfg.GossipPort = 70000
	cfg.EncryptKey = "not base64!"
	cfg.RetryMax = -1
	cfg.HTTPAddr = "nonsense"
	cfg.Labels = map[string]string{"bad key": "v"}
	cfg.RaftMultiplier = 11
	err := cfg.Validate()
	for _, want := range []string{"node name is empty", "data dir is empty", "gossip port 70000", "not valid base64", "retry max", "http address", `label key "bad key"`, "raft multiplier (--raft-multiplier) 11: want 1-10"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
	if _, err := DecodeKey("c2hvcnQ="); err == nil || !strings.Contains(err.Error(), "16, 24 or 32") {
		t.Errorf("short key: %v", err)
	}
	if _, err := ParseLabels([]string{"zone=a", "novalue", "zone=b", "=x"}); err == nil ||
		!strings.Contains(err.Error(), `"novalue": want key=value`) || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("labels: %v", err)
	}
}

func TestOversizeLabelsRefusedAtStart(t *testing.T) {
	cfg := testConfig(t, "a", t.TempDir())
	cfg.Labels = map[string]string{}
	for i := 0; i < 12; i++ {
		cfg.Labels[fmt.Sprintf("label-%02d-%s", i, strings.Repeat("k", 20))] = strings.Repeat("v", 20)
	}
	_, err := New(cfg)
	if !errors.Is(err, gossip.ErrMetaTooLarge) {
		t.Fatalf("want ErrMetaTooLarge, got %v", err)
	}
}

func TestAPIBadInput(t *testing.T) {
	a := startAgent(t, testConfig(t, "a", t.TempDir()))
	base := "http://" + a.HTTPAddr()
	cases := []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"PUT", "/v1/agent/join", "{not json", 400, "invalid JSON"},
		{"PUT", "/v1/agent/join", "", 400, "body is empty"},
		{"PUT", "/v1/agent/join", `{"addresses":["x"],"extra":1}`, 400, "unknown field"},
		{"PUT", "/v1/agent/join", `{"addresses":[]}`, 400, "no addresses"},
		{"PUT", "/v1/agent/join", `{"addresses":"127.0.0.1"}`, 400, "invalid JSON"},
		{"PUT", "/v1/agent/join", `{"addresses":["a"]} {}`, 400, "unexpected data"},
		{"PUT", "/v1/agent/join", `{"addresses":["` + strings.Repeat("x", 2<<20) + `"]}`, 413, "over"},
		{"PUT", "/v1/agent/join", `{"addresses":["127.0.0.1:1"]}`, 502, "could not join"},
		{"GET", "/v1/members?status=sleepy", "", 400, "status filter"},
		{"POST", "/v1/members", "", 405, ""},
		{"GET", "/v1/nope", "", 404, "no such endpoint"},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, base+c.path, strings.NewReader(c.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code || !strings.Contains(string(b), c.want) {
			t.Errorf("%s %s %.40q: got %d %s, want %d containing %q", c.method, c.path, c.body, resp.StatusCode, b, c.code, c.want)
		}
	}
	// Still healthy after all that (once its one-node Raft has a leader).
	retry.Until(t, 20*time.Second, func() error {
		h, err := client(t, a).Health(context.Background())
		if err != nil || h.Status != "passing" || h.Leader != "a" || !h.Voter {
			return fmt.Errorf("health after bad input: %+v %v", h, err)
		}
		return nil
	})
}

func TestMetricsEndpoint(t *testing.T) {
	a := startAgent(t, testConfig(t, "a", t.TempDir()))
	retry.Until(t, 20*time.Second, func() error {
		resp, err := http.Get("http://" + a.HTTPAddr() + "/metrics")
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{`colony_gossip_members{status="alive"} 1`, "colony_gossip_probes_total", "colony_gossip_bytes_sent_total",
			"go_goroutines", "process_resident_memory_bytes", "colony_agent_info",
			`colony_raft_state{state="Leader"} 1`, "colony_raft_term", "colony_raft_commit_index", "colony_raft_voters 1", "colony_raft_leader_changes_total"} {
			if !strings.Contains(string(b), want) {
				return fmt.Errorf("/metrics lacks %q", want)
			}
		}
		return nil
	})
}

// TestJoinByDNSName: a join address may be a host name.
func TestJoinByDNSName(t *testing.T) {
	seed := startAgent(t, testConfig(t, "a", t.TempDir()))
	_, port, _ := strings.Cut(seed.GossipAddr(), ":")
	cfg := testConfig(t, "b", t.TempDir())
	cfg.Join = []string{"localhost:" + port}
	b := startAgent(t, cfg)
	allSee(t, []*Agent{seed, b}, "a=alive b=alive")
}

// TestAdvertiseChoice: binding to all interfaces picks the only private
// address, or refuses with a hint listing the candidates.
func TestAdvertiseChoice(t *testing.T) {
	got, err := gossip.ChooseAdvertise("0.0.0.0", "")
	switch {
	case err == nil:
		if got == "" || got == "0.0.0.0" {
			t.Fatalf("chose %q", got)
		}
	case errors.Is(err, gossip.ErrAmbiguousAdvertise):
		if !strings.Contains(err.Error(), "--advertise") {
			t.Fatalf("no hint in %v", err)
		}
		cfg := testConfig(t, "a", t.TempDir())
		cfg.BindAddr = "0.0.0.0"
		cfg.HTTPAddr = "127.0.0.1:0"
		if _, err := New(cfg); !errors.Is(err, gossip.ErrAmbiguousAdvertise) {
			t.Fatalf("agent on an ambiguous host: %v", err)
		}
	default:
		t.Fatal(err)
	}
	if got, _ := gossip.ChooseAdvertise("127.0.0.5", ""); got != "127.0.0.5" {
		t.Fatalf("specific bind address not used: %q", got)
	}
	if _, err := gossip.ResolveIP(`{{ GetPrivateInterfaces | include "name" "no-such-nic" | attr "address" }}`, "advertise address"); err == nil {
		t.Fatal("template matching nothing accepted")
	}
	if ip, err := gossip.ResolveIP(`{{ "127.0.0.9" }}`, "bind address"); err != nil || ip != "127.0.0.9" {
		t.Fatalf("template: %q %v", ip, err)
	}
}
