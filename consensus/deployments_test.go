package consensus

import (
	"errors"
	"io"
	"os"
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
