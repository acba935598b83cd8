package consensus

import (
	"encoding/json"
	"errors"
	"fmt"

	"colony/scaling/monitor"
)

// tableMonitor is the monitoring plan's table: its index changes only when
// the leader commits a new plan, so nodes' blocking queries on it sleep
// through everything else.
const tableMonitor = "monitor"

// SetMonitorPlan commits the monitoring tree computed by the leader
// (scaling/monitor.ComputePlan). The plan is kept as the leader encoded it,
// so every node reads byte-identical JSON. The leader commits only when the
// plan changes. A plan costs about 80 bytes a node with UUID IDs, so past
// roughly 6,000 nodes it no longer fits MaxCommandSize: splitting it (or
// committing only the members and letting every node compute the tree) is
// left for later.
type SetMonitorPlan struct {
	Plan json.RawMessage `json:"plan"`
}

// CommandType implements Command.
func (*SetMonitorPlan) CommandType() CommandType { return CmdSetMonitorPlan }

// Validate implements Command: the plan must decode and keep the tree's
// invariants, so a node never follows a broken tree.
func (c *SetMonitorPlan) Validate() error {
	if len(c.Plan) == 0 {
		return errors.New("plan is empty")
	}
	var p monitor.Plan
	if err := json.Unmarshal(c.Plan, &p); err != nil {
		return fmt.Errorf("plan: %w", err)
	}
	if err := p.Check(); err != nil {
		return fmt.Errorf("plan: %w", err)
	}
	return nil
}

func (c *SetMonitorPlan) apply(s *State, index uint64) (any, error) {
	s.monitor = monitorState{Plan: append(json.RawMessage(nil), c.Plan...), Index: index}
	s.tables[tableMonitor] = index
	return nil, nil
}

// monitorState is the monitoring part of the state (and of a snapshot).
type monitorState struct {
	Plan  json.RawMessage `json:"plan,omitempty"`
	Index uint64          `json:"index,omitempty"`
}

func (m monitorState) snapshot() *monitorState {
	if len(m.Plan) == 0 {
		return nil
	}
	return &m
}

func (m *monitorState) restore() monitorState {
	if m == nil {
		return monitorState{}
	}
	return *m
}

// MonitorPlan returns the committed monitoring plan's JSON (nil if none
// yet), the index it was committed at, and the table index for blocking
// queries.
func (s *State) MonitorPlan() (json.RawMessage, uint64, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.monitor.Plan, s.monitor.Index, s.tableIndex(tableMonitor)
}
