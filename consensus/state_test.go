package consensus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func mustEncode(t *testing.T, c Command) []byte {
	t.Helper()
	b, err := EncodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// memSink is a raft.SnapshotSink over a buffer.
type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { return nil }

func TestFSMWithoutRaft(t *testing.T) {
	fsm := NewFSM(NewState(), nil)
	st := fsm.State()
	if _, idx := st.Settings(); idx != 1 {
		t.Fatalf("empty settings index %d, want 1 (never 0)", idx)
	}
	r := fsm.Apply(&raft.Log{Index: 3, Data: mustEncode(t, &SetSetting{Key: "a", Value: "1"})}).(ApplyResult)
	if r.Err != nil || r.Value.(Setting).CreateIndex != 3 {
		t.Fatalf("apply: %+v", r)
	}
	fsm.Apply(&raft.Log{Index: 4, Data: mustEncode(t, &SetSetting{Key: "a", Value: "2"})})
	s, ok, idx := st.Setting("a")
	if !ok || s.Value != "2" || s.CreateIndex != 3 || s.ModifyIndex != 4 || idx != 4 {
		t.Fatalf("after update: %+v %v @%d", s, ok, idx)
	}
	// A garbled entry is skipped, but the index still moves.
	r = fsm.Apply(&raft.Log{Index: 5, Data: []byte{7, 7, 7}}).(ApplyResult)
	if !errors.Is(r.Err, ErrUnknownCommandVersion) || st.Index() != 5 {
		t.Fatalf("garbled entry: %+v, index %d", r, st.Index())
	}
	// Replays of applied entries are refused and change nothing.
	r = fsm.Apply(&raft.Log{Index: 4, Data: mustEncode(t, &SetSetting{Key: "a", Value: "old"})}).(ApplyResult)
	if r.Err == nil || st.Index() != 5 {
		t.Fatalf("replay: %+v", r)
	}
	// Deleting a missing key does not move the settings index.
	fsm.Apply(&raft.Log{Index: 6, Data: mustEncode(t, &DeleteSetting{Key: "missing"})})
	if _, idx := st.Settings(); idx != 4 {
		t.Fatalf("settings index moved to %d on a no-op delete", idx)
	}
	r = fsm.Apply(&raft.Log{Index: 7, Data: mustEncode(t, &DeleteSetting{Key: "a"})}).(ApplyResult)
	if !r.Value.(DeleteResult).Existed {
		t.Fatalf("delete: %+v", r)
	}
	if _, ok, idx := st.Setting("a"); ok || idx != 7 {
		t.Fatalf("after delete: present %v @%d", ok, idx)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	fsm := NewFSM(NewState(), nil)
	for i := range 10 {
		fsm.Apply(&raft.Log{Index: uint64(i + 1), Data: mustEncode(t, &SetSetting{Key: fmt.Sprintf("k%d", i), Value: fmt.Sprint(i)})})
	}
	snap, err := fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Writes after the snapshot is taken do not leak into it.
	fsm.Apply(&raft.Log{Index: 11, Data: mustEncode(t, &SetSetting{Key: "late", Value: "x"})})
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if sink.Bytes()[0] != snapshotFormatV1 {
		t.Fatalf("snapshot header %d", sink.Bytes()[0])
	}

	other := NewFSM(NewState(), nil)
	watch := other.State().Watch()
	if err := other.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-watch:
	default:
		t.Fatal("restore did not wake watchers")
	}
	got, idx := other.State().Settings()
	want, _ := fsm.State().Settings()
	want = slices.DeleteFunc(want, func(s Setting) bool { return s.Key == "late" })
	if !slices.Equal(got, want) || idx != 10 || other.State().Index() != 10 {
		t.Fatalf("restored %v @%d", got, idx)
	}

	for name, data := range map[string][]byte{
		"empty":         {},
		"version 9":     append([]byte{9}, sink.Bytes()[1:]...),
		"truncated":     sink.Bytes()[:sink.Len()/2],
		"unknown table": append([]byte{1}, []byte(`{"index":1,"deployments":[]}`)...),
		"bad key":       append([]byte{1}, []byte(`{"index":1,"settings":[{"key":"a b"}]}`)...),
	} {
		if err := other.Restore(io.NopCloser(bytes.NewReader(data))); err == nil {
			t.Errorf("%s snapshot restored", name)
		}
	}
	// A failed restore leaves the state as it was.
	if got, _ := other.State().Settings(); len(got) != 10 {
		t.Fatalf("failed restore changed the state: %d settings", len(got))
	}
}

func TestWaitForIndexAndBlocking(t *testing.T) {
	fsm := NewFSM(NewState(), nil)
	st := fsm.State()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()

	done := make(chan uint64)
	go func() {
		v, _ := Blocking(ctx, st, 1, func() ([]Setting, uint64) { return st.Settings() })
		done <- uint64(len(v))
	}()
	idxCh := make(chan uint64)
	go func() {
		idx, _ := st.WaitForIndex(ctx, 1)
		idxCh <- idx
	}()
	fsm.Apply(&raft.Log{Index: 1, Data: mustEncode(t, &SetSetting{Key: "a", Value: "1"})})
	// Index 1 does not exceed 1: both keep waiting until index 2.
	fsm.Apply(&raft.Log{Index: 2, Data: mustEncode(t, &SetSetting{Key: "b", Value: "2"})})
	if n := <-done; n != 2 {
		t.Fatalf("blocking query returned %d settings", n)
	}
	if idx := <-idxCh; idx != 2 {
		t.Fatalf("WaitForIndex returned %d", idx)
	}

	// The end of ?wait= returns the current value, not an error.
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	v, idx := Blocking(short, st, 100, func() ([]Setting, uint64) { return st.Settings() })
	if len(v) != 2 || idx != 2 {
		t.Fatalf("timed-out blocking query: %d settings @%d", len(v), idx)
	}
	if _, err := st.WaitForIndex(short, 100); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitForIndex after deadline: %v", err)
	}
}
