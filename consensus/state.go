package consensus

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"

	"github.com/hashicorp/raft"
)

// State is the cluster state every voter holds: the result of applying the
// Raft log in order. Reads return the value with the index of the table it
// came from, for blocking queries and the X-Colony-Index header.
type State struct {
	mu       sync.RWMutex
	index    uint64            // index of the last log entry applied
	tables   map[string]uint64 // table name → index of its last change
	settings map[string]Setting
	work     workState
	pools    poolState
	monitor  monitorState  // the monitoring plan (monitorplan.go)
	acl      aclState      // ACL tokens, hashed (acl.go)
	changed  chan struct{} // closed and replaced on every apply and restore
	closed   chan struct{} // closed when the Raft node holding this state stops
	closeOne sync.Once
}

// NewState returns an empty state.
func NewState() *State {
	return &State{
		tables:   map[string]uint64{},
		settings: map[string]Setting{},
		work:     newWorkState(),
		pools:    newPoolState(),
		acl:      newACLState(),
		changed:  make(chan struct{}),
		closed:   make(chan struct{}),
	}
}

// Close ends every blocking query on the state, now and later: the Raft
// node holding it has stopped, so the state will never change again and a
// query waiting on it would hang until its ?wait= ran out (clients must
// ask a live voter instead).
func (s *State) Close() {
	s.closeOne.Do(func() { close(s.closed) })
}

// Index is the Raft index of the last command applied (0 when empty).
func (s *State) Index() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index
}

// tableIndex is never 0, so a client that passes it back as ?index= waits
// instead of spinning (Consul does the same).
func (s *State) tableIndex(name string) uint64 {
	return max(s.tables[name], 1)
}

// Setting returns one setting, whether it exists, and the settings index.
func (s *State) Setting(key string) (Setting, bool, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.settings[key]
	return v, ok, s.tableIndex(tableSettings)
}

// Settings returns all settings sorted by key, and the settings index.
func (s *State) Settings() ([]Setting, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Setting, 0, len(s.settings))
	for _, k := range slices.Sorted(maps.Keys(s.settings)) {
		out = append(out, s.settings[k])
	}
	return out, s.tableIndex(tableSettings)
}

// Watch returns a channel that is closed at the next change of the state.
// Take it before reading, so that no change is missed between the read and
// the wait.
func (s *State) Watch() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed
}

// WaitForIndex returns once the state index exceeds minIndex, or with the
// current index and ctx's error when ctx ends first.
func (s *State) WaitForIndex(ctx context.Context, minIndex uint64) (uint64, error) {
	for {
		s.mu.RLock()
		idx, ch := s.index, s.changed
		s.mu.RUnlock()
		if idx > minIndex {
			return idx, nil
		}
		select {
		case <-ch:
		case <-s.closed:
			return idx, ErrShutdown
		case <-ctx.Done():
			return idx, ctx.Err()
		}
	}
}

// Blocking runs a blocking query: it returns read's result as soon as its
// index exceeds minIndex, or the latest result when ctx ends (the end of
// ?wait=, which is not an error for the client, as in Consul), or at once
// when the state is closed.
func Blocking[T any](ctx context.Context, s *State, minIndex uint64, read func() (T, uint64)) (T, uint64) {
	for {
		ch := s.Watch()
		v, idx := read()
		if idx > minIndex || minIndex == 0 {
			return v, idx
		}
		select {
		case <-ch:
		case <-s.closed:
			return read()
		case <-ctx.Done():
			return read()
		}
	}
}

// applyLocked runs one log entry. The caller holds s.mu for writing.
func (s *State) applyLocked(c Command, index uint64) (any, error) {
	v, err := c.apply(s, index)
	s.index = index
	return v, err
}

// bump wakes every waiter. The caller holds s.mu for writing.
func (s *State) bump() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// ApplyResult is what the FSM returns for a log entry (raft hands it to
// the writer through the apply future).
type ApplyResult struct {
	Value any
	Err   error
}

// FSM adapts State to raft.FSM. It needs no Raft: tests feed it
// *raft.Log values with encoded commands directly.
type FSM struct {
	state  *State
	logger *slog.Logger
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns an FSM applying to state; logger may be nil.
func NewFSM(state *State, logger *slog.Logger) *FSM {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &FSM{state: state, logger: logger}
}

// State returns the state the FSM applies to.
func (f *FSM) State() *State { return f.state }

// Apply implements raft.FSM. It returns an ApplyResult; a command that
// cannot be decoded is logged and skipped (the index still advances), so a
// bad entry cannot wedge every voter in a crash loop.
func (f *FSM) Apply(l *raft.Log) any {
	s := f.state
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.Index <= s.index {
		// Already contained in the state (replay after a restore): applying
		// again would move indexes backwards.
		return ApplyResult{Err: fmt.Errorf("log index %d already applied (state at %d)", l.Index, s.index)}
	}
	defer s.bump()
	c, err := DecodeCommand(l.Data)
	if err != nil {
		f.logger.Error("skipping raft log entry this build cannot apply; upgrade this node", "index", l.Index, "error", err)
		s.index = l.Index
		return ApplyResult{Err: err}
	}
	v, err := s.applyLocked(c, l.Index)
	return ApplyResult{Value: v, Err: err}
}

// snapshotFormatV1 is the first byte of every snapshot; a JSON document
// follows.
const snapshotFormatV1 byte = 1

// snapshotV1 is the whole state. New tables are new fields: an older
// build refuses them (unknown fields) rather than dropping them.
type snapshotV1 struct {
	Index    uint64            `json:"index"`
	Tables   map[string]uint64 `json:"tables"`
	Settings []Setting         `json:"settings"`
	Work     *workSnapshot     `json:"work,omitempty"`
	Pools    *poolSnapshot     `json:"pools,omitempty"`
	Monitor  *monitorState     `json:"monitor,omitempty"`
	ACL      *aclSnapshot      `json:"acl,omitempty"`
}

// Snapshot implements raft.FSM: it copies the state under the read lock;
// Persist then writes the copy while applies continue.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	s := f.state
	s.mu.RLock()
	defer s.mu.RUnlock()
	snap := &snapshotV1{Index: s.index, Tables: maps.Clone(s.tables), Settings: make([]Setting, 0, len(s.settings)), Work: s.work.snapshot()}
	snap.Pools = s.pools.snapshot()
	snap.Monitor = s.monitor.snapshot()
	snap.ACL = s.acl.snapshot()
	for _, k := range slices.Sorted(maps.Keys(s.settings)) {
		snap.Settings = append(snap.Settings, s.settings[k])
	}
	return &fsmSnapshot{snap: snap}, nil
}

type fsmSnapshot struct{ snap *snapshotV1 }

// Persist implements raft.FSMSnapshot.
func (f *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	w := bufio.NewWriter(sink)
	err := w.WriteByte(snapshotFormatV1)
	if err == nil {
		err = json.NewEncoder(w).Encode(f.snap)
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("write snapshot: %w", err)
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot.
func (f *fsmSnapshot) Release() {}

// Restore implements raft.FSM: it replaces the whole state with the
// snapshot's. A snapshot this build cannot read is an error, never a
// silent partial state.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	snap, err := readSnapshot(rc)
	if err != nil {
		return err
	}
	settings := make(map[string]Setting, len(snap.Settings))
	for _, st := range snap.Settings {
		settings[st.Key] = st
	}
	acl, err := snap.ACL.restore()
	if err != nil {
		return fmt.Errorf("decode snapshot: %w", err)
	}
	mon, err := snap.Monitor.restore()
	if err != nil {
		return fmt.Errorf("decode snapshot: %w", err)
	}
	tables := snap.Tables
	if tables == nil {
		tables = map[string]uint64{}
	}
	s := f.state
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index, s.tables, s.settings, s.work = snap.Index, tables, settings, snap.Work.restore()
	s.pools = snap.Pools.restore()
	s.monitor = mon
	s.acl = acl
	s.bump()
	return nil
}

func readSnapshot(r io.Reader) (*snapshotV1, error) {
	br := bufio.NewReader(r)
	v, err := br.ReadByte()
	if err != nil {
		return nil, fmt.Errorf("read snapshot header: %w", err)
	}
	if v != snapshotFormatV1 {
		return nil, fmt.Errorf("%w: %d (this build reads %d)", ErrUnknownSnapshotVersion, v, snapshotFormatV1)
	}
	dec := json.NewDecoder(br)
	dec.DisallowUnknownFields()
	var snap snapshotV1
	if err := dec.Decode(&snap); err != nil {
		return nil, fmt.Errorf("decode snapshot: %w", err)
	}
	for _, st := range snap.Settings {
		if err := ValidateSettingKey(st.Key); err != nil {
			return nil, fmt.Errorf("decode snapshot: %w", err)
		}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("decode snapshot: trailing data")
	}
	return &snap, nil
}
