package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"colony/consensus"
	"colony/gossip"
	"colony/scaling/placement"
	"colony/scaling/provider"
)

// Autoscaling on the leader. Every Raft tick, after placement, the leader
// looks at the pending instances and the pools: it launches machines for
// work no node can host and terminates machines that have been idle for a
// pool's ScaleDownAfter. Every launch and terminate is first committed as
// an intent with an idempotency key; the provider is called afterwards,
// outside the tick, and its List confirms the result before the intent is
// closed. A new leader resumes every open intent with the same key, and
// providers launch idempotently per key, so a leader killed mid-launch
// never causes a second launch or an orphaned machine.

const (
	// joinGrace is how long nodes of a finished launch may take to join
	// gossip before the autoscaler stops counting them as on their way.
	joinGrace = 90 * time.Second
	// failureBackoff is the least wait after a failed launch.
	failureBackoff = 5 * time.Second
	// intentTimeout bounds one intent's provider calls (retries included).
	intentTimeout = 5 * time.Minute
)

// autoscaler is the leader's memory between ticks; losing it (a new
// leader) only delays decisions: everything that matters is in the state.
type autoscaler struct {
	mu        sync.Mutex
	providers map[string]cachedProvider // pool name
	busy      map[string]bool           // intent keys a goroutine works on
	idleSince map[string]time.Time      // node name → first seen idle
	said      map[string]string         // subject → last event message (no repeats)
}

type cachedProvider struct {
	modifyIndex uint64
	p           provider.Provider
	types       []provider.InstanceType
	gossipKey   string // primary gossip key passed to launched agents (a rotation rebuilds the provider)
}

// autoscalers holds each agent's autoscaler, created on first use and
// dropped when the agent stops.
var autoscalers sync.Map // *Agent → *autoscaler

func (a *Agent) scaler() *autoscaler {
	v, loaded := autoscalers.LoadOrStore(a, &autoscaler{
		providers: map[string]cachedProvider{}, busy: map[string]bool{},
		idleSince: map[string]time.Time{}, said: map[string]string{},
	})
	if !loaded {
		context.AfterFunc(a.ctx, func() { autoscalers.Delete(a) })
	}
	return v.(*autoscaler)
}

func (a *Agent) autoscaleLog() *slogger { return &slogger{a} }

// slogger adds the subsystem attribute.
type slogger struct{ a *Agent }

func (l *slogger) info(msg string, args ...any) {
	l.a.logger.Info(msg, append([]any{"subsystem", "autoscale"}, args...)...)
}

func (l *slogger) warn(msg string, args ...any) {
	l.a.logger.Warn(msg, append([]any{"subsystem", "autoscale"}, args...)...)
}

// poolProvider builds (or reuses) the provider of a pool on this node.
// The local provider's state defaults to the leader's data dir: a leader
// on another host cannot see those instances (set base_dir to shared
// storage, or use docker/exec, when that matters).
func (a *Agent) poolProvider(ctx context.Context, p consensus.Pool) (cachedProvider, error) {
	sc := a.scaler()
	sc.mu.Lock()
	c, ok := sc.providers[p.Name]
	sc.mu.Unlock()
	if ok && c.modifyIndex == p.ModifyIndex && c.gossipKey == a.primaryGossipKey() {
		return c, nil
	}
	cfg := maps.Clone(p.ProviderConfig)
	if cfg == nil {
		cfg = map[string]any{}
	}
	if p.Provider == "local" {
		if _, ok := cfg["base_dir"]; !ok {
			cfg["base_dir"] = filepath.Join(a.cfg.DataDir, "pools", p.Name)
		}
		if _, ok := cfg["binary"]; !ok {
			if exe, err := os.Executable(); err == nil {
				cfg["binary"] = exe
			}
		}
		a.childSecurity(cfg)
	}
	raw, err := provider.New(p.Provider, cfg, a.logger.With("subsystem", "provider", "pool", p.Name))
	if err != nil {
		return c, err
	}
	rc := provider.DefaultRetryConfig()
	rc.Logger = a.logger
	wrapped, err := provider.NewRetry(raw, rc)
	if err != nil {
		return c, err
	}
	types, err := wrapped.InstanceTypes(ctx)
	if err != nil {
		return c, fmt.Errorf("pool %q: list instance types: %w", p.Name, err)
	}
	if len(p.Types) > 0 {
		var keep []provider.InstanceType
		for _, name := range p.Types {
			i := slices.IndexFunc(types, func(t provider.InstanceType) bool { return t.Name == name })
			if i < 0 {
				return c, fmt.Errorf("pool %q: %w %q", p.Name, provider.ErrUnknownType, name)
			}
			keep = append(keep, types[i])
		}
		types = keep
	}
	// A launched node carries the pool's labels too: constraints see them.
	for i := range types {
		types[i].Profile.Labels = poolLabels(p, types[i].Profile.Labels)
	}
	c = cachedProvider{modifyIndex: p.ModifyIndex, p: wrapped, types: types, gossipKey: a.primaryGossipKey()}
	sc.mu.Lock()
	sc.providers[p.Name] = c
	sc.mu.Unlock()
	return c, nil
}

// poolLabels are the labels of a node launched for p. Autoscaled nodes
// come and go: they never become Raft voters unless the pool says so.
func poolLabels(p consensus.Pool, base map[string]string) map[string]string {
	out := map[string]string{consensus.LabelVoter: "false"}
	maps.Copy(out, base)
	maps.Copy(out, p.Labels)
	out[consensus.PoolLabel] = p.Name
	return out
}

// requirements turns a spec into what a new machine must offer: its
// resource ask, its label equality constraints (which also opt in to
// reserved types), and the placement engine's own verdict on the profile.
func requirements(spec *placement.Spec) provider.Requirements {
	ask := spec.Ask()
	req := provider.Requirements{CPUMillis: ask.CPUMillis, MemoryMiB: ask.MemoryMiB, Labels: map[string]string{}}
	for _, c := range spec.Constraints {
		if (c.Operator == placement.OpEq || c.Operator == placement.OpEqEq) && strings.HasPrefix(c.Attribute, placement.LabelPrefix) {
			req.Labels[strings.TrimPrefix(c.Attribute, placement.LabelPrefix)] = c.Value
		}
	}
	req.Matches = func(p provider.Profile) bool { return perNode(spec, p) > 0 }
	return req
}

// profileNode is the node a machine with profile p would be.
func profileNode(p provider.Profile) placement.Node {
	return placement.Node{
		ID: "candidate", Name: "candidate", Status: placement.StatusEligible, Labels: p.Labels,
		Attributes: map[string]string{placement.AttrOS: p.OS, placement.AttrArch: p.Arch},
		Capacity:   placement.Resources{CPUMillis: int64(math.Round(p.CPUs * 1000)), MemoryMiB: p.MemoryMiB},
	}
}

// perNode is how many instances of spec the placement engine puts on one
// empty machine with profile p (0: it does not fit or match), at most want.
func perNode(spec *placement.Spec, p provider.Profile) int {
	s := *spec
	s.Count = 1
	if !spec.DistinctHosts {
		ask := spec.Ask()
		s.Count = 64
		if ask.CPUMillis > 0 {
			s.Count = min(s.Count, int(math.Round(p.CPUs*1000))/int(ask.CPUMillis))
		}
		if ask.MemoryMiB > 0 {
			s.Count = min(s.Count, int(p.MemoryMiB/ask.MemoryMiB))
		}
		s.Count = max(s.Count, 1)
	}
	res := placement.Plan(placement.Input{Nodes: []placement.Node{profileNode(p)}, Deployments: []*placement.Spec{&s}})
	return len(res.Place)
}

// chooseLaunch picks, among pools able to launch, the cheapest type that
// hosts spec, and how many machines the pending count needs.
func chooseLaunch(spec *placement.Spec, pending int, candidates map[string][]provider.InstanceType) (pool string, t provider.InstanceType, count int, err error) {
	req := requirements(spec)
	var why []string
	for _, name := range slices.Sorted(maps.Keys(candidates)) {
		ct, cerr := provider.ChooseType(candidates[name], req)
		if cerr != nil {
			why = append(why, fmt.Sprintf("pool %s: %v", name, cerr))
			continue
		}
		if pool == "" || ct.CostPerHour < t.CostPerHour {
			pool, t = name, ct
		}
	}
	if pool == "" {
		if len(why) == 0 {
			why = []string{"no pool can launch now"}
		}
		return "", t, 0, fmt.Errorf("%w: %s", provider.ErrNoMatch, strings.Join(why, "; "))
	}
	per := perNode(spec, t.Profile)
	return pool, t, (pending + per - 1) / per, nil
}

// autoscaleTick runs one round on the leader. It never blocks on a
// provider: intents run in goroutines the agent owns.
func (a *Agent) autoscaleTick(n *consensus.Node) {
	st := n.State()
	pools, _ := st.Pools()
	intents, _ := st.Intents()
	// Open intents first: a new leader finishes what the old one began
	// before deciding anything new for that pool.
	openPools, openDeps := map[string]bool{}, map[string]bool{}
	for _, in := range intents {
		if in.State != consensus.IntentOpen {
			continue
		}
		openPools[in.Pool], openDeps[in.Deployment] = true, true
		a.startIntent(n, in)
	}
	if len(pools) == 0 {
		return
	}
	now := time.Now()
	members := a.gossip.Members()
	// Nodes being or already terminated count neither as members nor as
	// on their way: until gossip sees one go it still looks joined, and
	// once it has gone its launch intent would count it as arriving. Either
	// way the pool looked above its min and scale-down took a second node.
	gone := map[string]bool{}
	for _, in := range intents {
		if in.Kind == consensus.IntentTerminate && (in.State == consensus.IntentOpen || in.State == consensus.IntentDone) {
			for _, name := range in.InstanceIDs {
				gone[name] = true
			}
		}
	}
	joined := map[string]gossip.Member{}
	for _, m := range members {
		if gone[m.Name] {
			continue
		}
		if m.Status == gossip.StatusAlive || m.Status == gossip.StatusSuspect {
			joined[m.Name] = m
		}
	}
	// Per pool: nodes that joined, and launched ones still on their way.
	live, lastLaunch, lastFailed := map[string]int{}, map[string]time.Time{}, map[string]time.Time{}
	arriving := map[string]bool{} // deployments with launched nodes not yet joined
	for _, m := range joined {
		if p := m.Meta.Labels[consensus.PoolLabel]; p != "" {
			live[p]++
		}
	}
	for _, in := range intents {
		if in.Kind != consensus.IntentLaunch {
			continue
		}
		if in.Created.After(lastLaunch[in.Pool]) {
			lastLaunch[in.Pool] = in.Created
		}
		if in.State == consensus.IntentFailed && in.Updated.After(lastFailed[in.Pool]) {
			lastFailed[in.Pool] = in.Updated
		}
		switch {
		case in.State == consensus.IntentOpen:
			live[in.Pool] += in.Count
		case in.State == consensus.IntentDone && now.Sub(in.Updated) < joinGrace:
			for _, id := range in.InstanceIDs {
				if _, ok := joined[id]; !ok && !gone[id] {
					live[in.Pool]++
					arriving[in.Deployment] = true
				}
			}
		}
	}
	canLaunch := func(p consensus.Pool) bool {
		return !openPools[p.Name] && live[p.Name] < p.Max &&
			now.Sub(lastLaunch[p.Name]) >= p.ScaleUpCooldown &&
			now.Sub(lastFailed[p.Name]) >= max(p.ScaleUpCooldown, failureBackoff)
	}
	ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	defer cancel()
	provs := map[string]cachedProvider{}
	for _, p := range pools {
		c, err := a.poolProvider(ctx, p)
		if err != nil {
			a.sayOnce(ctx, n, "pool/"+p.Name, "pool-error", p.Name, fmt.Sprintf("pool %s unusable: %v", p.Name, err))
			continue
		}
		provs[p.Name] = c
		// Below min: launch the cheapest type with no requirements.
		if live[p.Name] < p.Min && canLaunch(p) {
			t, err := provider.ChooseType(c.types, provider.Requirements{})
			if err != nil {
				a.sayOnce(ctx, n, "pool/"+p.Name, "scale-up-blocked", p.Name, fmt.Sprintf("pool %s below min %d: %v", p.Name, p.Min, err))
				continue
			}
			a.openLaunch(ctx, n, p, t.Name, p.Min-live[p.Name], "", fmt.Sprintf("pool %s has %d nodes, below its min %d", p.Name, live[p.Name], p.Min))
			openPools[p.Name] = true
		}
	}
	// Pending work: the cheapest machine that hosts it, in any pool.
	// demand holds back scale-down: pending work a pool node could host.
	// Work no pool can host (no type matches) does not keep idle nodes.
	demand := false
	pending, _ := st.Pending()
	for _, dep := range slices.Sorted(maps.Keys(pending)) {
		pd := pending[dep]
		if pd.Count == 0 {
			continue
		}
		if openDeps[dep] || arriving[dep] {
			demand = true
			continue
		}
		d, ok, _ := st.DeploymentByName(dep)
		if !ok {
			continue
		}
		cands := map[string][]provider.InstanceType{}
		for _, p := range pools {
			if c, ok := provs[p.Name]; ok && canLaunch(p) {
				cands[p.Name] = c.types
			}
		}
		if len(cands) == 0 {
			demand = true
			a.sayOnce(ctx, n, "dep/"+dep, "scale-up-blocked", "", fmt.Sprintf("deployment %s: %d instances pending (%s); no pool may launch now (max, cooldown or a launch in progress)", dep, pd.Count, pd.Metrics.String()))
			continue
		}
		poolName, t, count, err := chooseLaunch(&d.Spec, pd.Count, cands)
		if err != nil {
			if !errors.Is(err, provider.ErrNoMatch) {
				demand = true
			}
			a.sayOnce(ctx, n, "dep/"+dep, "scale-up-blocked", "", fmt.Sprintf("deployment %s: %d instances pending; %v", dep, pd.Count, err))
			continue
		}
		p := pools[slices.IndexFunc(pools, func(p consensus.Pool) bool { return p.Name == poolName })]
		if room := p.Max - live[p.Name]; count > room {
			a.sayOnce(ctx, n, "max/"+dep, "scale-up-capped", p.Name, fmt.Sprintf("deployment %s needs %d x %s; pool %s is capped at max %d: launching %d", dep, count, t.Name, p.Name, p.Max, room))
			count = room
		}
		demand = true
		why := fmt.Sprintf("deployment %s has %d instances pending (%s)", dep, pd.Count, pd.Metrics.String())
		if a.openLaunch(ctx, n, p, t.Name, count, dep, why) {
			openPools[p.Name] = true
			live[p.Name] += count
		}
	}
	a.scaleDown(ctx, n, pools, provs, joined, live, openPools, demand, now)
}

// scaleDown drains and terminates one idle node per pool per tick.
func (a *Agent) scaleDown(ctx context.Context, n *consensus.Node, pools []consensus.Pool, provs map[string]cachedProvider,
	joined map[string]gossip.Member, live map[string]int, openPools map[string]bool, anyPending bool, now time.Time) {
	sc := a.scaler()
	st := n.State()
	drained, _ := st.Drained()
	byName := map[string]consensus.Pool{}
	for _, p := range pools {
		byName[p.Name] = p
	}
	seen := map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(joined)) {
		m := joined[name]
		p, ok := byName[m.Meta.Labels[consensus.PoolLabel]]
		if !ok || name == a.Name() {
			continue
		}
		seen[name] = true
		ps, _ := st.NodePlacements(m.Meta.ID.String())
		sc.mu.Lock()
		if len(ps) > 0 {
			delete(sc.idleSince, name)
			sc.mu.Unlock()
			continue
		}
		since, ok := sc.idleSince[name]
		if !ok {
			since = now
			sc.idleSince[name] = now
		}
		sc.mu.Unlock()
		if now.Sub(since) < p.ScaleDownAfter || anyPending || openPools[p.Name] || live[p.Name]-1 < p.Min {
			continue
		}
		if _, ok := provs[p.Name]; !ok {
			continue
		}
		id := m.Meta.ID.String()
		if !drained[id] {
			if _, _, err := n.Apply(ctx, &consensus.SetDrain{NodeID: id, Drain: true}); err != nil {
				a.autoscaleLog().warn("drain before scale-down failed", "node", name, "error", err)
				continue
			}
		}
		in := consensus.Intent{
			Key: fmt.Sprintf("%s-d%d", p.Name, st.Index()), Pool: p.Name, Kind: consensus.IntentTerminate,
			InstanceIDs: []string{name}, State: consensus.IntentOpen, Created: now, Updated: now,
			Reason: fmt.Sprintf("node %s idle for %s (scale_down_after %s)", name, now.Sub(since).Round(time.Second), p.ScaleDownAfter),
		}
		ev := &consensus.Event{Time: now, Kind: "scale-down", Pool: p.Name, Message: fmt.Sprintf("terminate %s: %s (intent %s)", name, in.Reason, in.Key)}
		if _, _, err := n.Apply(ctx, &consensus.PutIntent{Intent: in, Create: true, Event: ev}); err != nil {
			a.autoscaleLog().warn("terminate intent not committed", "node", name, "error", err)
			continue
		}
		a.autoscaleLog().info("scale-down", "pool", p.Name, "node", name, "key", in.Key)
		openPools[p.Name] = true
		live[p.Name]--
		a.startIntent(n, in)
	}
	sc.mu.Lock()
	for name := range sc.idleSince {
		if !seen[name] {
			delete(sc.idleSince, name)
		}
	}
	sc.mu.Unlock()
}

// openLaunch commits a launch intent and starts it.
func (a *Agent) openLaunch(ctx context.Context, n *consensus.Node, p consensus.Pool, typ string, count int, dep, why string) bool {
	if count < 1 {
		return false
	}
	now := time.Now()
	in := consensus.Intent{
		Key: fmt.Sprintf("%s-u%d", p.Name, n.State().Index()), Pool: p.Name, Kind: consensus.IntentLaunch,
		Type: typ, Count: count, Deployment: dep, State: consensus.IntentOpen, Reason: why, Created: now, Updated: now,
	}
	ev := &consensus.Event{Time: now, Kind: "scale-up", Pool: p.Name, Message: fmt.Sprintf("launch %d x %s in pool %s: %s (intent %s)", count, typ, p.Name, why, in.Key)}
	if _, _, err := n.Apply(ctx, &consensus.PutIntent{Intent: in, Create: true, Event: ev}); err != nil {
		a.autoscaleLog().warn("launch intent not committed", "pool", p.Name, "error", err)
		return false
	}
	a.autoscaleLog().info("scale-up", "pool", p.Name, "type", typ, "count", count, "deployment", dep, "key", in.Key)
	a.startIntent(n, in)
	return true
}

// sayOnce records an event unless the same subject said the same last.
func (a *Agent) sayOnce(ctx context.Context, n *consensus.Node, subject, kind, pool, msg string) {
	sc := a.scaler()
	sc.mu.Lock()
	same := sc.said[subject] == msg
	sc.said[subject] = msg
	sc.mu.Unlock()
	if same {
		return
	}
	a.autoscaleLog().info(msg, "kind", kind)
	if _, _, err := n.Apply(ctx, &consensus.AppendEvent{Event: consensus.Event{Time: time.Now(), Kind: kind, Pool: pool, Message: msg}}); err != nil {
		sc.mu.Lock()
		delete(sc.said, subject)
		sc.mu.Unlock()
	}
}

// startIntent runs an open intent in an agent-owned goroutine unless one
// already does.
func (a *Agent) startIntent(n *consensus.Node, in consensus.Intent) {
	sc := a.scaler()
	sc.mu.Lock()
	if sc.busy[in.Key] {
		sc.mu.Unlock()
		return
	}
	sc.busy[in.Key] = true
	sc.mu.Unlock()
	a.goFunc(func() {
		defer func() {
			sc.mu.Lock()
			delete(sc.busy, in.Key)
			sc.mu.Unlock()
		}()
		a.runIntent(n, in)
	})
}

// runIntent carries an open intent to done or failed: reconcile with the
// provider's list, call the provider only for what is missing, confirm
// with the list, commit the result with an event. If this node stops
// being the leader or shuts down, the intent stays open for the next one.
func (a *Agent) runIntent(n *consensus.Node, in consensus.Intent) {
	ctx, cancel := context.WithTimeout(a.ctx, intentTimeout)
	defer cancel()
	st := n.State()
	pools, _ := st.Pools()
	i := slices.IndexFunc(pools, func(p consensus.Pool) bool { return p.Name == in.Pool })
	if i < 0 {
		a.closeIntent(n, in, consensus.IntentFailed, "pool-error", fmt.Sprintf("intent %s: pool %s no longer exists", in.Key, in.Pool))
		return
	}
	pool := pools[i]
	c, err := a.poolProvider(ctx, pool)
	if err != nil {
		a.closeIntent(n, in, consensus.IntentFailed, "pool-error", fmt.Sprintf("intent %s: %v", in.Key, err))
		return
	}
	start := time.Now()
	switch in.Kind {
	case consensus.IntentLaunch:
		all, err := c.p.List(ctx)
		if err == nil {
			have := provider.WithKey(all, in.Key)
			if len(provider.MissingIndexes(have, in.Count)) > 0 {
				_, err = c.p.Launch(ctx, provider.LaunchRequest{
					IdempotencyKey: in.Key, Type: in.Type, Count: in.Count,
					JoinAddr: a.joinAddr(), Labels: poolLabels(pool, nil),
				})
			}
		}
		if a.ctx.Err() != nil || !n.IsLeader() {
			return // the next leader resumes it
		}
		all, lerr := c.p.List(ctx)
		have := provider.WithKey(all, in.Key)
		var ids []string
		for _, x := range have {
			if x.Live() {
				ids = append(ids, x.ID)
			}
		}
		if err == nil && lerr == nil && len(ids) == in.Count {
			in.InstanceIDs = ids
			a.closeIntent(n, in, consensus.IntentDone, "launched",
				fmt.Sprintf("launched %d x %s in pool %s in %s: %s (intent %s)", in.Count, in.Type, in.Pool, time.Since(start).Round(time.Millisecond), strings.Join(ids, ", "), in.Key))
			return
		}
		cause := errors.Join(err, lerr)
		if cause == nil {
			cause = fmt.Errorf("provider lists %d live instances for the key, want %d", len(ids), in.Count)
		}
		// No half launches: what did start is terminated, so the failed
		// intent leaves no orphan behind.
		if len(ids) > 0 {
			if terr := c.p.Terminate(ctx, ids); terr != nil {
				cause = errors.Join(cause, fmt.Errorf("terminate the partial launch: %w", terr))
			}
		}
		in.InstanceIDs = ids
		a.closeIntent(n, in, consensus.IntentFailed, "launch-failed",
			fmt.Sprintf("launch of %d x %s in pool %s failed after retries: %v (intent %s)", in.Count, in.Type, in.Pool, cause, in.Key))
	case consensus.IntentTerminate:
		err := c.p.Terminate(ctx, in.InstanceIDs)
		if a.ctx.Err() != nil || !n.IsLeader() {
			return
		}
		if err == nil {
			var all []provider.Instance
			if all, err = c.p.List(ctx); err == nil {
				for _, x := range all {
					if slices.Contains(in.InstanceIDs, x.ID) && x.Live() {
						err = fmt.Errorf("instance %s still %s", x.ID, x.State)
					}
				}
			}
		}
		if err != nil {
			a.closeIntent(n, in, consensus.IntentFailed, "terminate-failed",
				fmt.Sprintf("terminate %s in pool %s failed after retries: %v (intent %s)", strings.Join(in.InstanceIDs, ", "), in.Pool, err, in.Key))
			return
		}
		a.closeIntent(n, in, consensus.IntentDone, "terminated",
			fmt.Sprintf("terminated %s in pool %s in %s (intent %s)", strings.Join(in.InstanceIDs, ", "), in.Pool, time.Since(start).Round(time.Millisecond), in.Key))
	}
}

// joinAddr is this node's gossip address from the member list: unlike
// GossipAddr (memberlist's LocalNode, read without its lock) it is safe
// while the leader's roles are being updated.
func (a *Agent) joinAddr() string {
	for _, m := range a.gossip.Members() {
		if m.Name == a.Name() {
			return m.Address()
		}
	}
	return ""
}

func (a *Agent) closeIntent(n *consensus.Node, in consensus.Intent, state, kind, msg string) {
	ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	defer cancel()
	now := time.Now()
	in.State, in.Updated = state, now
	if state == consensus.IntentFailed {
		in.Reason = msg
	}
	ev := &consensus.Event{Time: now, Kind: kind, Pool: in.Pool, Message: msg}
	if _, _, err := n.Apply(ctx, &consensus.PutIntent{Intent: in, Event: ev}); err != nil {
		a.autoscaleLog().warn("intent result not committed; the leader will reconcile it again", "key", in.Key, "error", err)
		return
	}
	if state == consensus.IntentFailed {
		a.autoscaleLog().warn(msg)
	} else {
		a.autoscaleLog().info(msg)
	}
}
