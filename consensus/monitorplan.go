package consensus

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"

	"colony/scaling/monitor"
)

// tableMonitor is the monitoring plan's table: its index changes only when
// the leader commits a new plan, so nodes' blocking queries on it sleep
// through everything else.
const tableMonitor = "monitor"

// Size bounds of the monitoring plan. A plan costs about 80 bytes a node
// with UUID IDs: 0.8 MB at 10,000 nodes, 1.6 MB at 20,000.
const (
	// MaxMonitorPlanBytes bounds a plan's JSON (about 200,000 nodes). Nodes
	// fetching the plan over HTTP may read this much.
	MaxMonitorPlanBytes = 16 << 20
	// MonitorPlanInlineBytes is the largest plan committed as one
	// SetMonitorPlan; larger ones go in parts. It is well below
	// MaxCommandSize so that no single Raft entry holds up replication for
	// long, and so that clusters below ~3,000 nodes never write the newer
	// SetMonitorPlanPart (voters of the previous release skip it).
	MonitorPlanInlineBytes = 256 << 10
	// MaxMonitorPlanPartBytes bounds the data of one SetMonitorPlanPart:
	// base64 in the JSON body makes it 4/3 larger, still under
	// MaxCommandSize.
	MaxMonitorPlanPartBytes = 256 << 10
	// MaxMonitorPlanParts bounds Total: enough parts for
	// MaxMonitorPlanBytes even if compression gained nothing.
	MaxMonitorPlanParts = MaxMonitorPlanBytes / MaxMonitorPlanPartBytes
)

// SetMonitorPlan commits the monitoring tree computed by the leader
// (scaling/monitor.ComputePlan). The plan is kept as the leader encoded it,
// so every node reads byte-identical JSON. The leader commits only when the
// plan changes. A plan larger than MonitorPlanInlineBytes (about 3,000
// nodes) is committed as SetMonitorPlanPart commands instead; both install
// the plan the same way. See CommitMonitorPlan.
type SetMonitorPlan struct {
	Plan json.RawMessage `json:"plan"`
}

// CommandType implements Command.
func (*SetMonitorPlan) CommandType() CommandType { return CmdSetMonitorPlan }

// Validate implements Command: the plan must decode and keep the tree's
// invariants, so a node never follows a broken tree.
func (c *SetMonitorPlan) Validate() error {
	return checkPlan(c.Plan)
}

func checkPlan(raw []byte) error {
	if len(raw) == 0 {
		return errors.New("plan is empty")
	}
	if len(raw) > MaxMonitorPlanBytes {
		return fmt.Errorf("plan is %d bytes, more than %d", len(raw), MaxMonitorPlanBytes)
	}
	var p monitor.Plan
	if err := json.Unmarshal(raw, &p); err != nil {
		return fmt.Errorf("plan: %w", err)
	}
	if err := p.Check(); err != nil {
		return fmt.Errorf("plan: %w", err)
	}
	return nil
}

func (c *SetMonitorPlan) apply(s *State, index uint64) (any, error) {
	s.installMonitorPlan(append(json.RawMessage(nil), c.Plan...), index)
	return nil, nil
}

// installMonitorPlan makes plan the committed one. A complete plan also
// ends any staging: whatever was being staged is older than this plan.
func (s *State) installMonitorPlan(plan json.RawMessage, index uint64) {
	s.monitor = monitorState{Plan: plan, Index: index}
	s.tables[tableMonitor] = index
}

// SetMonitorPlanPart carries one slice of a plan too large for one Raft
// entry. The leader deflates the plan's JSON (compress/flate), cuts the
// result into Total slices of at most MaxMonitorPlanPartBytes and commits
// them in order, Seq 0 to Total-1, all with the same Stage, a non-zero ID
// it picks at random for this plan.
//
// The FSM keeps the slices in a staging area of the state; nodes keep
// reading the previous plan meanwhile (the monitor table does not move).
// The last part inflates the staged bytes, checks the plan like
// SetMonitorPlan and installs it in the same way, at that part's index, so
// a blocking query wakes once per plan. Seq 0 always starts a new staging
// and discards one in progress: a new leader, or a leader retrying after a
// failed write, starts over. Any other part must continue the staging in
// progress (same Stage and Total, the next Seq), otherwise it is refused
// and the staging is left as it was. Raft's log order makes those refusals
// rare: parts of a deposed leader that got committed all come before the
// new leader's first entry.
type SetMonitorPlanPart struct {
	Stage uint64 `json:"stage"`
	Seq   int    `json:"seq"`
	Total int    `json:"total"`
	Data  []byte `json:"data"`
}

// CommandType implements Command.
func (*SetMonitorPlanPart) CommandType() CommandType { return CmdSetMonitorPlanPart }

// Validate implements Command: everything that can be checked on one part.
func (c *SetMonitorPlanPart) Validate() error {
	switch {
	case c.Stage == 0:
		return errors.New("stage id is 0")
	case c.Total < 1 || c.Total > MaxMonitorPlanParts:
		return fmt.Errorf("total %d parts, want 1 to %d", c.Total, MaxMonitorPlanParts)
	case c.Seq < 0 || c.Seq >= c.Total:
		return fmt.Errorf("part %d of %d out of range", c.Seq, c.Total)
	case len(c.Data) == 0:
		return fmt.Errorf("part %d of %d is empty", c.Seq, c.Total)
	case len(c.Data) > MaxMonitorPlanPartBytes:
		return fmt.Errorf("part %d of %d is %d bytes, more than %d", c.Seq, c.Total, len(c.Data), MaxMonitorPlanPartBytes)
	}
	return nil
}

func (c *SetMonitorPlanPart) apply(s *State, index uint64) (any, error) {
	st := s.monitor.Staging
	if c.Seq == 0 {
		st = &planStaging{Stage: c.Stage, Total: c.Total}
		s.monitor.Staging = st
	} else {
		switch {
		case st == nil:
			return nil, fmt.Errorf("monitor plan stage %x part %d: no staging in progress", c.Stage, c.Seq)
		case st.Stage != c.Stage:
			return nil, fmt.Errorf("monitor plan stage %x part %d: stage %x is in progress", c.Stage, c.Seq, st.Stage)
		case st.Total != c.Total:
			return nil, fmt.Errorf("monitor plan stage %x part %d: total %d, staging has %d", c.Stage, c.Seq, c.Total, st.Total)
		case st.Next != c.Seq:
			return nil, fmt.Errorf("monitor plan stage %x: part %d arrived, part %d expected", c.Stage, c.Seq, st.Next)
		}
	}
	// A new array on every part: a snapshot in flight may hold the old one.
	st.Data = append(st.Data[:len(st.Data):len(st.Data)], c.Data...)
	st.Next++
	if st.Next < st.Total {
		return nil, nil
	}
	s.monitor.Staging = nil
	plan, err := inflatePlan(st.Data)
	if err == nil {
		err = checkPlan(plan)
	}
	if err != nil {
		return nil, fmt.Errorf("monitor plan stage %x (%d parts): %w", c.Stage, c.Total, err)
	}
	s.installMonitorPlan(plan, index)
	return nil, nil
}

// inflatePlan undoes the leader's deflate, refusing output past
// MaxMonitorPlanBytes (a small part must not inflate into gigabytes).
func inflatePlan(data []byte) (json.RawMessage, error) {
	r := flate.NewReader(bytes.NewReader(data))
	defer r.Close()
	out, err := io.ReadAll(io.LimitReader(r, MaxMonitorPlanBytes+1))
	if err != nil {
		return nil, fmt.Errorf("inflate plan: %w", err)
	}
	if len(out) > MaxMonitorPlanBytes {
		return nil, fmt.Errorf("plan inflates past %d bytes", MaxMonitorPlanBytes)
	}
	return out, nil
}

// MonitorPlanCommands returns the commands that commit plan, in order: one
// SetMonitorPlan when the plan is at most MonitorPlanInlineBytes, else
// SetMonitorPlanParts of the deflated plan with a fresh stage ID. Each
// command is validated; the assembled plan is checked here too, so a plan
// the FSM would refuse at the last part is refused before the first.
func MonitorPlanCommands(plan json.RawMessage) ([]Command, error) {
	if err := checkPlan(plan); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidCommand, err)
	}
	if len(plan) <= MonitorPlanInlineBytes {
		return []Command{&SetMonitorPlan{Plan: plan}}, nil
	}
	var buf bytes.Buffer
	w, err := flate.NewWriter(&buf, flate.BestSpeed)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(plan); err != nil {
		return nil, fmt.Errorf("deflate plan: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("deflate plan: %w", err)
	}
	data := buf.Bytes()
	total := (len(data) + MaxMonitorPlanPartBytes - 1) / MaxMonitorPlanPartBytes
	stage := rand.Uint64() | 1 // never 0
	cmds := make([]Command, 0, total)
	for seq := range total {
		part := &SetMonitorPlanPart{Stage: stage, Seq: seq, Total: total,
			Data: data[seq*MaxMonitorPlanPartBytes : min(len(data), (seq+1)*MaxMonitorPlanPartBytes)]}
		if err := part.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidCommand, err)
		}
		cmds = append(cmds, part)
	}
	return cmds, nil
}

// CommitMonitorPlan commits plan through Raft (leader only) as
// MonitorPlanCommands splits it, waiting for each command in turn. It
// returns the index of the last one, where the plan is installed, and how
// many commands it took. If it fails part way, the staged parts are left
// behind harmlessly: the previous plan stays in force and the next commit
// starts a new staging.
func (n *Node) CommitMonitorPlan(ctx context.Context, plan json.RawMessage) (uint64, int, error) {
	cmds, err := MonitorPlanCommands(plan)
	if err != nil {
		return 0, 0, err
	}
	var index uint64
	for i, c := range cmds {
		idx, _, err := n.Apply(ctx, c)
		if err != nil {
			return 0, i, fmt.Errorf("commit monitoring plan, command %d of %d: %w", i+1, len(cmds), err)
		}
		index = idx
	}
	return index, len(cmds), nil
}

// monitorState is the monitoring part of the state (and of a snapshot).
//
// Staging is part of the snapshot on purpose: Raft may compact the log
// right after a snapshot taken between two parts, and a voter restored
// from it must still complete the plan from the parts that follow,
// exactly as the voters that applied every part did; dropping it would
// let voters' states diverge. When no staging is in progress the field is
// absent, so such snapshots read as before.
type monitorState struct {
	Plan    json.RawMessage `json:"plan,omitempty"`
	Index   uint64          `json:"index,omitempty"`
	Staging *planStaging    `json:"staging,omitempty"`
}

// planStaging is a plan being committed in parts.
type planStaging struct {
	Stage uint64 `json:"stage"`
	Total int    `json:"total"`
	Next  int    `json:"next"` // parts staged so far: the next Seq expected
	Data  []byte `json:"data"` // the parts' data, concatenated
}

func (m monitorState) snapshot() *monitorState {
	if len(m.Plan) == 0 && m.Staging == nil {
		return nil
	}
	if m.Staging != nil {
		st := *m.Staging
		m.Staging = &st
	}
	return &m
}

func (m *monitorState) restore() (monitorState, error) {
	if m == nil {
		return monitorState{}, nil
	}
	if st := m.Staging; st != nil {
		if st.Stage == 0 || st.Total < 1 || st.Total > MaxMonitorPlanParts || st.Next < 1 || st.Next >= st.Total ||
			len(st.Data) < st.Next || len(st.Data) > st.Next*MaxMonitorPlanPartBytes {
			return monitorState{}, fmt.Errorf("monitor plan staging: stage %x, %d of %d parts, %d bytes is not consistent", st.Stage, st.Next, st.Total, len(st.Data))
		}
	}
	return *m, nil
}

// MonitorPlan returns the committed monitoring plan's JSON (nil if none
// yet), the index it was committed at, and the table index for blocking
// queries.
func (s *State) MonitorPlan() (json.RawMessage, uint64, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.monitor.Plan, s.monitor.Index, s.tableIndex(tableMonitor)
}

// MonitorPlanStaging reports a plan being committed in parts: its stage ID,
// the parts staged so far and the total (all 0 when none).
func (s *State) MonitorPlanStaging() (stage uint64, staged, total int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if st := s.monitor.Staging; st != nil {
		return st.Stage, st.Next, st.Total
	}
	return 0, 0, 0
}
