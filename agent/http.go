package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"colony/gossip"
)

// maxBodyBytes bounds every API request body.
const maxBodyBytes = 1 << 20

// Capabilities is what a node offers, as detected at start.
type Capabilities struct {
	CPUs         uint32 `json:"cpus"`
	MemoryMiB    uint64 `json:"memory_mib"`
	Arch         string `json:"arch"`
	OS           string `json:"os"`
	Kernel       string `json:"kernel"`
	AgentVersion string `json:"agent_version"`
}

// MemberInfo is one member in API responses.
type MemberInfo struct {
	Name         string            `json:"name"`
	ID           string            `json:"id"`
	Address      string            `json:"address"`
	APIAddress   string            `json:"api_address,omitempty"`
	Status       gossip.Status     `json:"status"`
	Since        time.Time         `json:"since"`
	Capabilities Capabilities      `json:"capabilities"`
	Labels       map[string]string `json:"labels"`
	Roles        []string          `json:"roles,omitempty"` // "voter", "leader"
}

// SelfInfo is GET /v1/agent/self.
type SelfInfo struct {
	Member     MemberInfo `json:"member"`
	State      string     `json:"state"`
	HTTPAddr   string     `json:"http_addr"`
	DataDir    string     `json:"data_dir"`
	Version    string     `json:"version"`
	StartedAt  time.Time  `json:"started_at"`
	Encrypted  bool       `json:"gossip_encrypted"`
	NumMembers int        `json:"num_members"`
}

// Health is GET /v1/health.
type Health struct {
	Status  string         `json:"status"` // "passing" or "critical"
	Node    string         `json:"node"`
	State   string         `json:"state"`
	Members map[string]int `json:"members"` // by status
	Leader  string         `json:"leader"`  // Raft leader's name, "" when none
	Voter   bool           `json:"voter"`   // this node runs Raft
	Problem string         `json:"problem,omitempty"`
}

// JoinRequest is the body of PUT /v1/agent/join.
type JoinRequest struct {
	Addresses []string `json:"addresses"`
}

// JoinResponse answers PUT /v1/agent/join.
type JoinResponse struct {
	Contacted int `json:"contacted"`
}

// APIError is the body of every error response.
type APIError struct {
	Error string `json:"error"`
}

func (a *Agent) routes() http.Handler {
	r := newRouter(a.authorize)
	r.handle("GET", "/v1/agent/self", AccessRead, a.handleSelf)
	r.handle("GET", "/v1/members", AccessRead, a.handleMembers)
	r.handle("GET", "/v1/health", AccessPublic, a.handleHealth)
	r.handle("PUT", "/v1/agent/join", AccessOperator, a.handleJoin)
	r.handle("PUT", "/v1/agent/leave", AccessOperator, a.handleLeave)
	r.handle("GET", "/metrics", AccessMetrics, a.metricsHandler().ServeHTTP)
	a.aclRoutes(r)
	a.raftRoutes(r)
	a.keyringRoutes(r)
	a.deployRoutes(r)
	a.autoscaleRoutes(r)
	a.monitorRoutes(r)
	a.routeList = r.routes
	return r.finish()
}

// Route is one registered endpoint and the access it requires.
type Route struct {
	Method string
	Path   string
	Access Access
}

// Routes lists every endpoint of the API in registration order, with the
// access each requires (tests check it against the ACL rules).
func (a *Agent) Routes() []Route { return slices.Clone(a.routeList) }

// router is http.ServeMux with JSON answers for unknown paths (404) and
// known paths with the wrong method (405, with Allow). Every route declares
// the access it requires, and the router wraps its handler with the check:
// no endpoint can be added without saying who may call it.
type router struct {
	mux     *http.ServeMux
	methods map[string][]string
	order   []string
	routes  []Route
	guard   func(Route, http.HandlerFunc) http.HandlerFunc
}

func newRouter(guard func(Route, http.HandlerFunc) http.HandlerFunc) *router {
	return &router{mux: http.NewServeMux(), methods: map[string][]string{}, guard: guard}
}

// handle registers one endpoint. A route without a valid Access is a
// programming error: it panics at start-up, before anything is served.
func (r *router) handle(method, path string, access Access, h http.HandlerFunc) {
	if !access.valid() {
		panic(fmt.Sprintf("route %s %s registered without an access policy", method, path))
	}
	rt := Route{Method: method, Path: path, Access: access}
	r.mux.HandleFunc(method+" "+path, r.guard(rt, h))
	r.routes = append(r.routes, rt)
	if _, ok := r.methods[path]; !ok {
		r.order = append(r.order, path)
	}
	r.methods[path] = append(r.methods[path], method)
}

func (r *router) finish() http.Handler {
	for _, path := range r.order {
		allow := strings.Join(r.methods[path], ", ")
		r.mux.HandleFunc(path, func(w http.ResponseWriter, req *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, fmt.Errorf("%s %s: method not allowed (allowed: %s)", req.Method, req.URL.Path, allow))
		})
	}
	r.mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no such endpoint: %s %s", req.Method, req.URL.Path))
	})
	return r.mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, APIError{Error: err.Error()})
}

// decodeBody reads a JSON body strictly: size-limited, unknown fields and
// trailing data refused, every failure a 400 that says what was wrong.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Errorf("request body over %d bytes", maxBodyBytes))
		case errors.Is(err, io.EOF):
			writeError(w, http.StatusBadRequest, errors.New("request body is empty: want a JSON object"))
		default:
			writeError(w, http.StatusBadRequest, fmt.Errorf("invalid JSON body: %w", err))
		}
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, errors.New("invalid JSON body: unexpected data after the object"))
		return false
	}
	return true
}

func memberInfo(m gossip.Member) MemberInfo {
	mi := MemberInfo{
		Name: m.Name, ID: m.Meta.ID.String(), Address: m.Address(), Status: m.Status, Since: m.Since.UTC(),
		Capabilities: Capabilities{CPUs: m.Meta.CPUs, MemoryMiB: m.Meta.MemoryMiB, Arch: m.Meta.Arch, OS: m.Meta.OS, Kernel: m.Meta.Kernel, AgentVersion: m.Meta.AgentVersion},
		Labels:       m.Meta.Labels,
	}
	if mi.Labels == nil {
		mi.Labels = map[string]string{}
	}
	if m.Meta.Roles&gossip.RoleVoter != 0 {
		mi.Roles = append(mi.Roles, "voter")
	}
	if m.Meta.Roles&gossip.RoleLeader != 0 {
		mi.Roles = append(mi.Roles, "leader")
	}
	if m.Meta.APIPort != 0 {
		mi.APIAddress = net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Meta.APIPort)))
	}
	return mi
}

func (a *Agent) self() MemberInfo {
	for _, m := range a.gossip.Members() {
		if m.Name == a.cfg.NodeName {
			return memberInfo(m)
		}
	}
	ip, port := a.gossip.LocalAddr()
	return memberInfo(gossip.Member{Name: a.cfg.NodeName, Addr: ip, Port: port, Meta: a.gossip.LocalMeta(), Since: a.started})
}

func (a *Agent) handleSelf(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, SelfInfo{
		Member: a.self(), State: a.State().String(), HTTPAddr: a.HTTPAddr(), DataDir: a.cfg.DataDir,
		Version: Version, StartedAt: a.started.UTC(), Encrypted: a.gossipEncrypted(), NumMembers: a.gossip.NumAlive(),
	})
}

func (a *Agent) handleMembers(w http.ResponseWriter, r *http.Request) {
	var want *gossip.Status
	if s := r.URL.Query().Get("status"); s != "" {
		var st gossip.Status
		if err := st.UnmarshalText([]byte(s)); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("status filter: %w (want alive, suspect, dead or left)", err))
			return
		}
		want = &st
	}
	out := []MemberInfo{}
	for _, m := range a.gossip.Members() {
		if want == nil || m.Status == *want {
			out = append(out, memberInfo(m))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *Agent) handleHealth(w http.ResponseWriter, r *http.Request) {
	h := Health{Status: "passing", Node: a.cfg.NodeName, State: a.State().String(), Members: map[string]int{}}
	for _, s := range []gossip.Status{gossip.StatusAlive, gossip.StatusSuspect, gossip.StatusDead, gossip.StatusLeft} {
		h.Members[s.String()] = 0
	}
	for _, m := range a.gossip.Members() {
		h.Members[m.Status.String()]++
	}
	h.Voter = a.raftNode() != nil
	if l := a.leaderInfo(); l != nil {
		h.Leader = l.Name
	} else {
		h.Status = "critical"
		h.Problem = a.noLeaderError().Error()
	}
	if a.State() != StateAlive {
		h.Status = "critical"
		h.Problem = "agent is " + a.State().String()
	}
	code := http.StatusOK
	if h.Status != "passing" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, h)
}

func (a *Agent) handleJoin(w http.ResponseWriter, r *http.Request) {
	var req JoinRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if len(req.Addresses) == 0 {
		writeError(w, http.StatusBadRequest, errors.New(`no addresses: want {"addresses": ["host:port", ...]}`))
		return
	}
	if len(req.Addresses) > 256 {
		writeError(w, http.StatusBadRequest, fmt.Errorf("%d addresses: at most 256 per request", len(req.Addresses)))
		return
	}
	for _, addr := range req.Addresses {
		if addr == "" || len(addr) > 255 {
			writeError(w, http.StatusBadRequest, fmt.Errorf("address %q: want host:port or a DNS name", addr))
			return
		}
	}
	n, err := a.gossip.Join(r.Context(), req.Addresses, gossip.RetryPolicy{Max: 1})
	if err != nil {
		writeError(w, http.StatusBadGateway, a.joinError(err))
		return
	}
	writeJSON(w, http.StatusOK, JoinResponse{Contacted: n})
}

func (a *Agent) handleLeave(w http.ResponseWriter, r *http.Request) {
	if a.State() != StateAlive {
		writeError(w, http.StatusConflict, fmt.Errorf("agent is already %s", a.State()))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "leaving"})
	// Leave shuts the HTTP server down, which waits for this handler: run it
	// apart. It ends on its own once the agent has stopped.
	go func() { _ = a.Leave() }()
}
