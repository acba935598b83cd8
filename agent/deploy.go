package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"colony/consensus"
	"colony/gossip"
	"colony/scaling/placement"
)

// Placement on the leader: every tick it runs the placement engine over the
// committed deployments and placements and the gossip membership, and
// commits the resulting plan (placements to add and to stop, pending
// instances with their reasons) before any agent acts on it.

// placementNodes turns the gossip view into the engine's nodes: alive and
// suspect members are eligible (draining when drained), dead ones down, and
// members that left are absent (their instances move).
func (a *Agent) placementNodes(drained map[string]bool) []placement.Node {
	ms := a.gossip.Members()
	out := make([]placement.Node, 0, len(ms))
	for _, m := range ms {
		if m.Status == gossip.StatusLeft {
			continue
		}
		id := m.Meta.ID.String()
		n := placement.Node{
			ID: id, Name: m.Name, Status: placement.StatusEligible, Labels: m.Meta.Labels,
			Attributes: map[string]string{
				placement.AttrOS: m.Meta.OS, placement.AttrArch: m.Meta.Arch,
				placement.AttrKernel: m.Meta.Kernel, placement.AttrAgentVersion: m.Meta.AgentVersion,
			},
			Capacity: placement.Resources{CPUMillis: int64(m.Meta.CPUs) * 1000, MemoryMiB: int64(m.Meta.MemoryMiB)},
		}
		switch {
		case m.Status == gossip.StatusDead:
			n.Status = placement.StatusDown
		case drained[id]:
			n.Status = placement.StatusDraining
		}
		out = append(out, n)
	}
	return out
}

// placeTick runs one round of placement on the leader.
func (a *Agent) placeTick(n *consensus.Node) {
	st := n.State()
	deps, _ := st.Deployments()
	current, base := st.Placements("")
	if len(deps) == 0 && len(current) == 0 {
		return
	}
	drained, _ := st.Drained()
	specs := make([]*placement.Spec, 0, len(deps))
	for i := range deps {
		specs = append(specs, &deps[i].Spec)
	}
	res := placement.Plan(placement.Input{Nodes: a.placementNodes(drained), Placements: current, Deployments: specs})
	pending, _ := st.Pending()
	if res.Empty() && samePending(pending, res.Pending) {
		return
	}
	plan := &consensus.ApplyPlan{BaseIndex: base, Place: res.Place, Pending: res.Pending}
	for _, s := range res.Stop {
		plan.Stop = append(plan.Stop, s.Placement.ID)
	}
	ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	defer cancel()
	if parts, err := n.ApplyPlan(ctx, plan); err != nil {
		if !errors.Is(err, consensus.ErrStalePlan) {
			a.logger.Warn("placement plan not committed; will plan again", "subsystem", "placement", "committed_parts", parts, "error", err)
		}
		return
	}
	if len(res.Place)+len(res.Stop) > 0 {
		a.logger.Info("placement plan committed", "subsystem", "placement", "placed", len(res.Place), "stopped", len(res.Stop), "pending_deployments", len(res.Pending))
	}
}

func samePending(have map[string]placement.Pending, want []placement.Pending) bool {
	if len(have) != len(want) {
		return false
	}
	for _, p := range want {
		h, ok := have[p.Deployment]
		if !ok {
			return false
		}
		a, _ := json.Marshal(h)
		b, _ := json.Marshal(p)
		if !bytes.Equal(a, b) {
			return false
		}
	}
	return true
}

// DeploymentInfo is one deployment in API answers.
type DeploymentInfo struct {
	Name        string             `json:"name"`
	Count       int                `json:"count"`
	Placed      int                `json:"placed"`
	Pending     *placement.Pending `json:"pending,omitempty"`
	Spec        placement.Spec     `json:"spec"`
	CreateIndex uint64             `json:"create_index"`
	ModifyIndex uint64             `json:"modify_index"`
}

// DeploymentDetail is GET /v1/deployments/{name}.
type DeploymentDetail struct {
	DeploymentInfo
	Placements []PlacementInfo `json:"placements"`
}

// PlacementInfo is a placement with the name of its node.
type PlacementInfo struct {
	placement.Placement
	NodeName string `json:"node_name"`
}

// SpecError is the answer to an invalid deployment spec: every problem.
type SpecError struct {
	Error  string                 `json:"error"`
	Errors []placement.FieldError `json:"errors"`
}

func (a *Agent) deployRoutes(r *router) {
	r.handle("GET", "/v1/deployments", AccessRead, a.handleDeployments)
	r.handle("PUT", "/v1/deployments", AccessDeploy, a.handleDeploy)
	r.handle("GET", "/v1/deployments/{name}", AccessRead, a.handleDeployment)
	r.handle("DELETE", "/v1/deployments/{name}", AccessDeploy, a.handleDeploymentDelete)
	r.handle("PUT", "/v1/deployments/{name}/scale", AccessDeploy, a.handleScale)
	r.handle("PUT", "/v1/nodes/{node}/drain", AccessOperator, a.handleDrain(true))
	r.handle("DELETE", "/v1/nodes/{node}/drain", AccessOperator, a.handleDrain(false))
	r.handle("GET", "/v1/placements", AccessRead, a.handlePlacements)
	r.handle("GET", "/v1/assignments", AccessRead, a.handleAssignments)
	r.handle("GET", "/v1/deployments/{name}/instances", AccessRead, a.handleDeploymentInstances)
	r.handle("GET", "/v1/instances/{id}/logs", AccessRead, a.handleLogs)
	r.handle("GET", "/v1/agent/instances", AccessRead, a.handleInstances)
	r.handle("GET", "/v1/agent/instances/{id}/logs", AccessRead, a.handleInstanceLogs)
}

func (a *Agent) handleDeploy(w http.ResponseWriter, r *http.Request) {
	n, ok := a.routeWrite(w, r)
	if !ok {
		return
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("deployment spec over %d bytes", maxBodyBytes))
		return
	}
	spec, err := placement.ParseSpec(b)
	if err != nil {
		var verr *placement.ValidationError
		if errors.As(err, &verr) {
			writeJSON(w, http.StatusBadRequest, SpecError{Error: err.Error(), Errors: verr.Errors})
			return
		}
		writeError(w, http.StatusBadRequest, err)
		return
	}
	a.applyWrite(w, r, n, &consensus.PutDeployment{Spec: *spec})
}

func (a *Agent) deploymentInfo(st *consensus.State, d consensus.Deployment, pending map[string]placement.Pending) DeploymentInfo {
	ps, _ := st.Placements(d.Spec.Name)
	info := DeploymentInfo{Name: d.Spec.Name, Count: d.Spec.Count, Placed: len(ps), Spec: d.Spec, CreateIndex: d.CreateIndex, ModifyIndex: d.ModifyIndex}
	if p, ok := pending[d.Spec.Name]; ok {
		info.Pending = &p
	}
	return info
}

func (a *Agent) handleDeployments(w http.ResponseWriter, r *http.Request) {
	out, ok := blockingRead(a, w, r, func(st *consensus.State) ([]DeploymentInfo, uint64) {
		deps, idx := st.Deployments()
		pending, _ := st.Pending()
		out := make([]DeploymentInfo, 0, len(deps))
		for _, d := range deps {
			out = append(out, a.deploymentInfo(st, d, pending))
		}
		return out, idx
	})
	if ok {
		writeJSON(w, http.StatusOK, out)
	}
}

func (a *Agent) handleDeployment(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	n, ok := a.routeRead(w, r)
	if !ok {
		return
	}
	st := n.State()
	d, found, idx := st.DeploymentByName(name)
	if !found {
		writeError(w, http.StatusNotFound, fmt.Errorf("%w: %q", consensus.ErrNoDeployment, name))
		return
	}
	pending, _ := st.Pending()
	names := map[string]string{}
	for _, m := range a.gossip.Members() {
		names[m.Meta.ID.String()] = m.Name
	}
	ps, pidx := st.Placements(name)
	out := DeploymentDetail{DeploymentInfo: a.deploymentInfo(st, d, pending), Placements: []PlacementInfo{}}
	for _, p := range ps {
		out.Placements = append(out.Placements, PlacementInfo{Placement: p, NodeName: names[p.NodeID]})
	}
	a.served(w, max(idx, pidx))
	writeJSON(w, http.StatusOK, out)
}

func (a *Agent) handleDeploymentDelete(w http.ResponseWriter, r *http.Request) {
	cmd := &consensus.DeleteDeployment{Name: r.PathValue("name")}
	n, ok := a.validWrite(w, r, cmd)
	if !ok {
		return
	}
	a.applyWrite(w, r, n, cmd)
}

// ScaleRequest is the body of PUT /v1/deployments/{name}/scale.
type ScaleRequest struct {
	Count int `json:"count"`
}

func (a *Agent) handleScale(w http.ResponseWriter, r *http.Request) {
	n, ok := a.routeWrite(w, r)
	if !ok {
		return
	}
	var req ScaleRequest
	if !decodeBody(w, r, &req) {
		return
	}
	cmd := &consensus.ScaleDeployment{Name: r.PathValue("name"), Count: req.Count}
	if err := cmd.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	a.applyWrite(w, r, n, cmd)
}

// resolveNode accepts a node name or ID and returns the ID.
func (a *Agent) resolveNode(s string) (string, bool) {
	for _, m := range a.gossip.Members() {
		if m.Name == s || m.Meta.ID.String() == s {
			return m.Meta.ID.String(), true
		}
	}
	return "", false
}

func (a *Agent) handleDrain(drain bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := a.resolveNode(r.PathValue("node"))
		if !ok {
			writeError(w, http.StatusNotFound, fmt.Errorf("no member named %q", r.PathValue("node")))
			return
		}
		n, ok := a.routeWrite(w, r)
		if !ok {
			return
		}
		a.applyWrite(w, r, n, &consensus.SetDrain{NodeID: id, Drain: drain})
	}
}

// handlePlacements serves GET /v1/placements[?node=ID][&deployment=D]: an
// agent's blocking query for its own assignments uses ?node=.
func (a *Agent) handlePlacements(w http.ResponseWriter, r *http.Request) {
	node, dep := r.URL.Query().Get("node"), r.URL.Query().Get("deployment")
	ps, ok := blockingRead(a, w, r, func(st *consensus.State) ([]placement.Placement, uint64) {
		if node != "" {
			return st.NodePlacements(node)
		}
		return st.Placements(dep)
	})
	if ok {
		writeJSON(w, http.StatusOK, ps)
	}
}
