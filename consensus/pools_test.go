package consensus

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestPoolValidation(t *testing.T) {
	good := Pool{Name: "gpu", Provider: "local", Min: 0, Max: 3, Labels: map[string]string{"zone": "a"}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := Pool{Name: "Bad Name", Provider: "aws", Min: 4, Max: 2, ScaleDownAfter: -time.Second,
		Types: []string{"a", "a"}, Labels: map[string]string{PoolLabel: "x"}}
	err := bad.Validate()
	if err == nil {
		t.Fatal("invalid pool accepted")
	}
	for _, want := range []string{"name", "provider", "min 4 is greater than max 2", "scale_down_after", "listed twice", PoolLabel} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := EncodeCommand(&PutPool{Pool: bad}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("encode of an invalid pool: %v", err)
	}
}

func TestPoolCommandsAndSnapshot(t *testing.T) {
	f := NewFSM(NewState(), nil)
	p := Pool{Name: "p1", Provider: "local", Max: 2}
	if r := applyCmd(t, f, 1, &PutPool{Pool: p}); r.Err != nil {
		t.Fatal(r.Err)
	}
	in := Intent{Key: "p1-u1", Pool: "p1", Kind: IntentLaunch, Type: "small", Count: 1, State: IntentOpen}
	if r := applyCmd(t, f, 2, &PutIntent{Intent: in, Create: true, Event: &Event{Kind: "scale-up", Message: "m"}}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := applyCmd(t, f, 3, &PutIntent{Intent: in, Create: true}); !errors.Is(r.Err, ErrIntentExists) {
		t.Fatalf("second create of a key: %v", r.Err)
	}
	in.State = IntentDone
	if r := applyCmd(t, f, 4, &PutIntent{Intent: in}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := applyCmd(t, f, 5, &PutIntent{Intent: in}); !errors.Is(r.Err, ErrIntentClosed) {
		t.Fatalf("update of a closed intent: %v", r.Err)
	}
	for i := range MaxEvents + 5 {
		applyCmd(t, f, uint64(6+i), &AppendEvent{Event: Event{Kind: "k", Message: "m"}})
	}
	evs, _ := f.State().Events(0)
	if len(evs) != MaxEvents || evs[len(evs)-1].Seq != MaxEvents+6 {
		t.Fatalf("event ring: %d events, last seq %d", len(evs), evs[len(evs)-1].Seq)
	}
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
	pools, _ := g.State().Pools()
	ins, _ := g.State().Intents()
	evs2, _ := g.State().Events(MaxEvents)
	if len(pools) != 1 || len(ins) != 1 || ins[0].State != IntentDone || len(evs2) != 6 {
		t.Fatalf("restored: %v %v %d events", pools, ins, len(evs2))
	}
	if r := applyCmd(t, g, 2000, &DeletePool{Name: "p1"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := applyCmd(t, g, 2001, &DeletePool{Name: "p1"}); !errors.Is(r.Err, ErrNoPool) {
		t.Fatal(r.Err)
	}
}
