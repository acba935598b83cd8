package consensus

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"

	"github.com/hashicorp/raft"

	"colony/scaling/monitor"
)

func TestMonitorPlanApplyAndSnapshot(t *testing.T) {
	p, err := monitor.ComputePlan([]monitor.Member{{ID: "a", Alive: true}, {ID: "b", Alive: true}, {ID: "c", Alive: true}}, monitor.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(p)
	if _, err := EncodeCommand(&SetMonitorPlan{Plan: json.RawMessage(`{"root":"x","parents":{"y":"z"}}`)}); err == nil {
		t.Fatal("a broken plan was accepted")
	}
	if _, err := EncodeCommand(&SetMonitorPlan{}); err == nil {
		t.Fatal("an empty plan was accepted")
	}
	fsm := NewFSM(NewState(), nil)
	if got, _, _ := fsm.State().MonitorPlan(); got != nil {
		t.Fatalf("plan before any commit: %s", got)
	}
	fsm.Apply(&raft.Log{Index: 1, Data: mustEncode(t, &SetSetting{Key: "k", Value: "v"})})
	fsm.Apply(&raft.Log{Index: 2, Data: mustEncode(t, &SetMonitorPlan{Plan: raw})})
	got, at, idx := fsm.State().MonitorPlan()
	if !bytes.Equal(got, raw) || at != 2 || idx != 2 {
		t.Fatalf("plan %s at %d idx %d", got, at, idx)
	}
	snap, err := fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	other := NewFSM(NewState(), nil)
	if err := other.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got, at, _ := other.State().MonitorPlan(); !bytes.Equal(got, raw) || at != 2 {
		t.Fatalf("restored plan %s at %d", got, at)
	}
}
