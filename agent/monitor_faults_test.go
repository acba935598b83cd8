package agent

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"colony/scaling/monitor"
	"colony/test/retry"
)

// alarms lists the cluster's active alarms as seen through a.
func alarms(a *Agent) ([]monitor.Alarm, error) {
	var as []monitor.Alarm
	c, _ := NewClient(a.HTTPAddr())
	err := c.Do(context.Background(), "GET", "/v1/alarms", nil, &as)
	return as, err
}

// findAlarm reports whether as holds an alarm of kind whose subject
// matches.
func findAlarm(as []monitor.Alarm, kind string, match func(subject string) bool) bool {
	return slices.ContainsFunc(as, func(al monitor.Alarm) bool { return al.Kind == kind && match(al.Subject) })
}

// waitAlarm waits until the alarms seen through a do (want) or do not
// (!want) include one of kind matching.
func waitAlarm(t *testing.T, a *Agent, kind string, want bool, match func(string) bool) {
	t.Helper()
	retry.Until(t, 60*time.Second, func() error {
		as, err := alarms(a)
		if err != nil {
			return err
		}
		if findAlarm(as, kind, match) != want {
			return fmt.Errorf("via %s: %s alarm present=%v, want %v: %+v", a.Name(), kind, !want, want, as)
		}
		return nil
	})
}

func voterNames(t *testing.T, a *Agent) map[string]bool {
	t.Helper()
	var st ClusterStatus
	retry.Until(t, 30*time.Second, func() error {
		var err error
		st, err = status(a)
		return err
	})
	out := map[string]bool{}
	for _, v := range st.Voters {
		if v.Voter {
			out[v.Name] = true
		}
	}
	return out
}

func byID(c *cluster, id string) *Agent {
	for _, a := range c.live() {
		if a.ID().String() == id {
			return a
		}
	}
	return nil
}

func putSummary(t *testing.T, a *Agent, s *monitor.Summary) int {
	t.Helper()
	b, err := monitor.EncodeSummary(s, 0)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("PUT", "http://"+a.HTTPAddr()+"/v1/monitor/summary", strings.NewReader(string(b)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestMonitorAlarms: a crash-looping deployment raises crash_loop and an
// aggregator cut off from its parent raises aggregator_lost, both visible
// from any node through the root and both cleared when the cause goes; a
// replayed or stale summary from a real child is refused and counted.
func TestMonitorAlarms(t *testing.T) {
	const nodes = 7
	c := startMonitorCluster(t, 140, nodes, nil)
	plan := stablePlan(t, c)
	if plan.Depth < 2 {
		t.Fatalf("depth %d, want a two-level tree", plan.Depth)
	}
	waitAlive(t, c.agent("n2"), nodes)

	// crash_loop: /bin/false exits at once and is restarted every 50ms.
	spec := `name: crash
count: 1
command: {argv: ["/bin/false"]}
resources: {cpu: 10m, memory: 1MiB}
restart: {mode: always, backoff: {initial: 50ms, max: 100ms}}
`
	if code, body := putSpec(c.agent("n3"), spec); code != 200 {
		t.Fatalf("deploy: %d %s", code, body)
	}
	any := func(string) bool { return true }
	for _, name := range []string{"n1", "n5"} {
		waitAlarm(t, c.agent(name), monitor.KindCrashLoop, true, any)
	}
	as, _ := alarms(c.agent("n7"))
	t.Logf("alarms with a crash-looping deployment: %+v", as)
	if err := client(t, c.agent("n4")).Do(context.Background(), "DELETE", "/v1/deployments/crash", nil, nil); err != nil {
		t.Fatal(err)
	}
	waitAlarm(t, c.agent("n6"), monitor.KindCrashLoop, false, any)

	// aggregator_lost: cut one aggregator off from its parent only. Gossip
	// still sees it alive through the others (indirect probes), so the plan
	// stands and the parent notices the silence.
	plan = stablePlan(t, c)
	voters := voterNames(t, c.agent("n1"))
	var agg, parent *Agent
	for id, lvl := range plan.Levels {
		p, _ := plan.Parent(id)
		a, pa := byID(c, id), byID(c, p)
		if lvl == 0 || p == "" || a == nil || pa == nil {
			continue
		}
		if agg == nil || voters[agg.Name()] && voters[parent.Name()] {
			agg, parent = a, pa
		}
	}
	if agg == nil {
		t.Fatalf("no aggregator below the root in %+v", plan)
	}
	t.Logf("cutting aggregator %s from its parent %s (voters %v)", agg.Name(), parent.Name(), voters)
	c.cut.split([]string{agg.cfg.BindAddr}, []string{parent.cfg.BindAddr})
	isAgg := func(s string) bool { return s == agg.ID().String() }
	asker := other(c, agg, parent)
	waitAlarm(t, asker, monitor.KindAggregatorLost, true, isAgg)
	c.cut.heal()
	waitAlarm(t, asker, monitor.KindAggregatorLost, false, isAgg)
	waitAlive(t, asker, nodes)

	// A replayed summary (an old sequence number) and a stale one (sampled
	// an hour ago) from a real child of the root are refused and counted.
	plan = stablePlan(t, c)
	root := byID(c, plan.Root())
	child := plan.Children(plan.Root())[0]
	before := root.monitorState().recv.Rejections()
	old := &monitor.Summary{Origin: child, Epoch: plan.Version, Seq: 1, Time: time.Now().UnixMilli()}
	old.Observe("cpu_percent", 1)
	if code := putSummary(t, root, old); code != http.StatusBadRequest {
		t.Errorf("replayed summary: status %d", code)
	}
	stale := &monitor.Summary{Origin: child, Epoch: plan.Version, Seq: uint64(time.Now().UnixMilli()) + 1e6, Time: time.Now().Add(-time.Hour).UnixMilli()}
	stale.Observe("cpu_percent", 1)
	if code := putSummary(t, root, stale); code != http.StatusBadRequest {
		t.Errorf("stale summary: status %d", code)
	}
	after := root.monitorState().recv.Rejections()
	for _, reason := range []string{monitor.RejectReplayed, monitor.RejectStale} {
		if after[reason] <= before[reason] {
			t.Errorf("%s not counted: before %v, after %v", reason, before, after)
		}
	}
	if _, body, _ := httpGet("http://" + root.HTTPAddr() + "/metrics"); !strings.Contains(body, `colony_monitor_summaries_rejected_total{reason="replayed"}`) {
		t.Error("replayed rejections are not exported")
	}
	// The real child's next summary is still accepted: the view stays whole.
	waitAlive(t, root, nodes)
}

// TestMonitorSubtreePartition: one aggregator's whole group is cut off
// from the rest. The rest of the cluster reports those nodes (not alive,
// then node_down alarms), the cut-off side keeps its own view, and after
// the partition heals the cluster view is whole again and the alarms
// clear.
func TestMonitorSubtreePartition(t *testing.T) {
	const nodes = 9
	c := startMonitorCluster(t, 141, nodes, nil)
	plan := stablePlan(t, c)
	waitAlive(t, c.agent("n2"), nodes)
	voters := voterNames(t, c.agent("n1"))

	// The subtree: a level-1 aggregator and its leaves, preferring the
	// group with the fewest voters (the rest then keeps Raft; monitoring
	// itself needs Raft only to commit a new plan).
	var subtree []*Agent
	fewest := 0
	for id, lvl := range plan.Levels {
		if lvl != 1 || id == plan.Root() || len(plan.Children(id)) == 0 {
			continue
		}
		group := []*Agent{byID(c, id)}
		for _, k := range plan.Children(id) {
			group = append(group, byID(c, k))
		}
		nv := 0
		for _, a := range group {
			if voters[a.Name()] {
				nv++
			}
		}
		if !slices.Contains(group, nil) && (subtree == nil || nv < fewest) {
			subtree, fewest = group, nv
		}
	}
	if subtree == nil {
		t.Fatalf("no level-1 group in %+v", plan)
	}
	var in, out []string
	var rest []*Agent
	cutIDs := map[string]bool{}
	for _, a := range c.live() {
		if slices.Contains(subtree, a) {
			in = append(in, a.cfg.BindAddr)
			cutIDs[a.ID().String()] = true
		} else {
			out = append(out, a.cfg.BindAddr)
			rest = append(rest, a)
		}
	}
	t.Logf("partitioning the subtree of %s (%d voters): %v from %v", subtree[0].Name(), fewest, in, out)
	c.cut.split(in, out)
	t.Cleanup(func() {
		if t.Failed() {
			for _, a := range c.live() {
				t.Logf("%s %.8s: voter=%v %+v", a.Name(), a.ID(), a.raftNode() != nil, a.monitorState().status())
			}
		}
	})

	// The rest reports the subtree's nodes: gone from the alive count,
	// counted suspect or dead, then raised as node_down.
	asker := rest[len(rest)-1]
	retry.Until(t, 60*time.Second, func() error {
		v, err := clusterMetrics(asker, "all")
		if err != nil {
			return err
		}
		gone := v.Nodes["suspect"] + v.Nodes["dead"]
		if v.Nodes["alive"] != uint64(len(rest)) || gone < uint64(len(subtree)) {
			return fmt.Errorf("view from %s during the partition: %v, want %d alive and %d suspect or dead", asker.Name(), v.Nodes, len(rest), len(subtree))
		}
		t.Logf("view during the partition: %v", v.Nodes)
		return nil
	})
	retry.Until(t, 60*time.Second, func() error {
		as, err := alarms(asker)
		if err != nil {
			return err
		}
		for id := range cutIDs {
			if !findAlarm(as, monitor.KindNodeDown, func(s string) bool { return s == id }) {
				return fmt.Errorf("no node_down for %s: %+v", id, as)
			}
		}
		return nil
	})
	// The cut-off side answers for what it can see when its plan allows
	// (a stand-in root for its group); logged, not asserted: which plan
	// version each side caught before the cut is a race.
	if v, err := clusterMetrics(subtree[len(subtree)-1], "all"); err == nil {
		t.Logf("cut-off side's view: %v", v.Nodes)
	} else {
		t.Logf("cut-off side's view: %v", err)
	}

	c.cut.heal()
	t.Log("partition healed")
	for _, a := range []*Agent{asker, subtree[1]} {
		waitAlive(t, a, nodes)
	}
	retry.Until(t, 60*time.Second, func() error {
		as, err := alarms(asker)
		if err != nil {
			return err
		}
		if findAlarm(as, monitor.KindNodeDown, func(string) bool { return true }) {
			return fmt.Errorf("node_down alarms remain after healing: %+v", as)
		}
		return nil
	})
}
