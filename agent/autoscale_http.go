package agent

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"colony/consensus"
)

// PoolSpec is the body of PUT /v1/pools/{name}: a pool with durations as
// strings ("30s", "5m").
type PoolSpec struct {
	Provider        string            `json:"provider"`
	ProviderConfig  map[string]any    `json:"provider_config,omitempty"`
	Types           []string          `json:"types,omitempty"`
	Min             int               `json:"min"`
	Max             int               `json:"max"`
	ScaleUpCooldown string            `json:"scale_up_cooldown,omitempty"`
	ScaleDownAfter  string            `json:"scale_down_after,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
}

// Pool defaults: a launch at most every 30s, nodes idle 5 minutes go.
const (
	DefaultScaleUpCooldown = 30 * time.Second
	DefaultScaleDownAfter  = 5 * time.Minute
)

// ToPool converts the spec, with defaults for unset durations.
func (s PoolSpec) ToPool(name string) (consensus.Pool, error) {
	p := consensus.Pool{
		Name: name, Provider: s.Provider, ProviderConfig: s.ProviderConfig, Types: s.Types,
		Min: s.Min, Max: s.Max, Labels: s.Labels,
		ScaleUpCooldown: DefaultScaleUpCooldown, ScaleDownAfter: DefaultScaleDownAfter,
	}
	for _, d := range []struct {
		field, v string
		to       *time.Duration
	}{{"scale_up_cooldown", s.ScaleUpCooldown, &p.ScaleUpCooldown}, {"scale_down_after", s.ScaleDownAfter, &p.ScaleDownAfter}} {
		if d.v == "" {
			continue
		}
		v, err := time.ParseDuration(d.v)
		if err != nil {
			return p, fmt.Errorf("%s: %w", d.field, err)
		}
		*d.to = v
	}
	return p, p.Validate()
}

func (a *Agent) autoscaleRoutes(r *router) {
	r.handle("GET", "/v1/pools", AccessRead, a.handlePools)
	r.handle("PUT", "/v1/pools/{name}", AccessOperator, a.handlePoolPut)
	r.handle("DELETE", "/v1/pools/{name}", AccessOperator, a.handlePoolDelete)
	r.handle("GET", "/v1/intents", AccessRead, a.handleIntents)
	r.handle("GET", "/v1/events", AccessRead, a.handleEvents)
}

func (a *Agent) handlePools(w http.ResponseWriter, r *http.Request) {
	out, ok := blockingRead(a, w, r, func(st *consensus.State) ([]consensus.Pool, uint64) { return st.Pools() })
	if ok {
		writeJSON(w, http.StatusOK, out)
	}
}

// handlePoolPut validates the pool, then builds its provider on the
// leader (which will use it) so a bad provider config or an instance type
// the provider does not offer is refused now, not at the first launch.
func (a *Agent) handlePoolPut(w http.ResponseWriter, r *http.Request) {
	n, ok := a.routeWrite(w, r)
	if !ok {
		return
	}
	var spec PoolSpec
	if !decodeBody(w, r, &spec) {
		return
	}
	p, err := spec.ToPool(r.PathValue("name"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	p.ModifyIndex = 0 // never a cached provider
	if _, err := a.poolProvider(ctx, p); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("invalid pool %q: %w", p.Name, err))
		return
	}
	a.applyWrite(w, r, n, &consensus.PutPool{Pool: p})
}

func (a *Agent) handlePoolDelete(w http.ResponseWriter, r *http.Request) {
	cmd := &consensus.DeletePool{Name: r.PathValue("name")}
	n, ok := a.validWrite(w, r, cmd)
	if !ok {
		return
	}
	a.applyWrite(w, r, n, cmd)
}

func (a *Agent) handleIntents(w http.ResponseWriter, r *http.Request) {
	out, ok := blockingRead(a, w, r, func(st *consensus.State) ([]consensus.Intent, uint64) { return st.Intents() })
	if ok {
		writeJSON(w, http.StatusOK, out)
	}
}

// handleEvents serves GET /v1/events[?after=SEQ]: the event log, oldest
// first; with ?index= it blocks until a new event.
func (a *Agent) handleEvents(w http.ResponseWriter, r *http.Request) {
	var after uint64
	if s := r.URL.Query().Get("after"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("after: %w", err))
			return
		}
		after = v
	}
	out, ok := blockingRead(a, w, r, func(st *consensus.State) ([]consensus.Event, uint64) { return st.Events(after) })
	if ok {
		writeJSON(w, http.StatusOK, out)
	}
}
