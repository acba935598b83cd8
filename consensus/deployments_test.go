package consensus

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"colony/scaling/placement"
)

// applyCmd runs one command through the encoding and the FSM, as Raft would.
func applyCmd(t *testing.T, f *FSM, index uint64, c Command) ApplyResult {
	t.Helper()
	b, err := EncodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	return f.Apply(&raft.Log{Index: index, Data: b}).(ApplyResult)
}

func TestDeploymentCommands(t *testing.T) {
	b, err := os.ReadFile("../scaling/placement/testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := placement.ParseSpec(b)
	if err != nil {
		t.Fatal(err)
	}
	f := NewFSM(NewState(), nil)
	if r := applyCmd(t, f, 1, &PutDeployment{Spec: *spec}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := applyCmd(t, f, 2, &ScaleDeployment{Name: "web", Count: 5}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := applyCmd(t, f, 3, &ScaleDeployment{Name: "nope", Count: 1}); !errors.Is(r.Err, ErrNoDeployment) {
		t.Fatalf("scale of an unknown deployment: %v", r.Err)
	}
	_, base := f.State().Placements("")
	plan := &ApplyPlan{BaseIndex: base, Place: []placement.Placement{{ID: "web.0.1", Deployment: "web", Index: 0, Generation: 1, NodeID: "n1"}}}
	if r := applyCmd(t, f, 4, plan); r.Err != nil {
		t.Fatal(r.Err)
	}
	// The same plan again is stale: placements moved on.
	if r := applyCmd(t, f, 5, plan); !errors.Is(r.Err, ErrStalePlan) {
		t.Fatalf("stale plan accepted: %v", r.Err)
	}
	if r := applyCmd(t, f, 6, &SetDrain{NodeID: "n1", Drain: true}); r.Err != nil {
		t.Fatal(r.Err)
	}
	ps, idx := f.State().NodePlacements("n1")
	if len(ps) != 1 || idx != 4 {
		t.Fatalf("node placements %+v at %d", ps, idx)
	}
	if _, idx := f.State().NodePlacements("n2"); idx != 1 {
		t.Fatalf("an untouched node's index is %d, want 1", idx)
	}
	// NodeIndex is NodePlacements' index, without the placements.
	if a, b := f.State().NodeIndex("n1"), f.State().NodeIndex("n2"); a != 4 || b != 1 {
		t.Fatalf("node indexes %d and %d, want 4 and 1", a, b)
	}

	// Snapshot and restore keep everything.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := NewFSM(NewState(), nil)
	if err := g.Restore(io.NopCloser(&sink.Buffer)); err != nil {
		t.Fatal(err)
	}
	d, ok, _ := g.State().DeploymentByName("web")
	drained, _ := g.State().Drained()
	all, _ := g.State().Placements("web")
	if !ok || d.Spec.Count != 5 || !drained["n1"] || len(all) != 1 || d.Spec.Command.Argv[0] != "/usr/bin/python3" {
		t.Fatalf("restored: %+v %v %+v", d, drained, all)
	}
	if r := applyCmd(t, g, 7, &DeleteDeployment{Name: "web"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if ds, _ := g.State().Deployments(); len(ds) != 0 {
		t.Fatalf("deployments after delete: %+v", ds)
	}
}

// bigPlan places one instance of a deployment with a 63-character name on
// each of n nodes with UUID-sized IDs: the worst case for command size.
func bigPlan(n int) *ApplyPlan {
	name := strings.Repeat("d", 63)
	c := &ApplyPlan{Pending: []placement.Pending{{Deployment: name, Count: 1}}}
	for i := range n {
		c.Place = append(c.Place, placement.Placement{
			ID: placement.InstanceID(name, i, 1), Deployment: name, Index: i, Generation: 1,
			NodeID:    fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
			Resources: placement.Resources{CPUMillis: 100, MemoryMiB: 64},
		})
	}
	return c
}

// TestApplyPlanSplit: a plan of one instance on each of 10,000 nodes does
// not fit one command; its parts do, and applied one after the other, each
// based on the previous one's index, they give the whole plan.
func TestApplyPlanSplit(t *testing.T) {
	whole := bigPlan(10000)
	whole.Stop = []string{"old.0.1", "old.1.1"}
	if _, err := EncodeCommand(whole); err == nil {
		t.Fatal("a 10,000-placement plan fits one command: the split is not exercised")
	}
	parts := whole.Split()
	if len(parts) != 11 {
		t.Fatalf("%d parts, want 11", len(parts))
	}
	if len(parts[0].Stop) != 2 || len(parts[0].Place) != MaxPlanChanges-2 {
		t.Fatalf("first part: %d stops, %d placements", len(parts[0].Stop), len(parts[0].Place))
	}
	f := NewFSM(NewState(), nil)
	_, base := f.State().Placements("")
	index := base + 1
	largest := 0
	for i, p := range parts {
		p.BaseIndex = base
		b, err := EncodeCommand(p)
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		largest = max(largest, len(b))
		if r := applyCmd(t, f, index, p); r.Err != nil {
			t.Fatalf("part %d: %v", i, r.Err)
		}
		if pend, _ := f.State().Pending(); len(pend) != 1 {
			t.Fatalf("after part %d: pending %v", i, pend)
		}
		base, index = index, index+1
	}
	if ps, _ := f.State().Placements(""); len(ps) != 10000 {
		t.Fatalf("%d placements after all parts", len(ps))
	}
	t.Logf("10,000 placements: %d parts, largest %d bytes (limit %d)", len(parts), largest, MaxCommandSize)
	// A part based on an index that moved on is stale, like any plan.
	if r := applyCmd(t, f, index, parts[1]); !errors.Is(r.Err, ErrStalePlan) {
		t.Fatalf("replayed part: %v", r.Err)
	}
	if small := bigPlan(10); len(small.Split()) != 1 || small.Split()[0] != small {
		t.Fatal("a small plan is split")
	}
}

// TestNodeApplyPlanLarge commits one instance on each of 10,000 nodes
// through a real single-voter Raft node.
func TestNodeApplyPlanLarge(t *testing.T) {
	n := startNode(t, testConfig("n1", t.TempDir()))
	if err := n.BootstrapSelf(); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, n)
	c := bigPlan(10000)
	_, c.BaseIndex = n.State().Placements("")
	parts, err := n.ApplyPlan(ctxT(t), c)
	if err != nil {
		t.Fatal(err)
	}
	if ps, _ := n.State().Placements(""); len(ps) != 10000 || parts != 10 {
		t.Fatalf("%d placements in %d parts", len(ps), parts)
	}
	// Planned from an old index: refused at the first part, nothing applied.
	stale := bigPlan(3)
	stale.Place[0].ID = "other.0.1"
	if parts, err := n.ApplyPlan(ctxT(t), stale); !errors.Is(err, ErrStalePlan) || parts != 0 {
		t.Fatalf("stale plan: %d parts, %v", parts, err)
	}
}

func BenchmarkApplyPlan10000(b *testing.B) {
	n := benchVoter(b)
	ctx := context.Background()
	for b.Loop() {
		c := bigPlan(10000)
		_, c.BaseIndex = n.State().Placements("")
		if _, err := n.ApplyPlan(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
}
