package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"colony/agent/workload"
	"colony/consensus"
	"colony/gossip"
)

// Running instances. Every agent learns its own assignments with a
// blocking query for its node (?node=ID&index=N): answered from its own
// state on a voter, from a voter (stale read) elsewhere. Each node has its
// own index in the state, so a change wakes only the nodes it concerns and
// a query costs nothing while nothing changes for that node: this is what
// keeps assignment delivery cheap at 10,000 nodes. The workload runner
// then starts, restarts and stops processes to match.

// assignments builds this node's desired instances from the state.
func assignments(st *consensus.State, nodeID string) ([]workload.Assignment, uint64) {
	ps, idx := st.NodePlacements(nodeID)
	out := make([]workload.Assignment, 0, len(ps))
	for _, p := range ps {
		d, ok, _ := st.DeploymentByName(p.Deployment)
		if !ok {
			continue // being stopped: the next plan removes it
		}
		out = append(out, workload.FromPlacement(p, &d.Spec))
	}
	return out, idx
}

// lazyAssignments defers building a node's assignments until a blocking
// query returns. Every Raft apply wakes every blocking query on a voter, and
// building the assignments scans (and sorts) all placements: during the
// deployment of one instance on each of 1,000 nodes, the voters rebuilt
// them for every waiting node at every apply, O(N² log N) per apply. The
// wake-ups now compare the node's index only (State.NodeIndex).
func lazyAssignments(st *consensus.State, nodeID string) (func() []workload.Assignment, uint64) {
	return func() []workload.Assignment {
		as, _ := assignments(st, nodeID)
		return as
	}, st.NodeIndex(nodeID)
}

func (a *Agent) handleAssignments(w http.ResponseWriter, r *http.Request) {
	node := r.URL.Query().Get("node")
	if node == "" {
		writeError(w, http.StatusBadRequest, errors.New("node is required: ?node=ID"))
		return
	}
	// The answer may be newer than its X-Colony-Index: the client's next
	// query then returns at once, with the same assignments.
	as, ok := blockingRead(a, w, r, func(st *consensus.State) (func() []workload.Assignment, uint64) { return lazyAssignments(st, node) })
	if ok {
		writeJSON(w, http.StatusOK, as())
	}
}

// assignmentLoop keeps the runner in line with this node's assignments.
func (a *Agent) assignmentLoop() {
	var index uint64
	fail := 0
	for a.ctx.Err() == nil {
		as, idx, err := a.fetchAssignments(index)
		if err != nil {
			fail++
			wait := min(time.Duration(fail)*time.Second, 15*time.Second)
			if fail == 1 || fail%10 == 0 {
				a.logger.Warn("cannot fetch assignments; retrying", "subsystem", "workload", "error", err, "retry_in", wait.String())
			}
			t := time.NewTimer(wait + time.Duration(rand.Int64N(int64(time.Second))))
			select {
			case <-a.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		fail = 0
		if idx < index {
			idx = 0 // the state was restored from an older snapshot: start over
		}
		index = idx
		if err := a.runner.Reconcile(as); err != nil && a.ctx.Err() == nil {
			a.logger.Warn("some assignments were refused", "subsystem", "workload", "error", err)
		}
	}
}

// fetchAssignments runs one blocking query, locally on a voter.
func (a *Agent) fetchAssignments(index uint64) ([]workload.Assignment, uint64, error) {
	wait := 5 * time.Minute
	if n := a.raftNode(); n != nil {
		ctx, cancel := context.WithTimeout(a.ctx, wait)
		defer cancel()
		st := n.State()
		_, idx := consensus.Blocking(ctx, st, index, func() (struct{}, uint64) { return struct{}{}, st.NodeIndex(a.id.String()) })
		as, at := assignments(st, a.id.String())
		return as, max(idx, at), a.ctx.Err()
	}
	q := url.Values{"node": {a.id.String()}}
	b, idx, err := a.voterLongPoll("/v1/assignments", q, index, wait, maxBodyBytes*16)
	if err != nil {
		return nil, 0, err
	}
	var as []workload.Assignment
	if err := json.Unmarshal(b, &as); err != nil {
		return nil, 0, fmt.Errorf("assignments: %w", err)
	}
	return as, idx, nil
}

// voterLongPoll runs one blocking query (a stale read) against a random
// live voter, for nodes that hold no state of their own: it returns the
// answer's body (at most limit bytes) and its X-Colony-Index.
func (a *Agent) voterLongPoll(path string, q url.Values, index uint64, wait time.Duration, limit int64) ([]byte, uint64, error) {
	v, err := a.pollVoter()
	if err != nil {
		return nil, 0, err
	}
	// A poll that fails moves this node to another voter next time.
	ok := false
	defer func() {
		if !ok {
			a.pollVoterName.CompareAndSwap(v.Name, "") // another loop may have moved already
		}
	}()
	ctx, cancel := context.WithTimeout(a.ctx, wait+30*time.Second)
	defer cancel()
	q.Set("index", strconv.FormatUint(index, 10))
	q.Set("wait", wait.String())
	q.Set("consistency", "stale")
	req, err := http.NewRequestWithContext(ctx, "GET", a.apiURL(v)+path+"?"+q.Encode(), nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set(HeaderForwarded, a.cfg.NodeName)
	resp, err := a.blockingClient.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("ask %s: %w", v.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("ask %s: status %d", v.Name, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, 0, fmt.Errorf("ask %s: %w", v.Name, err)
	}
	idx, _ := strconv.ParseUint(resp.Header.Get(HeaderIndex), 10, 64)
	ok = true
	return b, idx, nil
}

// pollVoter returns the live voter this node's blocking queries go to: the
// same one while it stays a live voter, a random one otherwise. Picking at
// random for every poll left each node, after a while, with idle
// connections to every voter from each of its polling loops (HTTP keeps two
// per host), so each voter held up to twice as many connections as there
// are nodes (1,900 on one voter at 1,000 nodes); sticking to one spreads
// them 2N/voters.
func (a *Agent) pollVoter() (gossip.Member, error) {
	// The usual case, without listing every member (O(N) per poll).
	if name, _ := a.pollVoterName.Load().(string); name != "" {
		if v, ok := a.gossip.MemberByName(name); ok && liveVoter(v) {
			return v, nil
		}
	}
	vs := a.voterMembers()
	if len(vs) == 0 {
		return gossip.Member{}, errors.New("no voter known yet")
	}
	v := vs[rand.IntN(len(vs))]
	a.pollVoterName.Store(v.Name)
	return v, nil
}

func (a *Agent) handleInstances(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.runner.Status())
}

func (a *Agent) handleInstanceLogs(w http.ResponseWriter, r *http.Request) {
	stream := r.URL.Query().Get("stream")
	if stream == "" {
		stream = workload.Stdout
	}
	tail := int64(64 << 10)
	if s := r.URL.Query().Get("tail"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			writeError(w, http.StatusBadRequest, fmt.Errorf("tail %q: want a number of bytes", s))
			return
		}
		tail = v
	}
	b, err := a.runner.Logs(r.PathValue("id"), stream, tail)
	if err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, workload.ErrUnknownInstance) {
			code = http.StatusNotFound
		}
		writeError(w, code, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write(b)
}

// InstanceInfo is a placement with the state its node reports.
type InstanceInfo struct {
	PlacementInfo
	Status *workload.InstanceStatus `json:"status,omitempty"`
	Error  string                   `json:"error,omitempty"` // why the node could not be asked
}

// handleDeploymentInstances answers for the whole deployment: it asks each
// node hosting one of its instances (and only those) for their state.
func (a *Agent) handleDeploymentInstances(w http.ResponseWriter, r *http.Request) {
	n, ok := a.routeRead(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	var ps []PlacementInfo
	members := map[string]gossip.Member{}
	for _, m := range a.gossip.Members() {
		members[m.Meta.ID.String()] = m
	}
	raw, idx := n.State().Placements(name)
	for _, p := range raw {
		ps = append(ps, PlacementInfo{Placement: p, NodeName: members[p.NodeID].Name})
	}
	byNode := map[string][]int{}
	for i, p := range ps {
		byNode[p.NodeID] = append(byNode[p.NodeID], i)
	}
	out := make([]InstanceInfo, len(ps))
	for i, p := range ps {
		out[i].PlacementInfo = p
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for nodeID, idxs := range byNode {
		m, known := members[nodeID]
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			var sts []workload.InstanceStatus
			err := errors.New("node unknown to gossip")
			if known {
				ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
				defer cancel()
				c, _ := NewClient(a.apiURL(m))
				c.http = a.httpClient
				err = c.Do(ctx, "GET", "/v1/agent/instances", nil, &sts)
			}
			byID := map[string]workload.InstanceStatus{}
			for _, s := range sts {
				byID[s.InstanceID] = s
			}
			mu.Lock()
			defer mu.Unlock()
			for _, i := range idxs {
				if err != nil {
					out[i].Error = err.Error()
					continue
				}
				if s, ok := byID[out[i].ID]; ok {
					out[i].Status = &s
				}
			}
		}()
	}
	wg.Wait()
	a.served(w, idx)
	writeJSON(w, http.StatusOK, out)
}

// handleLogs serves GET /v1/instances/{id}/logs from any node: it finds the
// instance's node and asks it.
func (a *Agent) handleLogs(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	n, ok := a.routeRead(w, r)
	if !ok {
		return
	}
	ps, _ := n.State().Placements("")
	for _, p := range ps {
		if p.ID != id {
			continue
		}
		if p.NodeID == a.id.String() {
			a.handleInstanceLogs(w, r)
			return
		}
		m, ok := a.memberByID(p.NodeID)
		if !ok {
			writeError(w, http.StatusServiceUnavailable, fmt.Errorf("instance %s is on node %s, unknown to gossip", id, p.NodeID))
			return
		}
		q := r.URL.Query()
		q.Del("consistency")
		req, err := http.NewRequestWithContext(r.Context(), "GET", a.apiURL(m)+"/v1/agent/instances/"+url.PathEscape(id)+"/logs?"+q.Encode(), nil)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		resp, err := a.httpClient.Do(req)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, fmt.Errorf("ask %s for the logs: %w", m.Name, err))
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, io.LimitReader(resp.Body, 64<<20))
		return
	}
	writeError(w, http.StatusNotFound, fmt.Errorf("no instance %q is placed (see colony ps)", id))
}
