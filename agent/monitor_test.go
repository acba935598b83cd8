package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"colony/scaling/monitor"
	"colony/test/retry"
)

func clusterMetrics(a *Agent, by string) (ClusterMetrics, error) {
	var v ClusterMetrics
	c, _ := NewClient(a.HTTPAddr())
	err := c.Do(context.Background(), "GET", "/v1/cluster/metrics?by="+by, nil, &v)
	return v, err
}

func monitorPlan(a *Agent) (*monitor.Plan, error) {
	var p *monitor.Plan
	c, _ := NewClient(a.HTTPAddr())
	if err := c.Do(context.Background(), "GET", "/v1/monitor/plan?consistency=stale", nil, &p); err != nil {
		return nil, err
	}
	if p == nil {
		return nil, errors.New("no plan yet")
	}
	return p, p.Check()
}

func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitAlive waits until the cluster view asked from a says n nodes are
// alive and every one of them reported members_alive.
func waitAlive(t *testing.T, a *Agent, n uint64) ClusterMetrics {
	t.Helper()
	var v ClusterMetrics
	retry.Until(t, 60*time.Second, func() error {
		var err error
		if v, err = clusterMetrics(a, "all"); err != nil {
			return err
		}
		if v.Nodes["alive"] != n {
			return fmt.Errorf("cluster view from %s (root %s) has %v nodes, want %d alive", a.Name(), v.Root, v.Nodes, n)
		}
		if c := v.Metrics["members_alive"]["all"].Count; c != n {
			return fmt.Errorf("members_alive from %d nodes, want %d", c, n)
		}
		return nil
	})
	return v
}

func TestMonitorTree(t *testing.T) {
	const nodes = 10
	const interval = 200 * time.Millisecond
	c := startMonitorCluster(t, 190, nodes, func(i int, cfg *Config) {
		cfg.Labels = map[string]string{"zone": fmt.Sprintf("z%d", i%2)}
	})

	// Every node follows the same plan: all nodes, a two-level tree.
	var plan *monitor.Plan
	retry.Until(t, 30*time.Second, func() error {
		for _, a := range c.live() {
			p, err := monitorPlan(a)
			if err != nil {
				return fmt.Errorf("%s: %w", a.Name(), err)
			}
			if p.Len() != nodes {
				return fmt.Errorf("%s: plan has %d nodes", a.Name(), p.Len())
			}
			plan = p
		}
		return nil
	})
	if plan.Depth != 2 {
		t.Fatalf("depth %d with K=4 and %d nodes, want 2", plan.Depth, nodes)
	}

	v := waitAlive(t, c.agent("n7"), nodes)
	if _, ok := v.Metrics["cpu_percent"]["all"]; !ok {
		t.Errorf("no cpu_percent in %v", v.Metrics)
	}
	// The five busiest nodes by cpu, from all over the tree.
	retry.Until(t, 30*time.Second, func() error {
		v, err := clusterMetrics(c.agent("n6"), "all")
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, l := range v.Busiest {
			if !strings.HasPrefix(l.Node, "n") || seen[l.Node] || l.CPU < 0 || l.CPU > 100 || l.Mem <= 0 {
				return fmt.Errorf("bad busiest entry %+v in %+v", l, v.Busiest)
			}
			seen[l.Node] = true
		}
		if len(v.Busiest) != monitor.MaxBusiest {
			return fmt.Errorf("busiest %+v, want %d entries", v.Busiest, monitor.MaxBusiest)
		}
		return nil
	})
	if z, err := clusterMetrics(c.agent("n3"), "zone"); err != nil || len(z.Metrics["members_alive"]) != 2 {
		t.Errorf("per-zone view: %v %v", z.Metrics["members_alive"], err)
	}
	// Freshness: once the tree is settled, the oldest sample at the root
	// is within the bound (asked a few times: the first answer may be
	// from a root whose children just re-pushed).
	retry.Until(t, 30*time.Second, func() error {
		v, err := clusterMetrics(c.agent("n2"), "all")
		if err != nil {
			return err
		}
		t.Logf("freshness: age %.2fs, bound %.2fs (depth %d, interval %v)", v.AgeSeconds, v.FreshnessBoundSeconds, plan.Depth, interval)
		if v.AgeSeconds > v.FreshnessBoundSeconds {
			return fmt.Errorf("oldest sample %.2fs old, bound %.2fs", v.AgeSeconds, v.FreshnessBoundSeconds)
		}
		return nil
	})
	plan = stablePlan(t, c)
	for _, a := range c.live() {
		st := a.monitorState().status()
		t.Logf("%s: level %d, pushes to %.8s, %d children, last summary %d bytes", a.Name(), st.Level, st.PushesTo, st.Children, st.SummaryBytes)
	}
	root, aggregator := treeRoles(t, c, plan)

	// Prometheus: service discovery lists the aggregators; they serve
	// their roll-up; every node serves its own series.
	code, body, err := httpGet("http://" + c.agent("n4").HTTPAddr() + "/v1/monitor/targets")
	if err != nil || code != 200 || !strings.Contains(body, "/metrics/group") || !strings.Contains(body, root.HTTPAddr()) {
		t.Errorf("targets: %d %s %v", code, body, err)
	}
	retry.Until(t, 10*time.Second, func() error {
		code, body, err := httpGet("http://" + root.HTTPAddr() + "/metrics/group")
		if err != nil || code != 200 || !strings.Contains(body, `colony_group_nodes{status="alive"}`) {
			return fmt.Errorf("root /metrics/group: %d %v\n%s", code, err, body)
		}
		return nil
	})
	if code, body, _ := httpGet("http://" + c.agent("n5").HTTPAddr() + "/metrics"); code != 200 || !strings.Contains(body, `colony_node_metric{metric="members_alive"}`) {
		t.Errorf("/metrics lacks the node's own series: %d", code)
	}

	// Bad summaries are refused and counted; the aggregator carries on.
	bad := map[string][]byte{"malformed": {monitor.SummaryVersion, 0xff, 0xff, 0xff}, "version": []byte("garbage"), "oversized": make([]byte, 70<<10)}
	stranger := &monitor.Summary{Origin: "stranger", Seq: 1, Time: time.Now().UnixMilli()}
	stranger.Observe("cpu_percent", 1)
	if b, err := monitor.EncodeSummary(stranger, 64<<10); err == nil {
		bad["not_member"] = b
	}
	for reason, b := range bad {
		req, _ := http.NewRequest("PUT", "http://"+root.HTTPAddr()+"/v1/monitor/summary", strings.NewReader(string(b)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s summary: status %d", reason, resp.StatusCode)
		}
		if root.monitorState().recv.Rejections()[reason] == 0 {
			t.Errorf("%s not counted: %v", reason, root.monitorState().recv.Rejections())
		}
	}
	if _, body, _ := httpGet("http://" + root.HTTPAddr() + "/metrics"); !strings.Contains(body, `colony_monitor_summaries_rejected_total{reason="malformed"} 1`) {
		t.Error("rejections are not exported")
	}
	waitAlive(t, root, nodes)

	// A threshold rule set as a cluster setting raises an alarm at the
	// root, visible from any node.
	if _, err := set(t, c.agent("n2"), MonitorRulesSetting, "members_alive min >= 1 for 200ms; bogus rule"); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 30*time.Second, func() error {
		var as []monitor.Alarm
		cl, _ := NewClient(other(c, root).HTTPAddr())
		if err := cl.Do(context.Background(), "GET", "/v1/alarms", nil, &as); err != nil {
			return err
		}
		for _, a := range as {
			if a.Kind == monitor.KindThreshold && strings.Contains(a.Subject, "members_alive min >= 1") {
				return nil
			}
		}
		return fmt.Errorf("no threshold alarm in %+v", as)
	})

	// The monitor.group_size setting reshapes the tree without a restart:
	// K=16 puts all 10 nodes in one group (the flat layout); deleting it
	// brings back the leader's K=4. Bad values are refused when written.
	for _, bad := range []string{"1", "4097", "many"} {
		if _, err := set(t, c.agent("n3"), MonitorGroupSizeSetting, bad); err == nil || !strings.Contains(err.Error(), "(400)") {
			t.Errorf("group size %q accepted: %v", bad, err)
		}
	}
	if _, err := set(t, c.agent("n3"), MonitorGroupSizeSetting, "16"); err != nil {
		t.Fatal(err)
	}
	waitPlan(t, c, 16, 1)
	cl, _ := NewClient(c.agent("n4").HTTPAddr())
	if err := cl.Do(context.Background(), "DELETE", "/v1/settings/"+MonitorGroupSizeSetting, nil, &WriteResult{}); err != nil {
		t.Fatal(err)
	}
	plan = waitPlan(t, c, 4, 2)
	root, aggregator = treeRoles(t, c, plan)
	waitAlive(t, root, nodes)

	// An aggregator dies: its children re-home and the view is whole again.
	t.Logf("killing aggregator %s", aggregator.Name())
	_ = aggregator.Shutdown()
	waitAlive(t, other(c, root, aggregator), nodes-1)

	// The root dies (and the leader, if it is not the root): a stand-in or
	// the next plan's root serves the cluster view.
	t.Logf("killing root %s", root.Name())
	_ = root.Shutdown()
	alive := uint64(nodes - 2)
	asker := other(c, root, aggregator)
	waitAlive(t, asker, alive)
	leader := c.agreeOnLeader(3, 60*time.Second, root.Name(), aggregator.Name())
	if la := c.agent(leader); la != root && la != aggregator {
		t.Logf("killing leader %s", leader)
		_ = la.Shutdown()
		alive--
		if asker == la {
			asker = other(c, root, aggregator, la)
		}
		waitAlive(t, asker, alive)
	}
	// The killed nodes are reported down (not left: they did not leave).
	retry.Until(t, 30*time.Second, func() error {
		var as []monitor.Alarm
		cl, _ := NewClient(asker.HTTPAddr())
		if err := cl.Do(context.Background(), "GET", "/v1/alarms", nil, &as); err != nil {
			return err
		}
		down := map[string]bool{}
		for _, a := range as {
			if a.Kind == monitor.KindNodeDown {
				down[a.Subject] = true
			}
		}
		if !down[aggregator.ID().String()] || !down[root.ID().String()] {
			return fmt.Errorf("node_down alarms missing for %s or %s: %+v", aggregator.Name(), root.Name(), as)
		}
		t.Logf("alarms after the kills: %+v", as)
		return nil
	})
}

// other is a live agent that is none of the given ones.
func other(c *cluster, not ...*Agent) *Agent {
	for _, a := range c.live() {
		skip := false
		for _, n := range not {
			skip = skip || a == n
		}
		if !skip {
			return a
		}
	}
	c.t.Fatal("no other live agent")
	return nil
}

// stablePlan waits until every live agent follows the same plan version
// and its root holds the cluster view.
func stablePlan(t *testing.T, c *cluster) *monitor.Plan {
	t.Helper()
	var plan *monitor.Plan
	retry.Until(t, 30*time.Second, func() error {
		plan = nil
		for _, a := range c.live() {
			st := a.monitorState().status()
			p, err := monitorPlan(a)
			if err != nil {
				return err
			}
			if plan != nil && p.Version != plan.Version {
				return fmt.Errorf("plan versions %d and %d", p.Version, plan.Version)
			}
			if st.PlanVersion != p.Version {
				return fmt.Errorf("%s follows plan %d, committed %d", a.Name(), st.PlanVersion, p.Version)
			}
			plan = p
		}
		return nil
	})
	return plan
}

// waitPlan waits until every live agent follows a plan with group size k
// and the given depth over all live agents.
func waitPlan(t *testing.T, c *cluster, k, depth int) *monitor.Plan {
	t.Helper()
	var plan *monitor.Plan
	retry.Until(t, 60*time.Second, func() error {
		plan = stablePlan(t, c)
		if plan.GroupSize != k || plan.Depth != depth || plan.Len() != len(c.live()) {
			return fmt.Errorf("plan v%d has K=%d, depth %d, %d nodes; want K=%d, depth %d, %d nodes", plan.Version, plan.GroupSize, plan.Depth, plan.Len(), k, depth, len(c.live()))
		}
		return nil
	})
	return plan
}

func TestParseMonitorGroupSize(t *testing.T) {
	for v, want := range map[string]int{"2": 2, " 32 ": 32, "4096": 4096, "1": 0, "0": 0, "-3": 0, "4097": 0, "": 0, "8k": 0} {
		k, err := ParseMonitorGroupSize(v)
		if k != want || (err != nil) != (want == 0) {
			t.Errorf("%q: %d, %v; want %d", v, k, err, want)
		}
	}
}

var (
	monitorFigures       = flag.Int("monitor-figures", 0, "run TestMonitorFigures with this many in-process nodes (e.g. 50)")
	monitorFiguresK      = flag.Int("monitor-figures-k", 8, "K of the tree TestMonitorFigures compares with the flat alternative")
	monitorFiguresWindow = flag.Duration("monitor-figures-window", 20*time.Second, "how long TestMonitorFigures measures each layout")
)

// TestMonitorFigures measures the monitoring tree against the flat
// alternative (the same code with K > N: one node collects from all) on
// one cluster of in-process agents, 1 s interval:
//
//	go test -count=1 -run TestMonitorFigures -v ./agent -monitor-figures 100 -monitor-figures-k 8
//
// Per layout it logs the summary bytes/s each node sends and receives,
// the time spent in the monitoring code, the process CPU per node, the
// root's fan-in and bytes/s received, and the age of the oldest sample at
// the root against the (depth+1) × interval bound.
func TestMonitorFigures(t *testing.T) {
	n := *monitorFigures
	if n == 0 {
		t.Skip("set -monitor-figures N to measure")
	}
	const interval = time.Second
	c := newCluster(t, 142)
	started := time.Now()
	for i := 1; i <= n; i++ {
		c.start(i, func(cfg *Config) {
			cfg.MonitorInterval = interval
			cfg.Labels = map[string]string{"zone": fmt.Sprintf("z%d", i%3), "rack": fmt.Sprintf("r%d", i%5)}
		})
	}
	t.Logf("%d agents started in %v", n, time.Since(started).Round(100*time.Millisecond))
	c.agreeOnLeader(3, 5*time.Minute)
	prevDepth := 0
	for _, phase := range []struct {
		name string
		k    int
	}{{"tree", *monitorFiguresK}, {"flat", n + 1}} {
		if _, err := set(t, c.agent("n2"), MonitorGroupSizeSetting, strconv.Itoa(phase.k)); err != nil {
			t.Fatal(err)
		}
		var plan *monitor.Plan
		retry.Until(t, 5*time.Minute, func() error {
			plan = stablePlan(t, c)
			if plan.GroupSize != phase.k || plan.Len() != n {
				return fmt.Errorf("plan v%d has K=%d and %d nodes, want K=%d and %d", plan.Version, plan.GroupSize, plan.Len(), phase.k, n)
			}
			return nil
		})
		asker := c.agent("n2")
		waitAlive(t, asker, uint64(n))
		// An aggregator keeps merging a child's last summary for 3
		// intervals, so samples from before the switch reach the root for
		// 3 intervals plus one per level of the deeper tree: wait them out.
		settle := time.NewTimer(time.Duration(max(plan.Depth, prevDepth)+5) * interval)
		<-settle.C
		prevDepth = plan.Depth

		before := map[*Agent]MonitorStatus{}
		for _, a := range c.live() {
			before[a] = a.monitorState().status()
		}
		cpu0 := processCPU()
		t0 := time.Now()
		var ages []float64
		bound := 0.0
		for time.Since(t0) < *monitorFiguresWindow {
			if v, err := clusterMetrics(asker, "all"); err == nil {
				ages = append(ages, v.AgeSeconds)
				bound = v.FreshnessBoundSeconds
			}
			tm := time.NewTimer(interval / 2)
			<-tm.C // spacing the samples, not waiting for a condition
		}
		secs := time.Since(t0).Seconds()
		cpu := (processCPU() - cpu0).Seconds()

		var outs, ins, works []float64
		var rootIn float64
		rootKids := 0
		for _, a := range c.live() {
			st, b := a.monitorState().status(), before[a]
			out := float64(st.BytesOut-b.BytesOut) / secs
			in := float64(st.BytesIn-b.BytesIn) / secs
			outs, ins = append(outs, out), append(ins, in)
			works = append(works, (st.WorkSeconds-b.WorkSeconds)/secs)
			if a.ID().String() == plan.Root() {
				rootIn, rootKids = in, st.Children
			}
		}
		slices.Sort(ages)
		t.Logf("%s (K=%d): %d nodes, depth %d, root fan-in %d (planned %d), %.0fs window", phase.name, phase.k, n, plan.Depth, rootKids, plan.FanIn(plan.Root()), secs)
		t.Logf("  summary bytes/s sent per node: mean %.0f, max %.0f; received per node: mean %.0f, max %.0f; root receives %.0f", mean(outs), slices.Max(outs), mean(ins), slices.Max(ins), rootIn)
		t.Logf("  monitoring code time per node: mean %.2f ms/s, max %.2f ms/s; whole process CPU %.1f ms/s per node (gossip, Raft, HTTP included)", 1000*mean(works), 1000*slices.Max(works), 1000*cpu/secs/float64(n))
		if len(ages) > 0 {
			t.Logf("  age of the oldest sample at the root: mean %.2fs, max %.2fs over %d reads (bound (depth+1) x interval = %.0fs; API bound with the root's own interval %.0fs)", mean(ages), ages[len(ages)-1], len(ages), float64(plan.Depth+1)*interval.Seconds(), bound)
		}
	}
}

// startMonitorCluster starts n agents on subnet pushing summaries every
// 200 ms in groups of K=4 (target 3), each also given extra (if not nil),
// and waits for a leader with three voters.
func startMonitorCluster(t *testing.T, subnet, n int, extra func(i int, cfg *Config)) *cluster {
	t.Helper()
	tuneMonitor = func(c *monitor.Config) { c.GroupSize, c.TargetGroupSize = 4, 3 }
	t.Cleanup(func() { tuneMonitor = nil })
	c := newCluster(t, subnet)
	for i := 1; i <= n; i++ {
		c.start(i, func(cfg *Config) {
			cfg.MonitorInterval = 200 * time.Millisecond
			if extra != nil {
				extra(i, cfg)
			}
		})
	}
	c.agreeOnLeader(3, 60*time.Second)
	return c
}

// treeRoles finds the root and a level-1 (or higher) aggregator that is
// not the root.
func treeRoles(t *testing.T, c *cluster, plan *monitor.Plan) (root, aggregator *Agent) {
	t.Helper()
	for _, a := range c.live() {
		switch id := a.ID().String(); {
		case id == plan.Root():
			root = a
		case plan.Level(id) > 0 && aggregator == nil:
			aggregator = a
		}
	}
	if root == nil || aggregator == nil {
		t.Fatalf("no root or no level-1 aggregator in %+v", plan)
	}
	return root, aggregator
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

// processCPU is the user plus system CPU time this test process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestPlanCommitDelay: the leader holds a changing plan back 10 s in a
// small cluster, and longer in a large one, so that the fetches a commit
// causes (the whole plan on every node) cost O(n) a second, not O(n²).
func TestPlanCommitDelay(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{0, 10 * time.Second}, {5, 10 * time.Second}, {500, 10 * time.Second}, {1000, 20 * time.Second}, {10000, 200 * time.Second}} {
		if got := planCommitDelay(tc.n); got != tc.want {
			t.Errorf("planCommitDelay(%d) = %s, want %s", tc.n, got, tc.want)
		}
	}
}
