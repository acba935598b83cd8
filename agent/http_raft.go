package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strconv"
	"time"

	"github.com/google/uuid"

	"colony/consensus"
	"colony/gossip"
)

// Headers of the Raft-backed API.
const (
	// HeaderIndex carries the Raft index a read reflects; pass it back as
	// ?index= to block until something newer exists.
	HeaderIndex = "X-Colony-Index"
	// HeaderForwarded marks a request one agent forwarded to another, so a
	// request is forwarded at most once.
	HeaderForwarded = "X-Colony-Forwarded-By"
	// HeaderServedBy names the node that served a request.
	HeaderServedBy = "X-Colony-Served-By"
)

// Blocking query limits, as in Consul.
const (
	defaultWait = 5 * time.Minute
	maxWait     = 10 * time.Minute
)

// LeaderInfo is GET /v1/status/leader.
type LeaderInfo struct {
	Name       string `json:"name"`
	ID         string `json:"id"`
	RaftAddr   string `json:"raft_address"`
	APIAddress string `json:"api_address"`
}

// VoterInfo is one server of the Raft configuration.
type VoterInfo struct {
	Name     string `json:"name"`
	ID       string `json:"id"`
	RaftAddr string `json:"raft_address"`
	Voter    bool   `json:"voter"`
	Leader   bool   `json:"leader"`
	Status   string `json:"status"` // gossip status
}

// RaftStatus is the Raft part of GET /v1/status.
type RaftStatus struct {
	ServedBy      string `json:"served_by"`
	State         string `json:"state"`
	Term          uint64 `json:"term"`
	CommitIndex   uint64 `json:"commit_index"`
	AppliedIndex  uint64 `json:"applied_index"`
	LastIndex     uint64 `json:"last_index"`
	LeaderChanges uint64 `json:"leader_changes"`
	LastContact   string `json:"last_contact,omitempty"`
}

// ClusterStatus is GET /v1/status: what `colony status` prints.
type ClusterStatus struct {
	Node    string         `json:"node"`
	Leader  *LeaderInfo    `json:"leader"`
	Voters  []VoterInfo    `json:"voters"`
	Raft    *RaftStatus    `json:"raft,omitempty"`
	Members map[string]int `json:"members"`
	Health  string         `json:"health"` // passing or critical
	Problem string         `json:"problem,omitempty"`
}

func (a *Agent) raftRoutes(r *router) {
	r.handle("GET", "/v1/status", AccessRead, a.handleStatus)
	r.handle("GET", "/v1/status/leader", AccessRead, a.handleLeader)
	r.handle("GET", "/v1/status/voters", AccessRead, a.handleVoters)
	r.handle("GET", "/v1/status/raft", AccessRead, a.handleRaftStats)
	r.handle("GET", "/v1/settings", AccessRead, a.handleSettings)
	r.handle("GET", "/v1/settings/{key}", AccessRead, a.handleSettingGet)
	r.handle("PUT", "/v1/settings/{key}", AccessOperator, a.handleSettingPut)
	r.handle("DELETE", "/v1/settings/{key}", AccessOperator, a.handleSettingDelete)
	r.handle("PUT", "/v1/internal/raft/enable", AccessAgent, a.handleRaftEnable)
	r.handle("PUT", "/v1/internal/raft/disable", AccessAgent, a.handleRaftDisable)
}

// raftError writes a consensus error with the right status.
func raftError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, consensus.ErrInvalidCommand):
		code = http.StatusBadRequest
	case errors.Is(err, consensus.ErrNotLeader), errors.Is(err, consensus.ErrNoLeader), errors.Is(err, consensus.ErrQuorumLost),
		errors.Is(err, consensus.ErrLeadershipLost), errors.Is(err, consensus.ErrShutdown), errors.Is(err, context.DeadlineExceeded):
		code = http.StatusServiceUnavailable
	}
	writeError(w, code, err)
}

// forward proxies the request to another agent's API, once.
func (a *Agent) forward(w http.ResponseWriter, r *http.Request, m gossip.Member) {
	target := &url.URL{Scheme: a.scheme, Host: apiAddr(m)}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set(HeaderForwarded, a.cfg.NodeName)
		},
		Transport: a.httpClient.Transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeError(w, http.StatusServiceUnavailable, fmt.Errorf("forwarding to %s at %s: %w", m.Name, apiAddr(m), err))
		},
	}
	rp.ServeHTTP(w, r)
}

// noLeaderError explains why no leader can serve, with quorum details.
func (a *Agent) noLeaderError() error {
	q := a.gossipQuorum()
	if err := q.Err(); err != nil {
		return err
	}
	return fmt.Errorf("%w: an election may be in progress; retry shortly", consensus.ErrNoLeader)
}

// gossipQuorum checks the voters this node knows of (from gossiped roles)
// against their gossip status. Non-voters use it to report quorum loss.
func (a *Agent) gossipQuorum() consensus.QuorumStatus {
	var servers []consensus.Server
	if n := a.raftNode(); n != nil {
		if s, err := n.Servers(); err == nil {
			servers = s
		}
	}
	if servers == nil {
		for _, id := range a.gossipedVoters() {
			servers = append(servers, consensus.Server{ID: id.String(), Voter: true})
		}
	}
	return consensus.CheckQuorum(servers, a.consensusMembers())
}

// gossipedVoters is the Raft configuration as voters gossip it: from the
// live leader if there is one, else a live voter, else the voter that
// changed status last (the last to die). Dead members keep their last
// metadata, so a node without Raft can still name the missing voters.
func (a *Agent) gossipedVoters() []uuid.UUID {
	var best gossip.Member
	rank := -1
	for _, m := range a.gossip.Members() {
		if len(m.Meta.Voters) == 0 {
			continue
		}
		r := 0
		live := m.Status == gossip.StatusAlive || m.Status == gossip.StatusSuspect
		switch {
		case live && m.Meta.Roles&gossip.RoleLeader != 0:
			r = 2
		case live:
			r = 1
		}
		if r > rank || (r == rank && m.Since.After(best.Since)) {
			best, rank = m, r
		}
	}
	return best.Meta.Voters
}

// routeRead decides where a read is served. It returns the local Raft node
// when this node serves it; otherwise it has forwarded or answered.
func (a *Agent) routeRead(w http.ResponseWriter, r *http.Request) (*consensus.Node, bool) {
	c, err := consensus.ParseConsistency(r.URL.Query().Get("consistency"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return nil, false
	}
	n := a.raftNode()
	forwarded := r.Header.Get(HeaderForwarded) != ""
	if c == consensus.ConsistencyStale {
		if n != nil {
			return n, true
		}
		if forwarded {
			writeError(w, http.StatusServiceUnavailable, fmt.Errorf("%s is not a voter and holds no cluster state", a.cfg.NodeName))
			return nil, false
		}
		a.staleFromVoters(w, r)
		return nil, false
	}
	n, ok := a.leaderOrForward(w, r)
	if !ok {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if err := n.ReadBarrier(ctx, c); err != nil {
		raftError(w, err)
		return nil, false
	}
	return n, true
}

// staleFromVoters serves a stale read from the first voter that answers,
// trying them in random order: on a partitioned minority, the voters on
// this side still serve what they have.
func (a *Agent) staleFromVoters(w http.ResponseWriter, r *http.Request) {
	vs := a.voterMembers()
	rand.Shuffle(len(vs), func(i, j int) { vs[i], vs[j] = vs[j], vs[i] })
	var errs []error
	for _, v := range vs {
		req, err := http.NewRequestWithContext(r.Context(), "GET", a.apiURL(v)+r.URL.RequestURI(), nil)
		if err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		req.Header.Set(HeaderForwarded, a.cfg.NodeName)
		resp, err := a.httpClient.Do(req)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", v.Name, err))
			continue
		}
		defer resp.Body.Close()
		for k, vals := range resp.Header {
			w.Header()[k] = vals
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		return
	}
	if len(vs) == 0 {
		writeError(w, http.StatusServiceUnavailable, errors.New("no live voter known to this node"))
		return
	}
	writeError(w, http.StatusServiceUnavailable, fmt.Errorf("no voter answered: %w", errors.Join(errs...)))
}

// routeWrite returns the local Raft node when it leads; otherwise it
// forwards the request to the leader or explains why it cannot.
func (a *Agent) routeWrite(w http.ResponseWriter, r *http.Request) (*consensus.Node, bool) {
	return a.leaderOrForward(w, r)
}

// leaderHold bounds how long a request waits for a leader to be known, as
// Consul's rpc_hold_timeout does: through an election, or while gossip
// still carries the news of a new leader to this node, a request is held
// rather than refused.
const leaderHold = 7 * time.Second

// leaderOrForward returns the local Raft node when it leads. Otherwise it
// forwards the request to the leader (at most once: a forwarded request
// that reaches a node which no longer leads is refused, and the client
// retries), waiting up to leaderHold for one to be known; ok is then
// false and the answer is written.
func (a *Agent) leaderOrForward(w http.ResponseWriter, r *http.Request) (*consensus.Node, bool) {
	forwarded := r.Header.Get(HeaderForwarded) != ""
	hold := time.NewTimer(leaderHold)
	defer hold.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if n := a.raftNode(); n != nil && n.IsLeader() {
			return n, true
		}
		if forwarded {
			writeError(w, http.StatusServiceUnavailable, fmt.Errorf("%w: %s was named leader but is not (leadership changed); retry", consensus.ErrNotLeader, a.cfg.NodeName))
			return nil, false
		}
		if l, ok := a.leaderMember(); ok && l.Status == gossip.StatusAlive && l.Meta.ID != a.id {
			a.forward(w, r, l)
			return nil, false
		}
		if err := a.gossipQuorum().Err(); err != nil {
			writeError(w, http.StatusServiceUnavailable, err) // no election can succeed: say so now
			return nil, false
		}
		select {
		case <-tick.C:
			continue
		case <-hold.C:
		case <-r.Context().Done():
		}
		writeError(w, http.StatusServiceUnavailable, a.noLeaderError())
		return nil, false
	}
}

// blockingParams reads ?index= and ?wait=.
func blockingParams(r *http.Request) (uint64, time.Duration, error) {
	q := r.URL.Query()
	var idx uint64
	if s := q.Get("index"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("index %q: want a non-negative integer", s)
		}
		idx = v
	}
	wait := defaultWait
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return 0, 0, fmt.Errorf("wait %q: want a duration such as 30s", s)
		}
		wait = min(d, maxWait)
	}
	return idx, wait, nil
}

// blockingRead serves a read of the cluster state with ?consistency=,
// ?index= and ?wait=: it routes the request (forwarding it when this node
// cannot serve it: ok is false then, and the answer is written), then
// waits until read's index passes ?index= and sets the index headers. The
// caller writes the value.
func blockingRead[T any](a *Agent, w http.ResponseWriter, r *http.Request, read func(*consensus.State) (T, uint64)) (v T, ok bool) {
	minIdx, wait, err := blockingParams(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return v, false
	}
	n, ok := a.routeRead(w, r)
	if !ok {
		return v, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	st := n.State()
	v, idx := consensus.Blocking(ctx, st, minIdx, func() (T, uint64) { return read(st) })
	a.served(w, idx)
	return v, true
}

func (a *Agent) served(w http.ResponseWriter, index uint64) {
	w.Header().Set(HeaderIndex, strconv.FormatUint(index, 10))
	w.Header().Set(HeaderServedBy, a.cfg.NodeName)
}

func (a *Agent) handleSettings(w http.ResponseWriter, r *http.Request) {
	list, ok := blockingRead(a, w, r, (*consensus.State).Settings)
	if !ok {
		return
	}
	if list == nil {
		list = []consensus.Setting{}
	}
	writeJSON(w, http.StatusOK, list)
}

type settingRead struct {
	s     consensus.Setting
	found bool
}

func (a *Agent) handleSettingGet(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if err := consensus.ValidateSettingKey(key); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	res, ok := blockingRead(a, w, r, func(st *consensus.State) (settingRead, uint64) {
		s, found, idx := st.Setting(key)
		return settingRead{s, found}, idx
	})
	if !ok {
		return
	}
	if !res.found {
		writeError(w, http.StatusNotFound, fmt.Errorf("setting %q is not set", key))
		return
	}
	writeJSON(w, http.StatusOK, res.s)
}

// SettingRequest is the body of PUT /v1/settings/{key}.
type SettingRequest struct {
	Value string `json:"value"`
}

// WriteResult answers a committed write.
type WriteResult struct {
	Index uint64 `json:"index"`
}

func (a *Agent) handleSettingPut(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	if err := consensus.ValidateSettingKey(key); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	n, ok := a.routeWrite(w, r) // before reading the body: forwarding needs it
	if !ok {
		return
	}
	var req SettingRequest
	if !decodeBody(w, r, &req) {
		return
	}
	cmd := &consensus.SetSetting{Key: key, Value: req.Value}
	if err := cmd.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	if key == MonitorGroupSizeSetting {
		if _, err := ParseMonitorGroupSize(req.Value); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
	}
	a.applyWrite(w, r, n, cmd)
}

func (a *Agent) handleSettingDelete(w http.ResponseWriter, r *http.Request) {
	cmd := &consensus.DeleteSetting{Key: r.PathValue("key")}
	n, ok := a.validWrite(w, r, cmd)
	if !ok {
		return
	}
	a.applyWrite(w, r, n, cmd)
}

// validWrite checks a command that needs no request body, then routes it
// like routeWrite: it returns the leader's Raft node to apply cmd on, or
// false when it has answered (refused, or forwarded to the leader).
func (a *Agent) validWrite(w http.ResponseWriter, r *http.Request, cmd consensus.Command) (*consensus.Node, bool) {
	if err := cmd.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return nil, false
	}
	return a.routeWrite(w, r)
}

// applyWrite commits cmd on this node, the leader (see routeWrite).
func (a *Agent) applyWrite(w http.ResponseWriter, r *http.Request, n *consensus.Node, cmd consensus.Command) {
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	idx, _, err := n.Apply(ctx, cmd)
	if err != nil {
		raftError(w, err)
		return
	}
	a.served(w, idx)
	writeJSON(w, http.StatusOK, WriteResult{Index: idx})
}

func (a *Agent) leaderInfo() *LeaderInfo {
	l, ok := a.leaderMember()
	if !ok || l.Status != gossip.StatusAlive {
		return nil
	}
	return &LeaderInfo{Name: l.Name, ID: l.Meta.ID.String(), RaftAddr: l.Meta.RaftAddr, APIAddress: apiAddr(l)}
}

func (a *Agent) handleLeader(w http.ResponseWriter, r *http.Request) {
	l := a.leaderInfo()
	if l == nil {
		writeError(w, http.StatusServiceUnavailable, a.noLeaderError())
		return
	}
	writeJSON(w, http.StatusOK, l)
}

// voters lists the Raft configuration: from this node's Raft when it runs
// it, else from the voter roles members gossip.
func (a *Agent) voters() []VoterInfo {
	byID := map[string]gossip.Member{}
	for _, m := range a.gossip.Members() {
		byID[m.Meta.ID.String()] = m
	}
	leader := a.leaderInfo()
	var out []VoterInfo
	add := func(id, addr string, voter bool) {
		v := VoterInfo{ID: id, RaftAddr: addr, Voter: voter, Status: "unknown"}
		if m, ok := byID[id]; ok {
			v.Name, v.Status = m.Name, m.Status.String()
		}
		v.Leader = leader != nil && leader.ID == id
		out = append(out, v)
	}
	if n := a.raftNode(); n != nil {
		if servers, err := n.Servers(); err == nil {
			for _, s := range servers {
				add(s.ID, s.Address, s.Voter)
			}
		}
	}
	if out == nil {
		for id, m := range byID {
			if m.Meta.Roles&gossip.RoleVoter != 0 && m.Status != gossip.StatusLeft {
				add(id, m.Meta.RaftAddr, true)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (a *Agent) handleVoters(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(HeaderForwarded) != "" {
		writeJSON(w, http.StatusOK, a.voters())
		return
	}
	writeJSON(w, http.StatusOK, a.votersView(r.Context()))
}

// votersView is the Raft configuration as the leader has it when this node
// runs no Raft (the gossiped roles of dead members go stale), falling back
// to the gossiped roles when the leader cannot be asked.
func (a *Agent) votersView(ctx context.Context) []VoterInfo {
	if a.raftNode() == nil {
		if l, ok := a.leaderMember(); ok && l.Status == gossip.StatusAlive {
			var vs []VoterInfo
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(cctx, "GET", a.apiURL(l)+"/v1/status/voters", nil)
			if err == nil {
				req.Header.Set(HeaderForwarded, a.cfg.NodeName)
				if resp, err := a.httpClient.Do(req); err == nil {
					defer resp.Body.Close()
					if resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&vs) == nil {
						return vs
					}
				}
			}
		}
	}
	return a.voters()
}

func (a *Agent) localRaftStatus() *RaftStatus {
	n := a.raftNode()
	if n == nil {
		return nil
	}
	st := n.Stats()
	rs := &RaftStatus{ServedBy: a.cfg.NodeName, State: st.State, Term: st.Term, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex, LastIndex: st.LastIndex, LeaderChanges: st.LeaderChanges}
	if !st.LastContact.IsZero() {
		rs.LastContact = time.Since(st.LastContact).Round(time.Millisecond).String()
	}
	return rs
}

func (a *Agent) handleRaftStats(w http.ResponseWriter, r *http.Request) {
	rs := a.localRaftStatus()
	if rs == nil {
		writeError(w, http.StatusNotFound, fmt.Errorf("%s is not a voter: it runs no raft", a.cfg.NodeName))
		return
	}
	writeJSON(w, http.StatusOK, rs)
}

// clusterStatus assembles what this node knows; Raft figures come from
// its own Raft, or from the leader's.
func (a *Agent) clusterStatus(ctx context.Context) ClusterStatus {
	st := ClusterStatus{Node: a.cfg.NodeName, Leader: a.leaderInfo(), Voters: a.votersView(ctx), Members: map[string]int{}, Health: "passing"}
	for _, s := range []gossip.Status{gossip.StatusAlive, gossip.StatusSuspect, gossip.StatusDead, gossip.StatusLeft} {
		st.Members[s.String()] = 0
	}
	for _, m := range a.gossip.Members() {
		st.Members[m.Status.String()]++
	}
	if n := a.raftNode(); n != nil && n.IsLeader() {
		st.Raft = a.localRaftStatus()
	} else if st.Leader != nil {
		if l, ok := a.leaderMember(); ok {
			var rs RaftStatus
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			c, _ := NewClient(a.apiURL(l))
			c.http = a.httpClient
			if err := c.Do(cctx, "GET", "/v1/status/raft", nil, &rs); err == nil {
				st.Raft = &rs
			}
		}
	}
	if st.Raft == nil {
		st.Raft = a.localRaftStatus()
	}
	if st.Leader == nil {
		st.Health = "critical"
		st.Problem = a.noLeaderError().Error()
	}
	return st
}

func (a *Agent) handleStatus(w http.ResponseWriter, r *http.Request) {
	st := a.clusterStatus(r.Context())
	code := http.StatusOK
	if st.Health != "passing" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, st)
}

func (a *Agent) handleRaftEnable(w http.ResponseWriter, r *http.Request) {
	if labels := a.gossip.LocalMeta().Labels; labels[consensus.LabelVoter] == "false" {
		writeError(w, http.StatusConflict, fmt.Errorf("%s is labelled voter=false", a.cfg.NodeName))
		return
	}
	n, err := a.startRaft()
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"id": a.id.String(), "raft_address": n.Addr()})
}

func (a *Agent) handleRaftDisable(w http.ResponseWriter, r *http.Request) {
	if n := a.raftNode(); n != nil && n.IsLeader() {
		writeError(w, http.StatusConflict, fmt.Errorf("%s leads the cluster; it cannot be retired", a.cfg.NodeName))
		return
	}
	if err := a.stopRaft(true); err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	a.updateRoles(nil)
	writeJSON(w, http.StatusOK, map[string]string{"status": "raft stopped"})
}
