package placement

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"
)

func spec(name string, count int, mut ...func(*Spec)) *Spec {
	s := &Spec{Name: name, Count: count, Command: Command{Argv: []string{"/bin/true"}},
		Resources: ResourceAsk{CPU: "1", Memory: "1GiB"}}
	for _, m := range mut {
		m(s)
	}
	return s
}

func node(id, zone string, cores int64) Node {
	return Node{ID: id, Status: StatusEligible, Attributes: map[string]string{AttrOS: "linux"},
		Labels: map[string]string{"zone": zone}, Capacity: Resources{CPUMillis: cores * 1000, MemoryMiB: cores * 1024}}
}

// apply returns the placements after committing res.
func apply(cur []Placement, res Result) []Placement {
	gone := map[string]bool{}
	for _, s := range res.Stop {
		gone[s.Placement.ID+"@"+s.Placement.NodeID] = true
	}
	var out []Placement
	for _, p := range cur {
		if !gone[p.ID+"@"+p.NodeID] {
			out = append(out, p)
		}
	}
	return append(out, res.Place...)
}

// checkInvariants asserts no node is over-committed and no slot is held twice.
func checkInvariants(t *testing.T, nodes []Node, specs []*Spec, pls []Placement) {
	t.Helper()
	capOf := map[string]Resources{}
	for _, n := range nodes {
		capOf[n.ID] = n.Capacity
	}
	used := map[string]Resources{}
	slots := map[string]bool{}
	perNode := map[string]int{}
	distinct := map[string]bool{}
	for _, s := range specs {
		distinct[s.Name] = s.DistinctHosts
	}
	for _, p := range pls {
		used[p.NodeID] = used[p.NodeID].add(p.Resources)
		key := fmt.Sprintf("%s/%d", p.Deployment, p.Index)
		if slots[key] {
			t.Errorf("slot %s held twice", key)
		}
		slots[key] = true
		if distinct[p.Deployment] {
			k := p.Deployment + "@" + p.NodeID
			perNode[k]++
			if perNode[k] > 1 {
				t.Errorf("distinct_hosts: %d instances of %s on %s", perNode[k], p.Deployment, p.NodeID)
			}
		}
	}
	for id, u := range used {
		if !capOf[id].fits(u) {
			t.Errorf("node %s over-committed: used %+v of %+v", id, u, capOf[id])
		}
	}
}

func countBy(pls []Placement, f func(Placement) string) map[string]int {
	m := map[string]int{}
	for _, p := range pls {
		m[f(p)]++
	}
	return m
}

func TestPlanNeverOverCommits(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for trial := 0; trial < 30; trial++ {
		var nodes []Node
		for i := 0; i < 1+r.IntN(30); i++ {
			n := node(fmt.Sprintf("n%02d", i), fmt.Sprintf("z%d", r.IntN(3)), int64(1+r.IntN(8)))
			n.Capacity.MemoryMiB = int64(512 * (1 + r.IntN(16)))
			nodes = append(nodes, n)
		}
		var specs []*Spec
		for d := 0; d < 1+r.IntN(4); d++ {
			s := spec(fmt.Sprintf("d%d", d), r.IntN(60), func(s *Spec) {
				s.Resources = ResourceAsk{CPU: fmt.Sprintf("%dm", 100*(1+r.IntN(20))), Memory: fmt.Sprint(128 * (1 + r.IntN(16)))}
				s.DistinctHosts = r.IntN(3) == 0
				if r.IntN(2) == 0 {
					s.Spread = &Spread{Attribute: "zone"}
				}
			})
			specs = append(specs, s)
		}
		var pls []Placement
		for round := 0; round < 3; round++ {
			res := Plan(Input{Nodes: nodes, Placements: pls, Deployments: specs})
			pls = apply(pls, res)
			checkInvariants(t, nodes, specs, pls)
			placed := countBy(pls, func(p Placement) string { return p.Deployment })
			pending := map[string]int{}
			for _, p := range res.Pending {
				pending[p.Deployment] = p.Count
				m := p.Metrics
				sum := m.NodesIneligible + m.DistinctHostsFiltered
				for _, v := range m.ConstraintFiltered {
					sum += v
				}
				for _, v := range m.NodesExhausted {
					sum += v
				}
				if m.NodesEvaluated != len(nodes) || sum != len(nodes) {
					t.Errorf("trial %d: metrics do not account for every node: %+v (%d nodes)", trial, m, len(nodes))
				}
			}
			for _, s := range specs {
				if placed[s.Name]+pending[s.Name] != s.Count {
					t.Errorf("trial %d: %s placed %d + pending %d != count %d", trial, s.Name, placed[s.Name], pending[s.Name], s.Count)
				}
			}
		}
		// Existing placements made elsewhere also count.
		res := Plan(Input{Nodes: nodes, Placements: pls, Deployments: append(specs, spec("extra", 100))})
		checkInvariants(t, nodes, specs, apply(pls, res))
	}
}

func TestSpreadEvenness(t *testing.T) {
	var nodes []Node
	// Uneven zones: 2, 5 and 13 nodes.
	for i, z := range map[int]string{0: "a", 1: "b", 2: "c"} {
		for j := 0; j < []int{2, 5, 13}[i]; j++ {
			nodes = append(nodes, node(fmt.Sprintf("%s%02d", z, j), z, 64))
		}
	}
	s := spec("web", 30, func(s *Spec) { s.Spread = &Spread{Attribute: "label.zone", Weight: 100} })
	res := Plan(Input{Nodes: nodes, Deployments: []*Spec{s}})
	zoneOf := func(p Placement) string { return p.NodeID[:1] }
	got := countBy(res.Place, zoneOf)
	if got["a"] != 10 || got["b"] != 10 || got["c"] != 10 {
		t.Fatalf("spread = %v, want 10 each", got)
	}

	// Instances already lopsided: new ones go to the emptier zones first.
	s.Count = 36
	pls := res.Place[:0:0]
	for _, p := range res.Place {
		if zoneOf(p) != "a" || p.Index < 20 {
			pls = append(pls, p)
		}
	}
	res2 := Plan(Input{Nodes: nodes, Placements: pls, Deployments: []*Spec{s}})
	got = countBy(apply(pls, res2), zoneOf)
	if got["a"] != 12 || got["b"] != 12 || got["c"] != 12 {
		t.Fatalf("respread = %v, want 12 each", got)
	}

	// Full zone: the others take the rest, still as evenly as possible.
	small := append([]Node(nil), nodes...)
	for i := range small {
		if small[i].ID[0] == 'a' {
			small[i].Capacity = Resources{CPUMillis: 2000, MemoryMiB: 2048} // 2 instances each
		}
	}
	s.Count = 30
	got = countBy(Plan(Input{Nodes: small, Deployments: []*Spec{s}}).Place, zoneOf)
	if got["a"] != 4 || got["b"] != 13 || got["c"] != 13 {
		t.Fatalf("spread with a full zone = %v, want a=4 b=13 c=13", got)
	}

	// Nodes without the attribute are used only when the others are full.
	nz := node("zz", "", 64)
	delete(nz.Labels, "zone")
	got = countBy(Plan(Input{Nodes: append(small, nz), Deployments: []*Spec{s}}).Place, zoneOf)
	if got["z"] != 0 {
		t.Fatalf("zoneless node used while zones have room: %v", got)
	}
}

func TestSpreadLargeBenchmarkEvenness(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	nodes := synthNodes(2000, 10, 3)
	specs := benchSpecs()
	for _, s := range specs {
		s.Count /= 50
	}
	res := Plan(Input{Nodes: nodes, Deployments: specs})
	zone := map[string]string{}
	for _, n := range nodes {
		zone[n.ID] = n.Labels["zone"]
	}
	checkInvariants(t, nodes, specs, res.Place)
	web := countBy(res.Place, func(p Placement) string {
		if p.Deployment != "web" {
			return ""
		}
		return zone[p.NodeID]
	})
	delete(web, "")
	lo, hi := 1<<30, 0
	for _, c := range web {
		lo, hi = min(lo, c), max(hi, c)
	}
	if len(web) != 10 || hi-lo > 1 {
		t.Fatalf("web spread over zones %v: want 10 zones within 1", web)
	}
}

func TestDistinctHosts(t *testing.T) {
	nodes := []Node{node("n1", "a", 16), node("n2", "a", 16), node("n3", "b", 16)}
	s := spec("db", 5, func(s *Spec) { s.DistinctHosts = true })
	res := Plan(Input{Nodes: nodes, Deployments: []*Spec{s}})
	if len(res.Place) != 3 {
		t.Fatalf("placed %d, want 3", len(res.Place))
	}
	checkInvariants(t, nodes, []*Spec{s}, res.Place)
	if len(res.Pending) != 1 || res.Pending[0].Count != 2 || res.Pending[0].Metrics.DistinctHostsFiltered != 3 {
		t.Fatalf("pending = %+v", res.Pending)
	}
	// Turning distinct_hosts on stops the extra instances on shared nodes,
	// re-placing them where possible.
	s2 := spec("db", 3)
	stacked := Plan(Input{Nodes: nodes[:1], Deployments: []*Spec{s2}}).Place
	s2.DistinctHosts = true
	res = Plan(Input{Nodes: nodes, Placements: stacked, Deployments: []*Spec{s2}})
	if len(res.Stop) != 2 || res.Stop[0].Reason != StopDistinctHosts || res.Stop[0].Placement.Index != 1 {
		t.Fatalf("stops = %+v", res.Stop)
	}
	after := apply(stacked, res)
	checkInvariants(t, nodes, []*Spec{s2}, after)
	if len(after) != 3 {
		t.Fatalf("after = %+v", after)
	}
}

func TestNodeFailureReplacement(t *testing.T) {
	nodes := []Node{node("n1", "a", 4), node("n2", "b", 4), node("n3", "c", 4)}
	s := spec("web", 3, func(s *Spec) { s.Spread = &Spread{Attribute: "zone"} })
	pls := Plan(Input{Nodes: nodes, Deployments: []*Spec{s}}).Place
	byNode := countBy(pls, func(p Placement) string { return p.NodeID })
	if byNode["n1"] != 1 || byNode["n2"] != 1 || byNode["n3"] != 1 {
		t.Fatalf("initial %v", byNode)
	}
	for _, tc := range []struct {
		status NodeStatus
		remove bool
		why    StopReason
	}{{StatusDown, false, StopNodeDown}, {StatusDraining, false, StopNodeDraining}, {"", true, StopNodeGone}} {
		t.Run(string(tc.why), func(t *testing.T) {
			ns := append([]Node(nil), nodes...)
			if tc.remove {
				ns = ns[1:]
			} else {
				ns[0].Status = tc.status
			}
			res := Plan(Input{Nodes: ns, Placements: pls, Deployments: []*Spec{s}})
			if len(res.Stop) != 1 || res.Stop[0].Reason != tc.why || res.Stop[0].Placement.NodeID != "n1" {
				t.Fatalf("stop = %+v", res.Stop)
			}
			old := res.Stop[0].Placement
			if len(res.Place) != 1 {
				t.Fatalf("place = %+v", res.Place)
			}
			p := res.Place[0]
			if p.Index != old.Index || p.Generation != old.Generation+1 || p.NodeID == "n1" || p.ID != InstanceID("web", old.Index, 2) {
				t.Fatalf("replacement %+v for %+v", p, old)
			}
		})
	}

	// The node returns while its old instance is still recorded next to
	// the replacement: the stale generation is stopped, nothing new placed.
	ns := append([]Node(nil), nodes...)
	ns[0].Status = StatusDown
	res := Plan(Input{Nodes: ns, Placements: pls, Deployments: []*Spec{s}})
	withBoth := append(append([]Placement(nil), pls...), res.Place...) // stop not committed
	ns[0].Status = StatusEligible
	res = Plan(Input{Nodes: ns, Placements: withBoth, Deployments: []*Spec{s}})
	if len(res.Place) != 0 || len(res.Stop) != 1 || res.Stop[0].Reason != StopStale || res.Stop[0].Placement.NodeID != "n1" || res.Stop[0].Placement.Generation != 1 {
		t.Fatalf("returning node: %+v", res)
	}
	// Input order does not change which one is stale.
	rev := append([]Placement(nil), withBoth...)
	sort.Slice(rev, func(i, j int) bool { return i > j })
	if res2 := Plan(Input{Nodes: ns, Placements: rev, Deployments: []*Spec{s}}); !reflect.DeepEqual(res, res2) {
		t.Fatalf("order-dependent:\n%+v\n%+v", res, res2)
	}

	// Back before the replacement was committed: the instance simply stays.
	if res := Plan(Input{Nodes: nodes, Placements: pls, Deployments: []*Spec{s}}); !res.Empty() {
		t.Fatalf("returning node without replacement: %+v", res)
	}
}

func TestNoLongerFeasible(t *testing.T) {
	nodes := []Node{node("n1", "a", 4), node("n2", "b", 4)}
	s := spec("web", 1, func(s *Spec) {
		s.Constraints = []Constraint{{Attribute: "zone", Operator: "in", Values: []string{"a", "b"}}}
		s.Preferences = []Preference{{Constraint: Constraint{Attribute: "zone", Operator: "=", Value: "a"}, Weight: 100}}
	})
	pls := Plan(Input{Nodes: nodes, Deployments: []*Spec{s}}).Place
	if len(pls) != 1 || pls[0].NodeID != "n1" {
		t.Fatalf("preference not honoured: %+v", pls)
	}
	nodes[0].Labels = map[string]string{"zone": "c"}
	res := Plan(Input{Nodes: nodes, Placements: pls, Deployments: []*Spec{s}})
	if len(res.Stop) != 1 || res.Stop[0].Reason != StopConstraints || len(res.Place) != 1 || res.Place[0].NodeID != "n2" {
		t.Fatalf("res = %+v", res)
	}
}

func TestScaleUpDown(t *testing.T) {
	nodes := []Node{node("n1", "a", 16), node("n2", "b", 16)}
	s := spec("web", 5)
	pls := Plan(Input{Nodes: nodes, Deployments: []*Spec{s}}).Place
	if len(pls) != 5 {
		t.Fatalf("placed %d", len(pls))
	}
	s.Count = 3
	res := Plan(Input{Nodes: nodes, Placements: pls, Deployments: []*Spec{s}})
	if len(res.Place) != 0 || len(res.Stop) != 2 || res.Stop[0].Placement.Index != 3 || res.Stop[1].Placement.Index != 4 || res.Stop[0].Reason != StopScaleDown {
		t.Fatalf("scale down: %+v", res)
	}
	pls = apply(pls, res)
	s.Count = 6
	res = Plan(Input{Nodes: nodes, Placements: pls, Deployments: []*Spec{s}})
	var idx []int
	for _, p := range res.Place {
		idx = append(idx, p.Index)
	}
	if !reflect.DeepEqual(idx, []int{3, 4, 5}) || len(res.Stop) != 0 {
		t.Fatalf("scale up placed indexes %v, stops %+v", idx, res.Stop)
	}
	pls = apply(pls, res)
	if res := Plan(Input{Nodes: nodes, Placements: pls, Deployments: []*Spec{s}}); !res.Empty() || len(res.Pending) != 0 {
		t.Fatalf("steady state not empty: %+v", res)
	}
	// Removing the deployment stops everything.
	res = Plan(Input{Nodes: nodes, Placements: pls})
	if len(res.Stop) != 6 || res.Stop[0].Reason != StopDeploymentRemoved {
		t.Fatalf("removed: %+v", res.Stop)
	}
}

func TestBinPack(t *testing.T) {
	nodes := []Node{node("n1", "a", 8), node("n2", "a", 8), node("n3", "a", 8)}
	other := spec("other", 4)
	pls := Plan(Input{Nodes: nodes[1:2], Deployments: []*Spec{other}}).Place // n2 half full
	s := spec("web", 4)
	res := Plan(Input{Nodes: nodes, Placements: pls, Deployments: []*Spec{s, other}})
	if got := countBy(res.Place, func(p Placement) string { return p.NodeID }); got["n2"] != 4 {
		t.Fatalf("bin-pack should fill the fuller n2 first: %v", got)
	}
	// Negative preference keeps instances off a node while others fit.
	s2 := spec("web", 4, func(s *Spec) {
		s.Preferences = []Preference{{Constraint: Constraint{Attribute: "node.id", Operator: "=", Value: "n2"}, Weight: -100}}
	})
	res = Plan(Input{Nodes: nodes, Placements: pls, Deployments: []*Spec{s2, other}})
	if got := countBy(res.Place, func(p Placement) string { return p.NodeID }); got["n2"] != 0 {
		t.Fatalf("negative preference ignored: %v", got)
	}
}

func TestPendingReasons(t *testing.T) {
	nodes := []Node{
		node("n1", "a", 4), node("n2", "a", 4), node("n3", "b", 4), node("n4", "b", 1), node("n5", "c", 4), node("n6", "a", 4),
	}
	nodes[0].Status = StatusDraining
	nodes[1].Status = StatusDown
	nodes[5].Capacity.MemoryMiB = 512
	s := spec("web", 10, func(s *Spec) {
		s.Constraints = []Constraint{
			{Attribute: "os", Operator: "=", Value: "linux"},
			{Attribute: "zone", Operator: "!=", Value: "c"},
		}
		s.Resources = ResourceAsk{CPU: "2", Memory: "1GiB"}
	})
	res := Plan(Input{Nodes: nodes, Deployments: []*Spec{s}})
	if len(res.Place) != 2 || len(res.Pending) != 1 {
		t.Fatalf("res = %+v", res)
	}
	want := Pending{Deployment: "web", Count: 8, Metrics: Metrics{
		NodesEvaluated:     6,
		NodesIneligible:    2,
		ConstraintFiltered: map[string]int{"zone != c": 1},
		NodesExhausted:     map[string]int{"cpu": 2, "memory": 1}, // n3 full after 2, n4 too small, n6 memory
	}}
	if !reflect.DeepEqual(res.Pending[0], want) {
		t.Fatalf("pending =\n%+v\nwant\n%+v", res.Pending[0], want)
	}
	if got := want.Metrics.String(); got != `6 nodes evaluated, 2 not eligible, 1 filtered by "zone != c", 2 out of cpu, 1 out of memory` {
		t.Errorf("String() = %q", got)
	}
}

func TestInvalidDeploymentLeftAlone(t *testing.T) {
	nodes := []Node{node("n1", "a", 2)}
	good := spec("good", 1)
	pls := Plan(Input{Nodes: nodes, Deployments: []*Spec{spec("bad", 1)}}).Place
	bad := spec("bad", 1, func(s *Spec) { s.Command.Argv = nil })
	res := Plan(Input{Nodes: nodes, Placements: pls, Deployments: []*Spec{bad, good, spec("good", 5)}})
	if len(res.Invalid) != 2 || res.Invalid[0].Name != "bad" || res.Invalid[1].Name != "good" {
		t.Fatalf("invalid = %+v", res.Invalid)
	}
	if len(res.Stop) != 0 || len(res.Place) != 1 || res.Place[0].Deployment != "good" {
		t.Fatalf("res = %+v", res)
	}
	// "bad" still holds a core: only one "good" fits on the 2-core node.
	res = Plan(Input{Nodes: nodes, Placements: pls, Deployments: []*Spec{bad, spec("good", 2)}})
	if len(res.Place) != 1 || len(res.Pending) != 1 {
		t.Fatalf("resources of an invalid deployment not accounted: %+v", res)
	}
}

func TestDeterminism(t *testing.T) {
	nodes := synthNodes(500, 5, 9)
	specs := benchSpecs()
	for _, s := range specs {
		s.Count /= 200
	}
	base := Plan(Input{Nodes: nodes, Deployments: specs})
	// Kill a few nodes so the second plan both stops and places.
	pls := base.Place
	for i := range nodes {
		switch nodes[i].ID {
		case pls[0].NodeID:
			nodes[i].Status = StatusDown
		case pls[len(pls)/2].NodeID:
			nodes[i].Status = StatusDraining
		}
	}
	want := Plan(Input{Nodes: nodes, Placements: pls, Deployments: specs})
	if len(want.Stop) == 0 || len(want.Place) == 0 {
		t.Fatalf("test needs stops and places: %d %d", len(want.Stop), len(want.Place))
	}
	wantJSON, _ := json.Marshal(want)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 5; i++ {
		ns := append([]Node(nil), nodes...)
		ps := append([]Placement(nil), pls...)
		ds := append([]*Spec(nil), specs...)
		r.Shuffle(len(ns), func(i, j int) { ns[i], ns[j] = ns[j], ns[i] })
		r.Shuffle(len(ps), func(i, j int) { ps[i], ps[j] = ps[j], ps[i] })
		r.Shuffle(len(ds), func(i, j int) { ds[i], ds[j] = ds[j], ds[i] })
		got := Plan(Input{Nodes: ns, Placements: ps, Deployments: ds})
		gotJSON, _ := json.Marshal(got)
		if !reflect.DeepEqual(got, want) || string(gotJSON) != string(wantJSON) {
			t.Fatalf("shuffle %d: plan differs", i)
		}
	}
}

func TestSteadyStateAfterApply(t *testing.T) {
	nodes := synthNodes(300, 3, 5)
	specs := benchSpecs()
	for _, s := range specs {
		s.Count /= 400
	}
	pls := apply(nil, Plan(Input{Nodes: nodes, Deployments: specs}))
	for i := 0; i < 2; i++ {
		if res := Plan(Input{Nodes: nodes, Placements: pls, Deployments: specs}); !res.Empty() {
			t.Fatalf("re-plan %d not empty: %d places, %d stops", i, len(res.Place), len(res.Stop))
		}
	}
}

func TestNodeLookupDerived(t *testing.T) {
	n := Node{ID: "x", Capacity: Resources{CPUMillis: 2500, MemoryMiB: 4096}}
	for attr, want := range map[string]string{"node.id": "x", "cpu.cores": "2.5", "cpu.millis": "2500", "memory.mib": "4096"} {
		if got, ok := n.Lookup(attr); !ok || got != want {
			t.Errorf("Lookup(%s) = %q %v, want %q", attr, got, ok, want)
		}
	}
	if _, ok := n.Lookup("node.name"); ok {
		t.Error("empty name should be missing")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Config{CandidateLimit: -1}).Validate(); err == nil {
		t.Fatal("negative limit accepted")
	}
}
