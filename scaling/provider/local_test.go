package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"colony/test/harness"
	"colony/test/retry"
)

// Addresses for this file's agents: 127.0.93.0/24 is used by no other test.
const (
	localSeedIP = "127.0.93.1"
	localPool   = "127.0.93.10-127.0.93.40"
)

func localTestConfig(t *testing.T, baseDir string) LocalConfig {
	cfg := DefaultLocalConfig()
	cfg.Binary = harness.Binary(t)
	cfg.BaseDir = baseDir
	cfg.IPs = []string{localPool}
	cfg.Args = []string{"--gossip-profile", "local"}
	cfg.StartTimeout = time.Minute
	cfg.Types = []InstanceType{
		{Name: "small", Profile: Profile{CPUs: 1, MemoryMiB: 512, Labels: map[string]string{"size": "small"}}, CostPerHour: 0.01},
		{Name: "gpu", Profile: Profile{CPUs: 2, MemoryMiB: 2048, Labels: map[string]string{"gpu": "true"}}, CostPerHour: 1, Reserved: []string{"gpu"}},
	}
	return cfg
}

// cleanupLocal terminates (or, failing that, kills) everything launched
// under baseDir: launched agents are detached and would outlive the test.
func cleanupLocal(t *testing.T, baseDir string) {
	t.Cleanup(func() {
		cfg := localTestConfig(t, baseDir)
		cfg.GracePeriod = 5 * time.Second
		p, err := NewLocal(cfg)
		if err != nil {
			t.Error(err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		insts, _ := p.List(ctx)
		if err := p.Terminate(ctx, ids(insts)); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		recs, _ := p.records()
		for _, r := range recs {
			if procAlive(r.PID, r.StartTicks) {
				t.Errorf("cleanup: %s (pid %d) still alive: killing", r.ID, r.PID)
				_ = syscall.Kill(r.PID, syscall.SIGKILL)
			}
		}
	})
}

type member struct {
	Name   string            `json:"name"`
	Status string            `json:"status"`
	Labels map[string]string `json:"labels"`
}

func members(t *testing.T, httpAddr string) (map[string]member, error) {
	var ms []member
	if err := harness.CLIJSON(t, &ms, "members", "--format", "json", "--http-addr", httpAddr); err != nil {
		return nil, err
	}
	out := map[string]member{}
	for _, m := range ms {
		out[m.Name] = m
	}
	return out, nil
}

// waitMembers waits until the seed lists every name in status.
func waitMembers(t *testing.T, seedHTTP, status string, names ...string) {
	t.Helper()
	retry.Until(t, 90*time.Second, func() error {
		ms, err := members(t, seedHTTP)
		if err != nil {
			return err
		}
		for _, n := range names {
			if ms[n].Status != status {
				return fmt.Errorf("%s is %q, want %q (members: %v)", n, ms[n].Status, status, ms)
			}
		}
		return nil
	})
}

func TestLocalEndToEnd(t *testing.T) {
	ctx := testCtx(t)
	base := t.TempDir()
	cleanupLocal(t, base)
	seed := harness.Start(t, "seed", localSeedIP, filepath.Join(t.TempDir(), "seed"))
	retry.Until(t, time.Minute, func() error { _, err := members(t, seed.HTTPAddr()); return err })

	p, err := NewLocal(localTestConfig(t, base))
	if err != nil {
		t.Fatal(err)
	}
	types, _ := p.InstanceTypes(ctx)
	typ, err := ChooseType(types, Requirements{CPUMillis: 500})
	if err != nil || typ.Name != "small" {
		t.Fatalf("chose %q, %v", typ.Name, err)
	}

	req := LaunchRequest{IdempotencyKey: "intent-a", Type: typ.Name, Count: 2, JoinAddr: seed.GossipAddr(), Labels: map[string]string{"pool": "web"}}
	start := time.Now()
	insts, err := p.Launch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(insts) != 2 || insts[0].Addr == insts[1].Addr {
		t.Fatalf("launched %+v", insts)
	}
	names := ids(insts)
	waitMembers(t, seed.HTTPAddr(), "alive", names...)
	t.Logf("launch of 2 local agents until both are alive members of the seed: %s", time.Since(start).Round(time.Millisecond))
	ms, _ := members(t, seed.HTTPAddr())
	for _, n := range names {
		if ms[n].Labels["size"] != "small" || ms[n].Labels["pool"] != "web" {
			t.Errorf("%s gossips labels %v, want the type's and the request's", n, ms[n].Labels)
		}
	}

	// The same key again: nothing new.
	again, err := p.Launch(ctx, req)
	if err != nil || !slices.Equal(ids(again), names) {
		t.Fatalf("repeated launch: %v, %v; want %v", ids(again), err, names)
	}

	// A new leader builds a new provider on the same base dir.
	p2, err := NewLocal(localTestConfig(t, base))
	if err != nil {
		t.Fatal(err)
	}
	l1, _ := p.List(ctx)
	l2, err := p2.List(ctx)
	if err != nil || !slices.Equal(ids(l1), ids(l2)) || len(l2) != 2 || l2[0].State != StateRunning || l2[0].IdempotencyKey != "intent-a" {
		t.Fatalf("lists differ: %+v vs %+v (%v)", l1, l2, err)
	}

	// Two providers race on one new key: one agent.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, pr := range []*Local{p, p2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = pr.Launch(ctx, LaunchRequest{IdempotencyKey: "intent-b", Type: "small", Count: 1, JoinAddr: seed.GossipAddr()})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	all, _ := p2.List(ctx)
	if b := WithKey(all, "intent-b"); len(b) != 1 || len(all) != 3 {
		t.Fatalf("racing launches: %+v", all)
	}

	// Terminate through the new provider: a graceful leave.
	start = time.Now()
	if err := p2.Terminate(ctx, names); err != nil {
		t.Fatal(err)
	}
	t.Logf("terminate of 2 agents (SIGTERM, graceful leave): %s", time.Since(start).Round(time.Millisecond))
	waitMembers(t, seed.HTTPAddr(), "left", names...)
	if err := p.Terminate(ctx, append(names, "local-0000000000-0", "not-ours")); err != nil {
		t.Fatalf("terminating gone instances: %v", err)
	}
	all, _ = p.List(ctx)
	for _, in := range WithKey(all, "intent-a") {
		if in.State != StateTerminated {
			t.Errorf("%s is %s after terminate", in.ID, in.State)
		}
		if _, err := os.Stat(filepath.Join(base, in.ID, "data")); !os.IsNotExist(err) {
			t.Errorf("%s: data dir not removed: %v", in.ID, err)
		}
	}
	// A launch that was done and scaled down does not come back.
	if got, err := p.Launch(ctx, req); err != nil || len(got) != 2 || got[0].Live() {
		t.Fatalf("relaunch of a terminated intent: %+v, %v", got, err)
	}

	if _, err := p.Launch(ctx, LaunchRequest{IdempotencyKey: "x", Type: "huge", Count: 1}); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("unknown type: %v", err)
	}
}

// The launching process exits (a leader dies or steps down): its agents
// keep running, and another provider sees and terminates them.
func TestLocalAgentsOutliveTheLauncher(t *testing.T) {
	if os.Getenv("LOCAL_PROVIDER_HELPER_BASE") != "" {
		return // running as the helper: see TestLocalHelperProcess
	}
	ctx := testCtx(t)
	base := t.TempDir()
	cleanupLocal(t, base)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestLocalHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "LOCAL_PROVIDER_HELPER_BASE="+base, "LOCAL_PROVIDER_HELPER_BIN="+harness.Binary(t))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	p, err := NewLocal(localTestConfig(t, base))
	if err != nil {
		t.Fatal(err)
	}
	all, err := p.List(ctx)
	if err != nil || len(all) != 1 || !all[0].Live() {
		t.Fatalf("after the launcher exited: %+v, %v\nhelper output:\n%s", all, err, out)
	}
	if err := p.Terminate(ctx, ids(all)); err != nil {
		t.Fatal(err)
	}
	if all, _ := p.List(ctx); all[0].Live() {
		t.Fatalf("still live after terminate: %+v", all[0])
	}
}

// TestLocalHelperProcess launches one agent (no seed: it starts alone)
// and exits; it does nothing unless run by TestLocalAgentsOutliveTheLauncher.
func TestLocalHelperProcess(t *testing.T) {
	base := os.Getenv("LOCAL_PROVIDER_HELPER_BASE")
	if base == "" {
		t.Skip("helper for TestLocalAgentsOutliveTheLauncher")
	}
	cfg := DefaultLocalConfig()
	cfg.Binary, cfg.BaseDir = os.Getenv("LOCAL_PROVIDER_HELPER_BIN"), base
	cfg.IPs = []string{"127.0.93.50-127.0.93.60"}
	cfg.Args = []string{"--gossip-profile", "local"}
	cfg.Types = []InstanceType{{Name: "small"}}
	p, err := NewLocal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	insts, err := p.Launch(testCtx(t), LaunchRequest{IdempotencyKey: "helper", Type: "small", Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(insts)
	t.Logf("launched %s", b)
}

func TestLocalFailedStartIsClearAndFreesTheSlot(t *testing.T) {
	ctx := testCtx(t)
	base := t.TempDir()
	cleanupLocal(t, base)
	cfg := localTestConfig(t, base)
	cfg.Args = []string{"--no-such-flag"}
	p, err := NewLocal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Launch(ctx, LaunchRequest{IdempotencyKey: "k", Type: "small", Count: 1})
	if err == nil || !strings.Contains(err.Error(), "exited at start") || !strings.Contains(err.Error(), "no-such-flag") {
		t.Fatalf("got %v", err)
	}
	if all, _ := p.List(ctx); len(all) != 0 {
		t.Fatalf("failed launch left %+v", all)
	}
}

func TestLocalConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*LocalConfig)
		want string
	}{
		{"no binary", func(c *LocalConfig) { c.Binary = "" }, "no binary"},
		{"no base dir", func(c *LocalConfig) { c.BaseDir = "" }, "no base_dir"},
		{"bad pool", func(c *LocalConfig) { c.IPs = []string{"127.0.0.9-127.0.0.1"} }, "not an ascending range"},
		{"bad ip", func(c *LocalConfig) { c.IPs = []string{"localhost"} }, "ip pool entry"},
		{"same ports", func(c *LocalConfig) { c.HTTPPort = c.GossipPort }, "same"},
		{"duplicate type", func(c *LocalConfig) { c.Types = append(c.Types, c.Types[0]) }, "listed twice"},
		{"no types", func(c *LocalConfig) { c.Types = nil }, "no instance types"},
		{"bad name", func(c *LocalConfig) { c.Name = "a/b" }, "name must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultLocalConfig()
			cfg.Binary, cfg.BaseDir = "/bin/true", t.TempDir()
			tc.mod(&cfg)
			err := cfg.Validate()
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	pool, err := parseIPPool([]string{"127.0.0.254-127.0.1.1", "10.0.0.1"})
	if err != nil || len(pool) != 5 || pool[2].String() != "127.0.1.0" {
		t.Fatalf("pool %v, %v", pool, err)
	}
}
