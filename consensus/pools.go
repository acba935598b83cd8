package consensus

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"colony/gossip"
	"colony/scaling/placement"
	"colony/scaling/provider"
)

// Autoscaling state: node pools (where new machines come from and the
// bounds on them), scaling intents (every launch and terminate, committed
// with its idempotency key before the provider is called, so a new leader
// finishes what a dead one started instead of doing it again) and the
// event log (why the cluster grew or shrank, bounded).

const (
	tablePools   = "pools"
	tableIntents = "intents"
	tableEvents  = "events"

	// MaxEvents is how many events the log keeps (the oldest go first).
	MaxEvents = 1000
	// maxClosedIntents bounds the done and failed intents kept for
	// inspection; open ones are never dropped.
	maxClosedIntents = 500
	// MaxPoolNameLen keeps launch keys ("<pool>-u<index>") under the
	// providers' key limit.
	MaxPoolNameLen = 24
	// PoolLabel is the label every node launched for a pool carries; its
	// value is the pool's name.
	PoolLabel = "colony.pool"
)

// Pool is a group of machines the autoscaler may launch and terminate.
type Pool struct {
	// Name identifies the pool (letters, digits, dashes).
	Name string `json:"name"`
	// Provider is the provider kind: local, docker or exec.
	Provider string `json:"provider"`
	// ProviderConfig is the kind's configuration in map form (the yaml
	// keys of provider.LocalConfig and friends).
	ProviderConfig map[string]any `json:"provider_config,omitempty"`
	// Types lists the instance types the pool may launch; empty means
	// every type the provider offers.
	Types []string `json:"types,omitempty"`
	// Min and Max bound the pool's live nodes.
	Min int `json:"min"`
	Max int `json:"max"`
	// ScaleUpCooldown is the least time between two launches of the pool.
	ScaleUpCooldown time.Duration `json:"scale_up_cooldown"`
	// ScaleDownAfter is how long a launched node must run nothing before
	// it is drained and terminated.
	ScaleDownAfter time.Duration `json:"scale_down_after"`
	// Labels are given to every node launched for the pool (with
	// colony.pool=<name>).
	Labels map[string]string `json:"labels,omitempty"`

	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`
}

// Validate checks a pool definition on its own; every problem is listed.
func (p *Pool) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if err := placement.ValidateName(p.Name); err != nil {
		bad("name: %w", err)
	} else if len(p.Name) > MaxPoolNameLen {
		bad("name: at most %d characters", MaxPoolNameLen)
	}
	if !slices.Contains(provider.Kinds(), p.Provider) {
		bad("provider: %q is not one of %v", p.Provider, provider.Kinds())
	}
	if p.Min < 0 {
		bad("min: %d is negative", p.Min)
	}
	if p.Max < 1 || p.Max > 1000 {
		bad("max: %d is out of range 1-1000", p.Max)
	}
	if p.Min > p.Max {
		bad("min %d is greater than max %d", p.Min, p.Max)
	}
	if p.ScaleUpCooldown < 0 {
		bad("scale_up_cooldown: negative")
	}
	if p.ScaleDownAfter < 0 {
		bad("scale_down_after: negative")
	}
	seen := map[string]bool{}
	for _, t := range p.Types {
		if t == "" || seen[t] {
			bad("types: %q is empty or listed twice", t)
		}
		seen[t] = true
	}
	for k, v := range p.Labels {
		if err := gossip.ValidateLabel(k, v); err != nil {
			bad("labels: %w", err)
		}
		if k == PoolLabel {
			bad("labels: %s is set by the autoscaler", PoolLabel)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid pool %q: %w", p.Name, errors.Join(errs...))
	}
	return nil
}

// Intent kinds and states.
const (
	IntentLaunch    = "launch"
	IntentTerminate = "terminate"

	IntentOpen   = "open"
	IntentDone   = "done"
	IntentFailed = "failed"
)

// Intent is one launch or terminate: committed open before the provider
// is called, closed (done or failed) once the provider's list confirms the
// result.
type Intent struct {
	// Key is the idempotency key passed to the provider; never reused.
	Key  string `json:"key"`
	Pool string `json:"pool"`
	Kind string `json:"kind"`
	// Type and Count describe a launch.
	Type  string `json:"type,omitempty"`
	Count int    `json:"count,omitempty"`
	// Deployment is the pending deployment that asked for a launch.
	Deployment string `json:"deployment,omitempty"`
	// InstanceIDs are the launched instances (known once done) or the
	// instances to terminate.
	InstanceIDs []string `json:"instance_ids,omitempty"`
	State       string   `json:"state"`
	Reason      string   `json:"reason,omitempty"`
	// Created and Updated are the leader's clock when it wrote the intent.
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated"`
	CreateIndex uint64    `json:"create_index"`
	ModifyIndex uint64    `json:"modify_index"`
}

// Validate checks an intent's fields.
func (i *Intent) Validate() error {
	switch {
	case i.Key == "" || len(i.Key) > provider.MaxKeyLen:
		return fmt.Errorf("intent key must be 1-%d characters", provider.MaxKeyLen)
	case i.Pool == "":
		return errors.New("intent without a pool")
	case i.Kind != IntentLaunch && i.Kind != IntentTerminate:
		return fmt.Errorf("intent kind %q: want launch or terminate", i.Kind)
	case i.State != IntentOpen && i.State != IntentDone && i.State != IntentFailed:
		return fmt.Errorf("intent state %q: want open, done or failed", i.State)
	case i.Kind == IntentLaunch && (i.Type == "" || i.Count < 1):
		return errors.New("launch intent needs a type and a count")
	case i.Kind == IntentTerminate && len(i.InstanceIDs) == 0:
		return errors.New("terminate intent needs instance IDs")
	}
	return nil
}

// Event is one entry of the cluster's event log.
type Event struct {
	// Seq numbers events in commit order (set when applied).
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	// Kind is short: scale-up, launched, launch-failed, scale-down, terminated…
	Kind    string `json:"kind"`
	Pool    string `json:"pool,omitempty"`
	Message string `json:"message"`
	Index   uint64 `json:"index"`
}

// poolState holds the autoscaling tables; State embeds it.
type poolState struct {
	pools   map[string]Pool
	intents map[string]Intent
	events  []Event
	seq     uint64
}

func newPoolState() poolState {
	return poolState{pools: map[string]Pool{}, intents: map[string]Intent{}}
}

// Pools returns every pool sorted by name, and the pools index.
func (s *State) Pools() ([]Pool, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Pool, 0, len(s.pools.pools))
	for _, k := range slices.Sorted(maps.Keys(s.pools.pools)) {
		out = append(out, s.pools.pools[k])
	}
	return out, s.tableIndex(tablePools)
}

// Intents returns every kept intent by creation index, and the intents index.
func (s *State) Intents() ([]Intent, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := slices.Collect(maps.Values(s.pools.intents))
	slices.SortFunc(out, func(a, b Intent) int { return int(a.CreateIndex) - int(b.CreateIndex) })
	return out, s.tableIndex(tableIntents)
}

// Events returns the events after seq (0: all kept), oldest first, and
// the events index.
func (s *State) Events(after uint64) ([]Event, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Event, 0)
	for _, e := range s.pools.events {
		if e.Seq > after {
			out = append(out, e)
		}
	}
	return out, s.tableIndex(tableEvents)
}

func (s *State) appendEvent(e Event, index uint64) {
	s.pools.seq++
	e.Seq, e.Index = s.pools.seq, index
	s.pools.events = append(s.pools.events, e)
	if len(s.pools.events) > MaxEvents {
		s.pools.events = slices.Clone(s.pools.events[len(s.pools.events)-MaxEvents:])
	}
	s.tables[tableEvents] = index
}

// ErrNoPool is returned for a command naming an unknown pool.
var ErrNoPool = errors.New("no such pool")

// PutPool creates or replaces a pool.
type PutPool struct {
	Pool Pool `json:"pool"`
}

// CommandType implements Command.
func (*PutPool) CommandType() CommandType { return CmdPutPool }

// Validate implements Command.
func (c *PutPool) Validate() error { return c.Pool.Validate() }

func (c *PutPool) apply(s *State, index uint64) (any, error) {
	p := c.Pool
	p.CreateIndex = index
	if old, ok := s.pools.pools[p.Name]; ok {
		p.CreateIndex = old.CreateIndex
	}
	p.ModifyIndex = index
	s.pools.pools[p.Name] = p
	s.tables[tablePools] = index
	return p, nil
}

// DeletePool removes a pool. Its nodes stay: the autoscaler no longer
// manages them.
type DeletePool struct {
	Name string `json:"name"`
}

// CommandType implements Command.
func (*DeletePool) CommandType() CommandType { return CmdDeletePool }

// Validate implements Command.
func (c *DeletePool) Validate() error { return placement.ValidateName(c.Name) }

func (c *DeletePool) apply(s *State, index uint64) (any, error) {
	if _, ok := s.pools.pools[c.Name]; !ok {
		return nil, fmt.Errorf("%w: %q", ErrNoPool, c.Name)
	}
	delete(s.pools.pools, c.Name)
	s.tables[tablePools] = index
	return nil, nil
}

// ErrIntentExists refuses a new intent whose key is already used: two
// leaders deciding the same launch commit it once.
var ErrIntentExists = errors.New("intent key already used")

// ErrIntentClosed refuses a change to a done or failed intent.
var ErrIntentClosed = errors.New("intent already closed")

// PutIntent opens a new intent (Create) or updates an open one, with an
// optional event committed in the same entry.
type PutIntent struct {
	Intent Intent `json:"intent"`
	Create bool   `json:"create,omitempty"`
	Event  *Event `json:"event,omitempty"`
}

// CommandType implements Command.
func (*PutIntent) CommandType() CommandType { return CmdPutIntent }

// Validate implements Command.
func (c *PutIntent) Validate() error { return c.Intent.Validate() }

func (c *PutIntent) apply(s *State, index uint64) (any, error) {
	in := c.Intent
	old, ok := s.pools.intents[in.Key]
	switch {
	case c.Create && ok:
		return nil, fmt.Errorf("%w: %q", ErrIntentExists, in.Key)
	case !c.Create && !ok:
		return nil, fmt.Errorf("no open intent %q", in.Key)
	case !c.Create && old.State != IntentOpen:
		return nil, fmt.Errorf("%w: %q is %s", ErrIntentClosed, in.Key, old.State)
	}
	in.CreateIndex = index
	if ok {
		in.CreateIndex = old.CreateIndex
	}
	in.ModifyIndex = index
	s.pools.intents[in.Key] = in
	s.pruneIntents()
	s.tables[tableIntents] = index
	if c.Event != nil {
		s.appendEvent(*c.Event, index)
	}
	return in, nil
}

// pruneIntents drops the oldest closed intents beyond maxClosedIntents.
func (s *State) pruneIntents() {
	var closed []Intent
	for _, in := range s.pools.intents {
		if in.State != IntentOpen {
			closed = append(closed, in)
		}
	}
	if len(closed) <= maxClosedIntents {
		return
	}
	slices.SortFunc(closed, func(a, b Intent) int { return int(a.ModifyIndex) - int(b.ModifyIndex) })
	for _, in := range closed[:len(closed)-maxClosedIntents] {
		delete(s.pools.intents, in.Key)
	}
}

// AppendEvent adds one event to the log.
type AppendEvent struct {
	Event Event `json:"event"`
}

// CommandType implements Command.
func (*AppendEvent) CommandType() CommandType { return CmdAppendEvent }

// Validate implements Command.
func (c *AppendEvent) Validate() error {
	if c.Event.Kind == "" || len(c.Event.Message) > 4096 {
		return errors.New("event needs a kind and a message of at most 4096 bytes")
	}
	return nil
}

func (c *AppendEvent) apply(s *State, index uint64) (any, error) {
	s.appendEvent(c.Event, index)
	return nil, nil
}

// poolSnapshot is the autoscaling part of a snapshot.
type poolSnapshot struct {
	Pools   []Pool   `json:"pools,omitempty"`
	Intents []Intent `json:"intents,omitempty"`
	Events  []Event  `json:"events,omitempty"`
	Seq     uint64   `json:"seq"`
}

func (p *poolState) snapshot() *poolSnapshot {
	out := &poolSnapshot{Seq: p.seq, Events: slices.Clone(p.events)}
	for _, k := range slices.Sorted(maps.Keys(p.pools)) {
		out.Pools = append(out.Pools, p.pools[k])
	}
	for _, k := range slices.Sorted(maps.Keys(p.intents)) {
		out.Intents = append(out.Intents, p.intents[k])
	}
	return out
}

func (ps *poolSnapshot) restore() poolState {
	p := newPoolState()
	if ps == nil {
		return p
	}
	for _, x := range ps.Pools {
		p.pools[x.Name] = x
	}
	for _, x := range ps.Intents {
		p.intents[x.Key] = x
	}
	p.events, p.seq = ps.Events, ps.Seq
	return p
}
