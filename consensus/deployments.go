package consensus

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"colony/scaling/placement"
)

// Workload state: deployments (what the operator asked for), placements
// (which instance runs where, decided by the leader's placement engine),
// pending instances with the reasons they could not be placed, and drained
// nodes. Plans are committed before any agent acts on them, so a new
// leader continues exactly where the old one stopped.

const (
	tableDeployments = "deployments"
	tablePlacements  = "placements"
	tableNodes       = "nodes"
)

// Deployment is a stored deployment spec with its Raft indexes.
type Deployment struct {
	Spec        placement.Spec `json:"spec"`
	CreateIndex uint64         `json:"create_index"`
	ModifyIndex uint64         `json:"modify_index"`
}

// workState holds the workload tables; State embeds it.
type workState struct {
	deployments map[string]Deployment
	placements  map[string]placement.Placement
	pending     map[string]placement.Pending
	drained     map[string]bool
	// nodeIndex is, per node, the index of the last change to its
	// placements: an agent's blocking query for its own assignments wakes
	// only when they change, not on every change in the cluster.
	nodeIndex map[string]uint64
}

func newWorkState() workState {
	return workState{
		deployments: map[string]Deployment{}, placements: map[string]placement.Placement{},
		pending: map[string]placement.Pending{}, drained: map[string]bool{}, nodeIndex: map[string]uint64{},
	}
}

// Deployments returns every deployment sorted by name, and the table index.
func (s *State) Deployments() ([]Deployment, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Deployment, 0, len(s.work.deployments))
	for _, k := range slices.Sorted(maps.Keys(s.work.deployments)) {
		out = append(out, s.work.deployments[k])
	}
	return out, s.tableIndex(tableDeployments)
}

// DeploymentByName returns one deployment.
func (s *State) DeploymentByName(name string) (Deployment, bool, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	d, ok := s.work.deployments[name]
	return d, ok, s.tableIndex(tableDeployments)
}

// Placements returns the placements of one deployment ("" for all), sorted
// by ID, and the placements index.
func (s *State) Placements(deployment string) ([]placement.Placement, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]placement.Placement, 0)
	for _, k := range slices.Sorted(maps.Keys(s.work.placements)) {
		if p := s.work.placements[k]; deployment == "" || p.Deployment == deployment {
			out = append(out, p)
		}
	}
	return out, s.tableIndex(tablePlacements)
}

// NodePlacements returns the placements on one node with the index of the
// last change to them (never 0).
func (s *State) NodePlacements(nodeID string) ([]placement.Placement, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]placement.Placement, 0)
	for _, k := range slices.Sorted(maps.Keys(s.work.placements)) {
		if p := s.work.placements[k]; p.NodeID == nodeID {
			out = append(out, p)
		}
	}
	return out, max(s.work.nodeIndex[nodeID], 1)
}

// NodeIndex returns the index of the last change to a node's placements
// (at least 1), the index NodePlacements answers with, without building
// them: a blocking query wakes at every Raft apply and reads this first.
func (s *State) NodeIndex(nodeID string) uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return max(s.work.nodeIndex[nodeID], 1)
}

// Pending returns the pending instances per deployment.
func (s *State) Pending() (map[string]placement.Pending, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return maps.Clone(s.work.pending), s.tableIndex(tablePlacements)
}

// Drained returns the IDs of drained nodes.
func (s *State) Drained() (map[string]bool, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return maps.Clone(s.work.drained), s.tableIndex(tableNodes)
}

// PutDeployment creates or replaces a deployment.
type PutDeployment struct {
	Spec placement.Spec `json:"spec"`
}

// CommandType implements Command.
func (*PutDeployment) CommandType() CommandType { return CmdPutDeployment }

// Validate implements Command: every problem in the spec, with field paths.
func (c *PutDeployment) Validate() error { return c.Spec.Validate() }

func (c *PutDeployment) apply(s *State, index uint64) (any, error) {
	d, ok := s.work.deployments[c.Spec.Name]
	if !ok {
		d.CreateIndex = index
	}
	d.Spec, d.ModifyIndex = c.Spec, index
	s.work.deployments[c.Spec.Name] = d
	s.tables[tableDeployments] = index
	// The nodes running it must see the new command and restart policy.
	for _, p := range s.work.placements {
		if p.Deployment == c.Spec.Name {
			s.work.nodeIndex[p.NodeID] = index
		}
	}
	return d, nil
}

// ErrNoDeployment is returned for a command naming an unknown deployment.
var ErrNoDeployment = errors.New("no such deployment")

// ScaleDeployment changes a deployment's instance count.
type ScaleDeployment struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

// CommandType implements Command.
func (*ScaleDeployment) CommandType() CommandType { return CmdScaleDeployment }

// Validate implements Command.
func (c *ScaleDeployment) Validate() error {
	if err := placement.ValidateName(c.Name); err != nil {
		return err
	}
	if c.Count < 0 || c.Count > placement.MaxCount {
		return fmt.Errorf("count %d out of range 0-%d", c.Count, placement.MaxCount)
	}
	return nil
}

func (c *ScaleDeployment) apply(s *State, index uint64) (any, error) {
	d, ok := s.work.deployments[c.Name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNoDeployment, c.Name)
	}
	d.Spec.Count, d.ModifyIndex = c.Count, index
	s.work.deployments[c.Name] = d
	s.tables[tableDeployments] = index
	return d, nil
}

// DeleteDeployment removes a deployment; the leader then stops its instances.
type DeleteDeployment struct {
	Name string `json:"name"`
}

// CommandType implements Command.
func (*DeleteDeployment) CommandType() CommandType { return CmdDeleteDeployment }

// Validate implements Command.
func (c *DeleteDeployment) Validate() error { return placement.ValidateName(c.Name) }

func (c *DeleteDeployment) apply(s *State, index uint64) (any, error) {
	if _, ok := s.work.deployments[c.Name]; !ok {
		return nil, fmt.Errorf("%w: %q", ErrNoDeployment, c.Name)
	}
	delete(s.work.deployments, c.Name)
	delete(s.work.pending, c.Name)
	s.tables[tableDeployments] = index
	return nil, nil
}

// SetDrain marks a node drained (its instances move away, it gets no new
// ones) or not.
type SetDrain struct {
	NodeID string `json:"node_id"`
	Drain  bool   `json:"drain"`
}

// CommandType implements Command.
func (*SetDrain) CommandType() CommandType { return CmdSetDrain }

// Validate implements Command.
func (c *SetDrain) Validate() error {
	if c.NodeID == "" || len(c.NodeID) > 64 {
		return errors.New("node ID must be 1-64 characters")
	}
	return nil
}

func (c *SetDrain) apply(s *State, index uint64) (any, error) {
	if c.Drain {
		s.work.drained[c.NodeID] = true
	} else {
		delete(s.work.drained, c.NodeID)
	}
	s.tables[tableNodes] = index
	return nil, nil
}

// ApplyPlan commits one placement plan. BaseIndex is the placements index
// the plan was computed from: if placements changed since (another plan
// won the race), the plan is refused, identically on every voter, and the
// leader plans again from the new state.
type ApplyPlan struct {
	BaseIndex uint64                `json:"base_index"`
	Place     []placement.Placement `json:"place,omitempty"`
	Stop      []string              `json:"stop,omitempty"` // placement IDs
	Pending   []placement.Pending   `json:"pending,omitempty"`
}

// MaxPlanChanges bounds the placements plus stops one ApplyPlan command
// carries. A placement encodes to at most about 350 bytes (63-character
// deployment name, UUID node ID), so 1,000 of them stay well inside
// MaxCommandSize; one instance on each of 10,000 nodes is ten commands.
const MaxPlanChanges = 1000

// Split cuts a plan into commands of at most MaxPlanChanges changes each,
// stops first (they free the resources the placements may need). Each part
// is a consistent change on its own, so a leader that loses its lease
// between parts leaves a cluster with some of the plan applied, which the
// next leader's planning completes. Every part carries the whole pending
// list. The first part keeps c.BaseIndex; each later part must get the
// index the previous one was committed at (see Node.ApplyPlan).
func (c *ApplyPlan) Split() []*ApplyPlan {
	if len(c.Stop)+len(c.Place) <= MaxPlanChanges {
		return []*ApplyPlan{c}
	}
	var parts []*ApplyPlan
	part := &ApplyPlan{BaseIndex: c.BaseIndex, Pending: c.Pending}
	room := func() {
		if len(part.Stop)+len(part.Place) == MaxPlanChanges {
			parts = append(parts, part)
			part = &ApplyPlan{Pending: c.Pending}
		}
	}
	for _, id := range c.Stop {
		part.Stop = append(part.Stop, id)
		room()
	}
	for _, p := range c.Place {
		part.Place = append(part.Place, p)
		room()
	}
	if len(part.Stop)+len(part.Place) > 0 {
		parts = append(parts, part)
	}
	return parts
}

// ApplyPlan commits a placement plan of any size: one command, or the
// parts of c.Split() one after the other, each based on the index the
// previous part was committed at. It returns how many parts were committed
// and stops at the first error (ErrStalePlan when placements changed under
// it: the caller plans again).
func (n *Node) ApplyPlan(ctx context.Context, c *ApplyPlan) (int, error) {
	base := c.BaseIndex
	parts := c.Split()
	for i, part := range parts {
		part.BaseIndex = base
		idx, _, err := n.Apply(ctx, part)
		if err != nil {
			return i, fmt.Errorf("placement plan part %d of %d: %w", i+1, len(parts), err)
		}
		base = idx
	}
	return len(parts), nil
}

// ErrStalePlan means a plan was computed from an older state.
var ErrStalePlan = errors.New("plan computed from an outdated state")

// CommandType implements Command.
func (*ApplyPlan) CommandType() CommandType { return CmdApplyPlan }

// Validate implements Command.
func (c *ApplyPlan) Validate() error {
	for _, p := range c.Place {
		if p.ID == "" || p.NodeID == "" || p.Deployment == "" {
			return fmt.Errorf("placement %+v: id, node and deployment are required", p)
		}
	}
	return nil
}

func (c *ApplyPlan) apply(s *State, index uint64) (any, error) {
	if c.BaseIndex != s.tableIndex(tablePlacements) {
		return nil, fmt.Errorf("%w: made at placements index %d, now %d", ErrStalePlan, c.BaseIndex, s.tableIndex(tablePlacements))
	}
	for _, id := range c.Stop {
		if p, ok := s.work.placements[id]; ok {
			s.work.nodeIndex[p.NodeID] = index
			delete(s.work.placements, id)
		}
	}
	for _, p := range c.Place {
		s.work.placements[p.ID] = p
		s.work.nodeIndex[p.NodeID] = index
	}
	s.work.pending = make(map[string]placement.Pending, len(c.Pending))
	for _, p := range c.Pending {
		s.work.pending[p.Deployment] = p
	}
	s.tables[tablePlacements] = index
	return nil, nil
}

// workSnapshot is the workload part of a snapshot.
type workSnapshot struct {
	Deployments []Deployment          `json:"deployments,omitempty"`
	Placements  []placement.Placement `json:"placements,omitempty"`
	Pending     []placement.Pending   `json:"pending,omitempty"`
	Drained     []string              `json:"drained,omitempty"`
	NodeIndex   map[string]uint64     `json:"node_index,omitempty"`
}

func (w *workState) snapshot() *workSnapshot {
	out := &workSnapshot{NodeIndex: maps.Clone(w.nodeIndex)}
	for _, k := range slices.Sorted(maps.Keys(w.deployments)) {
		out.Deployments = append(out.Deployments, w.deployments[k])
	}
	for _, k := range slices.Sorted(maps.Keys(w.placements)) {
		out.Placements = append(out.Placements, w.placements[k])
	}
	for _, k := range slices.Sorted(maps.Keys(w.pending)) {
		out.Pending = append(out.Pending, w.pending[k])
	}
	out.Drained = slices.Sorted(maps.Keys(w.drained))
	return out
}

func (ws *workSnapshot) restore() workState {
	w := newWorkState()
	if ws == nil {
		return w
	}
	for _, d := range ws.Deployments {
		w.deployments[d.Spec.Name] = d
	}
	for _, p := range ws.Placements {
		w.placements[p.ID] = p
	}
	for _, p := range ws.Pending {
		w.pending[p.Deployment] = p
	}
	for _, id := range ws.Drained {
		w.drained[id] = true
	}
	maps.Copy(w.nodeIndex, ws.NodeIndex)
	return w
}
