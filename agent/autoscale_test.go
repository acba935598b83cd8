package agent

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"colony/consensus"
	"colony/gossip"
	"colony/scaling/placement"
	"colony/scaling/provider"
	"colony/test/harness"
	"colony/test/retry"
)

func testTypes() []provider.InstanceType {
	return []provider.InstanceType{
		{Name: "small", Profile: provider.Profile{CPUs: 2, MemoryMiB: 2048, OS: "linux", Arch: "amd64"}, CostPerHour: 1},
		{Name: "big", Profile: provider.Profile{CPUs: 8, MemoryMiB: 16384, OS: "linux", Arch: "amd64"}, CostPerHour: 4},
		// Cheapest of all, but reserved: only for work that asks for a GPU.
		{Name: "gpu", Profile: provider.Profile{CPUs: 4, MemoryMiB: 8192, OS: "linux", Arch: "amd64", Labels: map[string]string{"gpu": "true"}}, CostPerHour: 0.5, Reserved: []string{"gpu"}},
	}
}

func spec(t *testing.T, y string) *placement.Spec {
	t.Helper()
	s, err := placement.ParseSpec([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestChooseLaunchHeterogeneous: the cheapest type whose profile the
// placement engine accepts; a GPU type only for work that requires it.
func TestChooseLaunchHeterogeneous(t *testing.T) {
	pools := map[string][]provider.InstanceType{"p1": testTypes()}
	cases := []struct {
		name, spec string
		pending    int
		wantType   string
		wantCount  int
	}{
		{"plain work never gets the reserved gpu type", "name: a\ncount: 5\ncommand: {argv: [sleep, '1']}\nresources: {cpu: '1'}\n", 5, "small", 3},
		{"gpu work gets the gpu type", "name: b\ncount: 2\ncommand: {argv: [sleep, '1']}\nresources: {cpu: '1'}\nconstraints: [{attribute: label.gpu, operator: '=', value: 'true'}]\n", 2, "gpu", 1},
		{"large asks get the big type", "name: c\ncount: 1\ncommand: {argv: [sleep, '1']}\nresources: {cpu: '6', memory: 4GiB}\n", 1, "big", 1},
		{"distinct hosts: one per node", "name: d\ncount: 3\ncommand: {argv: [sleep, '1']}\ndistinct_hosts: true\n", 3, "small", 3},
		{"non-label constraints go through the placement engine", "name: e\ncount: 1\ncommand: {argv: [sleep, '1']}\nconstraints: [{attribute: cpu.cores, operator: '>=', value: '6'}]\n", 1, "big", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pool, typ, n, err := chooseLaunch(spec(t, tc.spec), tc.pending, pools)
			if err != nil {
				t.Fatal(err)
			}
			if pool != "p1" || typ.Name != tc.wantType || n != tc.wantCount {
				t.Fatalf("got %s %s x%d, want p1 %s x%d", pool, typ.Name, n, tc.wantType, tc.wantCount)
			}
		})
	}
	_, _, _, err := chooseLaunch(spec(t, "name: f\ncount: 1\ncommand: {argv: [sleep, '1']}\nresources: {cpu: '64'}\n"), 1, pools)
	if !errors.Is(err, provider.ErrNoMatch) || !strings.Contains(err.Error(), "small") {
		t.Fatalf("impossible ask: %v", err)
	}
}

func TestPoolSpecValidation(t *testing.T) {
	_, err := PoolSpec{Provider: "cloud9", Min: 3, Max: 1, ScaleDownAfter: "soon"}.ToPool("p")
	if err == nil || !strings.Contains(err.Error(), "scale_down_after") {
		t.Fatalf("bad duration: %v", err)
	}
	_, err = PoolSpec{Provider: "cloud9", Min: 3, Max: 1}.ToPool("p")
	if err == nil || !strings.Contains(err.Error(), "provider") || !strings.Contains(err.Error(), "min 3 is greater than max 1") {
		t.Fatalf("bad pool: %v", err)
	}
}

// localPool is a pool definition on the local provider; launched agents
// use 127.0.<subnet>.x, clear of the in-process agents' addresses.
func localPool(t *testing.T, base string, subnet, maxNodes int, scaleDownAfter string) PoolSpec {
	return PoolSpec{
		Provider: "local",
		ProviderConfig: map[string]any{
			"binary": harness.Binary(t), "base_dir": base,
			"ips":  []any{fmt.Sprintf("127.0.%d.1-127.0.%d.50", subnet, subnet)},
			"args": []any{"--gossip-profile", "local"}, "grace_period": "5s", "start_timeout": "30s",
			"types": []any{
				map[string]any{"name": "small", "profile": map[string]any{"cpus": 2, "memory_mib": 1024}, "cost_per_hour": 1},
				map[string]any{"name": "gpu", "profile": map[string]any{"cpus": 2, "memory_mib": 1024, "labels": map[string]any{"gpu": "true"}}, "cost_per_hour": 0.5, "reserved": []any{"gpu"}},
			},
		},
		Min: 0, Max: maxNodes, ScaleUpCooldown: "0s", ScaleDownAfter: scaleDownAfter,
	}
}

// cleanupInstances terminates whatever a test's pool left running.
func cleanupInstances(t *testing.T, spec PoolSpec) {
	p, err := provider.New("local", spec.ProviderConfig, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		all, _ := p.List(ctx)
		var ids []string
		for _, in := range all {
			if in.Live() {
				ids = append(ids, in.ID)
			}
		}
		if len(ids) > 0 {
			_ = p.Terminate(ctx, ids)
		}
	})
}

func liveWithKey(t *testing.T, spec PoolSpec, key string) []provider.Instance {
	p, err := provider.New("local", spec.ProviderConfig, nil)
	if err != nil {
		t.Fatal(err)
	}
	all, err := p.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []provider.Instance
	for _, in := range provider.WithKey(all, key) {
		if in.Live() {
			out = append(out, in)
		}
	}
	return out
}

func getJSON[T any](t *testing.T, a *Agent, path string) T {
	t.Helper()
	var v T
	c, _ := NewClient(a.HTTPAddr())
	if err := c.Do(context.Background(), "GET", path, nil, &v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return v
}

// TestAutoscaleLocalEndToEnd grows a one-node cluster with the local
// provider for work no node can host (a GPU type for GPU work), runs the
// instance on the new node, then shrinks back once the work stops.
func TestAutoscaleLocalEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("launches agent processes")
	}
	c := newCluster(t, 200)
	n1 := c.start(1)
	c.agreeOnLeader(1, 30*time.Second)
	ps := localPool(t, t.TempDir(), 210, 2, "2s")
	cleanupInstances(t, ps)
	cl, _ := NewClient(n1.HTTPAddr())
	ctx := context.Background()

	// Invalid pools are refused with the reason.
	bad := ps
	bad.Types = []string{"nope"}
	if err := cl.Do(ctx, "PUT", "/v1/pools/p1", bad, nil); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("pool with an unknown type: %v", err)
	}
	bad = ps
	bad.Min, bad.Max = 3, 1
	if err := cl.Do(ctx, "PUT", "/v1/pools/p1", bad, nil); err == nil || !strings.Contains(err.Error(), "greater than max") {
		t.Fatalf("pool with min > max: %v", err)
	}
	if err := cl.Do(ctx, "PUT", "/v1/pools/p1", ps, nil); err != nil {
		t.Fatal(err)
	}

	deployed := time.Now()
	if code, body := putSpec(n1, `name: gpuwork
count: 1
command: {argv: ["sleep", "600"]}
resources: {cpu: "1"}
constraints: [{attribute: label.gpu, operator: "=", value: "true"}]
`); code != 200 {
		t.Fatalf("deploy: %d %s", code, body)
	}
	var launch consensus.Intent
	retry.Until(t, 30*time.Second, func() error {
		for _, in := range getJSON[[]consensus.Intent](t, n1, "/v1/intents") {
			if in.Kind == consensus.IntentLaunch {
				launch = in
				return nil
			}
		}
		return errors.New("no launch intent yet")
	})
	decided := launch.Created.Sub(deployed)
	if launch.Type != "gpu" || launch.Count != 1 || launch.Deployment != "gpuwork" {
		t.Fatalf("launch intent %+v: want 1 x gpu for gpuwork", launch)
	}
	var node string
	retry.Until(t, 90*time.Second, func() error {
		var is []InstanceInfo
		if err := cl.Do(ctx, "GET", "/v1/deployments/gpuwork/instances", nil, &is); err != nil {
			return err
		}
		if len(is) != 1 || is[0].Status == nil || is[0].Status.State != "running" {
			return fmt.Errorf("instances: %+v", is)
		}
		node = is[0].NodeName
		return nil
	})
	running := time.Since(deployed)
	if node == "n1" {
		t.Fatal("gpu work placed on n1, which has no gpu label")
	}
	intents := getJSON[[]consensus.Intent](t, n1, "/v1/intents")
	if len(intents) != 1 || intents[0].State != consensus.IntentDone || intents[0].InstanceIDs[0] != node {
		t.Fatalf("want exactly one done launch for %s: %+v", node, intents)
	}

	stopped := time.Now()
	if err := cl.Do(ctx, "DELETE", "/v1/deployments/gpuwork", nil, nil); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 60*time.Second, func() error {
		for _, in := range getJSON[[]consensus.Intent](t, n1, "/v1/intents") {
			if in.Kind == consensus.IntentTerminate && in.State == consensus.IntentDone && in.InstanceIDs[0] == node {
				return nil
			}
		}
		return errors.New("no finished terminate intent")
	})
	shrunk := time.Since(stopped)
	if live := liveWithKey(t, ps, launch.Key); len(live) != 0 {
		t.Fatalf("still live after scale-down: %+v", live)
	}
	evs := getJSON[[]consensus.Event](t, n1, "/v1/events")
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, e.Kind)
	}
	if got := strings.Join(kinds, ","); !strings.Contains(got, "scale-up,launched") || !strings.Contains(got, "scale-down,terminated") {
		t.Fatalf("events %s: %+v", got, evs)
	}
	t.Logf("decision %s after deploy; instance running on new node %s %s after deploy; scale-down done %s after the deployment stopped (scale_down_after 2s)",
		decided.Round(time.Millisecond), node, running.Round(time.Millisecond), shrunk.Round(time.Millisecond))
}

// TestAutoscaleLeaderKilledMidLaunch: the leader commits a launch intent
// and dies while the provider is launching; the new leader resumes the
// intent with the same key. The provider ends with exactly the intended
// instances (no double launch) and nothing live outside a done intent (no
// orphan).
func TestAutoscaleLeaderKilledMidLaunch(t *testing.T) {
	if testing.Short() {
		t.Skip("launches agent processes")
	}
	c := newCluster(t, 201)
	for i := 1; i <= 3; i++ {
		c.start(i)
	}
	leaderName := c.agreeOnLeader(3, 30*time.Second)
	leader := c.agent(leaderName)
	// Shared base_dir: any leader on this host sees the same instances.
	ps := localPool(t, filepath.Join(t.TempDir(), "pool"), 211, 3, "10m")
	cleanupInstances(t, ps)
	cl, _ := NewClient(leader.HTTPAddr())
	if err := cl.Do(context.Background(), "PUT", "/v1/pools/p1", ps, nil); err != nil {
		t.Fatal(err)
	}
	if code, body := putSpec(leader, `name: spread
count: 2
command: {argv: ["sleep", "600"]}
distinct_hosts: true
constraints: [{attribute: label.colony.pool, operator: "=", value: "p1"}]
`); code != 200 {
		t.Fatalf("deploy: %d %s", code, body)
	}
	var key string
	retry.Until(t, 30*time.Second, func() error {
		for _, in := range getJSON[[]consensus.Intent](t, leader, "/v1/intents") {
			if in.Kind == consensus.IntentLaunch && in.State == consensus.IntentOpen {
				key = in.Key
				return nil
			}
		}
		return errors.New("no open launch intent")
	})
	// Kill the leader while its launch is in flight.
	_ = leader.Shutdown()
	atKill := len(liveWithKey(t, ps, key))
	var survivor *Agent
	for _, a := range c.live() {
		survivor = a
	}
	c.agreeOnLeader(2, 60*time.Second, leaderName)
	var final consensus.Intent
	retry.Until(t, 120*time.Second, func() error {
		for _, in := range getJSON[[]consensus.Intent](t, survivor, "/v1/intents") {
			if in.Key == key && in.State != consensus.IntentOpen {
				final = in
				return nil
			}
		}
		return errors.New("intent still open")
	})
	live := liveWithKey(t, ps, key)
	switch final.State {
	case consensus.IntentDone:
		if len(live) != final.Count || len(final.InstanceIDs) != final.Count {
			t.Fatalf("done intent %+v, live instances %+v", final, live)
		}
	case consensus.IntentFailed:
		if len(live) != 0 {
			t.Fatalf("failed intent %+v left live instances %+v", final, live)
		}
	}
	seen := map[int]bool{}
	for _, in := range live {
		if seen[in.Index] {
			t.Fatalf("slot %d launched twice: %+v", in.Index, live)
		}
		seen[in.Index] = true
	}
	t.Logf("intent %s: %d live instances when the leader died, after the new leader: %s, %d live instances (%s)", key, atKill, final.State, len(live), final.Reason)
}

func intentsOf(t *testing.T, a *Agent, kind string) []consensus.Intent {
	var out []consensus.Intent
	for _, in := range getJSON[[]consensus.Intent](t, a, "/v1/intents") {
		if in.Kind == kind {
			out = append(out, in)
		}
	}
	return out
}

func hasEvent(t *testing.T, a *Agent, kind, substr string) error {
	for _, e := range getJSON[[]consensus.Event](t, a, "/v1/events") {
		if e.Kind == kind && strings.Contains(e.Message, substr) {
			return nil
		}
	}
	return fmt.Errorf("no %s event mentioning %q", kind, substr)
}

// TestAutoscaleMinMaxCooldown: min launches at once, max caps a launch
// (with an event saying so), launches are a cooldown apart, and scale-down
// stops at min.
func TestAutoscaleMinMaxCooldown(t *testing.T) {
	if testing.Short() {
		t.Skip("launches agent processes")
	}
	c := newCluster(t, 202)
	n1 := c.start(1)
	c.agreeOnLeader(1, 30*time.Second)
	ps := localPool(t, t.TempDir(), 212, 2, "1s")
	ps.Min, ps.ScaleUpCooldown = 1, "3s"
	cleanupInstances(t, ps)
	cl, _ := NewClient(n1.HTTPAddr())
	if err := cl.Do(context.Background(), "PUT", "/v1/pools/p1", ps, nil); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 60*time.Second, func() error {
		if ls := intentsOf(t, n1, consensus.IntentLaunch); len(ls) != 1 || ls[0].State != consensus.IntentDone {
			return fmt.Errorf("launches %+v", ls)
		}
		return hasEvent(t, n1, "scale-up", "below its min 1")
	})
	if code, body := putSpec(n1, `name: wide
count: 3
command: {argv: ["sleep", "600"]}
distinct_hosts: true
constraints: [{attribute: label.colony.pool, operator: "=", value: "p1"}]
`); code != 200 {
		t.Fatalf("deploy: %d %s", code, body)
	}
	retry.Until(t, 60*time.Second, func() error {
		ls := intentsOf(t, n1, consensus.IntentLaunch)
		if len(ls) != 2 || ls[1].State != consensus.IntentDone {
			return fmt.Errorf("launches %+v", ls)
		}
		return hasEvent(t, n1, "scale-up-blocked", "deployment wide")
	})
	ls := intentsOf(t, n1, consensus.IntentLaunch)
	if gap := ls[1].Created.Sub(ls[0].Created); gap < 3*time.Second {
		t.Fatalf("second launch %s after the first, cooldown is 3s", gap)
	}
	if ls[1].Count != 1 {
		t.Fatalf("max 2 with 1 node: the second launch must be capped to 1: %+v", ls[1])
	}
	// Stop the work: one node goes, the min stays.
	if err := cl.Do(context.Background(), "DELETE", "/v1/deployments/wide", nil, nil); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 60*time.Second, func() error {
		ts := intentsOf(t, n1, consensus.IntentTerminate)
		if len(ts) != 1 || ts[0].State != consensus.IntentDone {
			return fmt.Errorf("terminates %+v", ts)
		}
		return nil
	})
	// Until gossip sees the terminated node go, it still looks like a pool
	// member: it must not count toward the min (a second node would go).
	gone := intentsOf(t, n1, consensus.IntentTerminate)[0].InstanceIDs[0]
	retry.Until(t, 60*time.Second, func() error {
		for _, m := range n1.gossip.Members() {
			if m.Name == gone && m.Status == gossip.StatusAlive {
				return fmt.Errorf("%s still alive", gone)
			}
		}
		return nil
	})
	if ts := intentsOf(t, n1, consensus.IntentTerminate); len(ts) != 1 {
		t.Fatalf("scale-down below min: %+v", ts)
	}
}

// TestAutoscaleProviderErrors: a launch that fails (the agent binary
// refuses its flags) closes its intent as failed with the provider's
// reason in the event log, leaves nothing running and no open intent,
// and is tried again after a backoff.
func TestAutoscaleProviderErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("launches agent processes")
	}
	c := newCluster(t, 203)
	n1 := c.start(1)
	c.agreeOnLeader(1, 30*time.Second)
	ps := localPool(t, t.TempDir(), 213, 2, "10m")
	ps.ProviderConfig["args"] = []any{"--no-such-flag"}
	cleanupInstances(t, ps)
	cl, _ := NewClient(n1.HTTPAddr())
	if err := cl.Do(context.Background(), "PUT", "/v1/pools/p1", ps, nil); err != nil {
		t.Fatal(err)
	}
	if code, body := putSpec(n1, `name: w
count: 1
command: {argv: ["sleep", "600"]}
constraints: [{attribute: label.colony.pool, operator: "=", value: "p1"}]
`); code != 200 {
		t.Fatalf("deploy: %d %s", code, body)
	}
	retry.Until(t, 60*time.Second, func() error {
		var failed []consensus.Intent
		for _, in := range intentsOf(t, n1, consensus.IntentLaunch) {
			if in.State == consensus.IntentFailed {
				failed = append(failed, in)
			}
		}
		if len(failed) < 2 {
			return fmt.Errorf("%d failed launches, want 2 (a retry after the backoff)", len(failed))
		}
		for _, in := range failed {
			if live := liveWithKey(t, ps, in.Key); len(live) != 0 {
				return fmt.Errorf("failed intent %s left %+v", in.Key, live)
			}
		}
		return hasEvent(t, n1, "launch-failed", "no-such-flag")
	})
	for _, in := range intentsOf(t, n1, consensus.IntentLaunch) {
		if in.State == consensus.IntentOpen {
			// Only the attempt in progress may be open.
			if time.Since(in.Created) > time.Minute {
				t.Fatalf("stuck intent %+v", in)
			}
		}
	}
}

// BenchmarkChooseLaunch is the cost of one scale-up decision for one
// pending deployment over a pool of three types (the placement engine
// evaluates each profile).
func BenchmarkChooseLaunch(b *testing.B) {
	s, err := placement.ParseSpec([]byte("name: b\ncount: 5\ncommand: {argv: [sleep, '1']}\nresources: {cpu: '1'}\nconstraints: [{attribute: label.gpu, operator: '=', value: 'true'}]\n"))
	if err != nil {
		b.Fatal(err)
	}
	pools := map[string][]provider.InstanceType{"p1": testTypes()}
	for b.Loop() {
		if _, _, _, err := chooseLaunch(s, 5, pools); err != nil {
			b.Fatal(err)
		}
	}
}

// TestAutoscaleResumesPartialLaunch: a leader died after the provider made
// the first of two machines and before it committed the result. The
// leader that finds the open intent launches only the missing slot.
func TestAutoscaleResumesPartialLaunch(t *testing.T) {
	if testing.Short() {
		t.Skip("launches agent processes")
	}
	c := newCluster(t, 204)
	n1 := c.start(1)
	c.agreeOnLeader(1, 30*time.Second)
	ps := localPool(t, t.TempDir(), 214, 3, "10m")
	cleanupInstances(t, ps)
	pool, err := ps.ToPool("p1")
	if err != nil {
		t.Fatal(err)
	}
	prov, err := provider.New("local", ps.ProviderConfig, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const key = "p1-u999999"
	// What the dead leader did: commit the intent for two, get one.
	first, err := prov.Launch(ctx, provider.LaunchRequest{IdempotencyKey: key, Type: "small", Count: 1, JoinAddr: n1.joinAddr(), Labels: poolLabels(pool, nil)})
	if err != nil || len(first) != 1 {
		t.Fatalf("first slot: %v %+v", err, first)
	}
	n := n1.raftNode()
	if _, _, err := n.Apply(ctx, &consensus.PutPool{Pool: pool}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	in := consensus.Intent{Key: key, Pool: "p1", Kind: consensus.IntentLaunch, Type: "small", Count: 2, State: consensus.IntentOpen, Reason: "test", Created: now, Updated: now}
	if _, _, err := n.Apply(ctx, &consensus.PutIntent{Intent: in, Create: true}); err != nil {
		t.Fatal(err)
	}
	var done consensus.Intent
	retry.Until(t, 60*time.Second, func() error {
		for _, x := range intentsOf(t, n1, consensus.IntentLaunch) {
			if x.Key == key && x.State != consensus.IntentOpen {
				done = x
				return nil
			}
		}
		return errors.New("intent still open")
	})
	live := liveWithKey(t, ps, key)
	if done.State != consensus.IntentDone || len(live) != 2 || live[0].ID != first[0].ID || live[1].Index != 1 {
		t.Fatalf("intent %+v; live %+v; first %s", done, live, first[0].ID)
	}
	if ls := intentsOf(t, n1, consensus.IntentLaunch); len(ls) != 1 {
		t.Fatalf("extra launches: %+v", ls)
	}
}
