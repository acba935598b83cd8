package agent

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/procfs"

	"colony/agent/workload"
	"colony/consensus"
	"colony/gossip"
	"colony/scaling/monitor"
)

// Cluster monitoring (scaling/DESIGN.md, "Monitoring plan"). The leader
// commits a tree (consensus.CommitMonitorPlan) when it changes; every node
// follows it with a blocking query, samples itself every interval, merges
// what its children pushed and pushes one summary to its parent; the root
// holds the whole cluster. Any node answers /v1/cluster/metrics by asking the root.

// Monitoring defaults and limits (Config.MonitorInterval and
// MonitorGroupSize).
const (
	// DefaultMonitorInterval is how often a node samples and pushes.
	DefaultMonitorInterval = 5 * time.Second
	// MinMonitorInterval and MaxMonitorInterval bound the interval: below
	// 100ms sampling /proc and pushing costs more than it tells; above an
	// hour the alarms' grace periods stop meaning anything.
	MinMonitorInterval = 100 * time.Millisecond
	MaxMonitorInterval = time.Hour
	// DefaultMonitorGroupSize is K, the most members in a group.
	DefaultMonitorGroupSize = 32
	// MaxMonitorGroupSize is the largest K monitor.Config accepts.
	MaxMonitorGroupSize = 4096
)

// tuneMonitor, set by tests only, adjusts the tree (small groups make a
// deep tree out of a few in-process agents).
var tuneMonitor func(*monitor.Config)

// MonitorGroupSizeSetting is the cluster setting that overrides K
// (--monitor-group-size) in the leader's plan, so an operator can reshape
// the tree without restarting the leader: 2-MaxMonitorGroupSize, checked
// when written; the leader ignores (and logs) any other value. Deleting
// it brings back the leader's flag.
const MonitorGroupSizeSetting = "monitor.group_size"

// ParseMonitorGroupSize reads a monitor.group_size value.
func ParseMonitorGroupSize(v string) (int, error) {
	k, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || k < 2 || k > MaxMonitorGroupSize {
		return 0, fmt.Errorf("%s %q: want a group size of 2-%d", MonitorGroupSizeSetting, v, MaxMonitorGroupSize)
	}
	return k, nil
}

// setGroupSize makes cfg plan groups of at most k members, aiming a
// quarter below k as the defaults do (24 of 32), so single joins rarely
// overflow a group.
func setGroupSize(cfg *monitor.Config, k int) {
	cfg.GroupSize, cfg.TargetGroupSize = k, min(k, max(2, k*3/4))
}

// monitorSampleMetric records when each sample was taken: the root's
// minimum of it is the age of the oldest data in the cluster view.
const monitorSampleMetric = "sampled_at_seconds"

// nodeMonitor is one agent's part of the monitoring tree.
type nodeMonitor struct {
	a    *Agent
	cfg  monitor.Config
	recv *monitor.Receiver

	rejected  *prometheus.CounterVec
	pushes    prometheus.Counter
	pushBytes prometheus.Histogram

	// gz caches the committed plan gzipped (gzipPlan), for the plan
	// committed at index gzAt.
	gzMu sync.Mutex
	gzAt uint64
	gz   []byte

	mu        sync.Mutex
	plan      *monitor.Plan
	planIndex uint64
	children  map[string]childSummary
	own       *monitor.Summary // the latest own sample
	merged    *monitor.Summary // own + children: what was pushed up (the cluster on the root)
	mergedAt  time.Time
	lastSeq   uint64
	health    *monitor.Health
	restarts  map[string]int
	cpu       *procfs.CPUStat
	cpuAt     time.Time
	net       [2]uint64
	netAt     time.Time
	lastBytes int

	// Totals for GET /v1/monitor/status and the figures test: summary
	// bytes pushed and received, and the time spent sampling, merging,
	// encoding and accepting.
	bytesOut, bytesIn, summariesIn, workNanos atomic.Uint64
	// downgrade holds parents that refused the current summary version
	// (an older release) and until when to send them the oldest one.
	downgrade map[string]time.Time

	// The leader's last view of the committed plan, parsed once per
	// commit rather than every Raft tick, and its last commit error
	// (logged once, not every tick).
	committed      *monitor.Plan
	committedIndex uint64
	commitErr      string
	// The plan computed at the previous tick and when a plan was last
	// committed: while members keep joining, a new plan is committed only
	// every planCommitDelay (see monitorPlanTick).
	lastComputed *monitor.Plan
	lastCommit   time.Time
	badGroupSize string // a bad monitor.group_size value, once logged

	rulesText string // the monitor.rules setting the evaluator was built from
	rulesAt   time.Time
	eval      *monitor.Evaluator
}

// MonitorRulesSetting is the setting holding threshold alarm rules, one
// per line or separated by ';' (e.g. "cpu_percent p99 > 90 for 2m"). The
// monitoring root evaluates them on the cluster view.
const MonitorRulesSetting = "monitor.rules"

type childSummary struct {
	s  *monitor.Summary
	at time.Time
}

func (a *Agent) mon() *nodeMonitor { return a.monState }

func (a *Agent) monitorInterval() time.Duration {
	if a.cfg.MonitorInterval > 0 {
		return a.cfg.MonitorInterval
	}
	return DefaultMonitorInterval
}

// monitorState returns the node's monitor. It is created while New builds
// the routes (single-threaded), so later calls only read the field.
func (a *Agent) monitorState() *nodeMonitor {
	if m := a.mon(); m != nil {
		return m
	}
	cfg := monitor.DefaultConfig()
	cfg.Interval = a.monitorInterval()
	cfg.MaxAge = max(cfg.MaxAge, 12*cfg.Interval)
	cfg.NodeDownGrace = max(3*cfg.Interval, min(cfg.NodeDownGrace, 6*cfg.Interval))
	cfg.Logger = a.logger
	if k := a.cfg.MonitorGroupSize; k > 0 {
		setGroupSize(&cfg, k)
	}
	if tuneMonitor != nil {
		tuneMonitor(&cfg)
	}
	m := &nodeMonitor{a: a, cfg: cfg, children: map[string]childSummary{}, restarts: map[string]int{}, downgrade: map[string]time.Time{}}
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "colony_monitor_summaries_rejected_total", Help: "Summaries refused by this aggregator, by reason.",
	}, []string{"reason"})
	m.pushes = prometheus.NewCounter(prometheus.CounterOpts{Name: "colony_monitor_pushes_total", Help: "Summaries pushed to the parent."})
	m.pushBytes = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "colony_monitor_summary_bytes", Help: "Size of the summaries pushed to the parent.",
		Buckets: prometheus.ExponentialBuckets(256, 2, 10),
	})
	recv, err := monitor.NewReceiver(monitor.ReceiverConfig{
		Self: a.id.String(), Monitor: cfg, Alive: a.aliveByID,
		OnReject: func(reason string) { m.rejected.WithLabelValues(reason).Inc() },
	})
	if err != nil {
		panic(err) // the config above is always valid
	}
	m.recv = recv
	m.health, _ = monitor.NewHealth(cfg)
	a.monState = m
	a.reg.MustRegister(m.rejected, m.pushes, m.pushBytes, &ownCollector{m: m})
	return m
}

// aliveByID reports whether gossip sees the node alive (or suspect).
func (a *Agent) aliveByID(id string) bool {
	if id == a.id.String() {
		return true
	}
	m, ok := a.memberByID(id)
	return ok && (m.Status == gossip.StatusAlive || m.Status == gossip.StatusSuspect)
}

// monitorLoop owns the node's monitoring goroutines.
func (a *Agent) monitorLoop() {
	m := a.monitorState()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.followPlan()
	}()
	// Sample at once, then at a random phase of the interval, as memberlist
	// staggers its own timers: agents started together (a fleet booting,
	// the scale harness's 1,000) would otherwise all sample and push their
	// summaries in the same instant of every interval.
	m.tick(time.Now())
	next := time.NewTimer(rand.N(m.cfg.Interval))
	defer next.Stop()
	for {
		select {
		case <-a.ctx.Done():
			wg.Wait()
			return
		case <-next.C:
		}
		m.tick(time.Now())
		next.Reset(m.cfg.Interval)
	}
}

// monitorPlanTick runs on the leader every Raft tick: it recomputes the
// plan from gossip and commits it only when it changed.
func (a *Agent) monitorPlanTick(n *consensus.Node) {
	m := a.mon()
	if m == nil {
		return
	}
	voters := map[string]bool{}
	for _, v := range a.gossipedVoters() {
		voters[v.String()] = true
	}
	var members []monitor.Member
	for _, g := range a.gossip.Members() {
		if g.Status == gossip.StatusLeft {
			continue
		}
		id := g.Meta.ID.String()
		members = append(members, monitor.Member{ID: id, Zone: g.Meta.Labels["zone"], Voter: voters[id], Alive: g.Status == gossip.StatusAlive || g.Status == gossip.StatusSuspect})
	}
	cfg := m.cfg
	if k := m.groupSizeSetting(n); k > 0 {
		setGroupSize(&cfg, k)
	}
	p, err := monitor.ComputePlan(members, cfg)
	if err != nil {
		a.logger.Warn("cannot compute the monitoring plan", "subsystem", "monitor", "error", err)
		return
	}
	raw, at, _ := n.State().MonitorPlan()
	if at != m.committedIndex {
		var old monitor.Plan
		m.committed, m.committedIndex = nil, at
		if len(raw) > 0 && json.Unmarshal(raw, &old) == nil {
			m.committed = &old
		}
	}
	held := monitor.SameTree(m.lastComputed, p)
	m.lastComputed = p
	if old := m.committed; old != nil {
		p.Version = old.Version
		if monitor.SameTree(old, p) {
			return
		}
		// Every commit sends the whole plan (~80 bytes a node) to every
		// node's blocking query: under a join storm of thousands, one
		// commit per Raft tick would be O(N²) bytes a second. So commit
		// once the membership has held still for a tick, or at least
		// every planCommitDelay while it keeps changing.
		if !held && time.Since(m.lastCommit) < planCommitDelay(len(members)) {
			return
		}
	}
	p.Version++
	body, err := json.Marshal(p)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	defer cancel()
	// Past ~3,000 nodes the plan goes in several Raft entries, installed
	// at once when the last one commits (consensus.SetMonitorPlanPart).
	_, cmds, err := n.CommitMonitorPlan(ctx, body)
	if err != nil {
		if err.Error() != m.commitErr {
			m.commitErr = err.Error()
			a.logger.Warn("monitoring plan not committed; will plan again", "subsystem", "monitor", "error", err, "bytes", len(body))
		}
		return
	}
	m.commitErr = ""
	m.lastCommit = time.Now()
	a.logger.Info("monitoring plan committed", "subsystem", "monitor", "version", p.Version, "nodes", p.Len(), "depth", p.Depth, "root", p.RootID, "bytes", len(body), "commands", cmds)
}

// groupSizeSetting returns K from the monitor.group_size setting, or 0
// when it is unset or bad (logged once per value).
func (m *nodeMonitor) groupSizeSetting(n *consensus.Node) int {
	s, found, _ := n.State().Setting(MonitorGroupSizeSetting)
	if !found {
		m.badGroupSize = ""
		return 0
	}
	k, err := ParseMonitorGroupSize(s.Value)
	if err != nil {
		if s.Value != m.badGroupSize {
			m.badGroupSize = s.Value
			m.a.logger.Warn("ignoring a bad monitoring group size setting; planning with --monitor-group-size", "subsystem", "monitor", "error", err, "group_size", m.cfg.GroupSize)
		}
		return 0
	}
	m.badGroupSize = ""
	return k
}

// planCommitDelay bounds how long the leader holds back a changed
// monitoring plan while the membership of n members keeps changing: 10 s,
// or 20 ms a member past 500. Each commit makes every node fetch and decode
// the whole plan, O(n) work on each of n nodes, so a fixed delay made a
// long join storm cost O(n²) a second; growing with n keeps it O(n). At
// 750 agents on one machine following the plan took about 0.6 CPU-seconds
// per commit (a CPU profile of the scale harness). Newcomers are planned
// at most this much after they join, and as soon as the membership holds
// still for a tick.
func planCommitDelay(n int) time.Duration {
	return max(10*time.Second, time.Duration(n)*20*time.Millisecond)
}

// followPlan keeps the node's copy of the committed plan current.
func (m *nodeMonitor) followPlan() {
	a := m.a
	var index uint64
	fail := 0
	for a.ctx.Err() == nil {
		raw, idx, err := m.fetchPlan(index)
		if err != nil {
			fail++
			wait := min(time.Duration(fail)*200*time.Millisecond, 5*time.Second)
			t := time.NewTimer(wait + time.Duration(rand.Int64N(int64(100*time.Millisecond))))
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
			idx = 0
		}
		index = idx
		if len(raw) == 0 {
			continue
		}
		var p monitor.Plan
		if err := json.Unmarshal(raw, &p); err != nil || p.Check() != nil {
			a.logger.Warn("ignoring a broken monitoring plan", "subsystem", "monitor", "error", err)
			continue
		}
		m.recv.SetPlan(&p)
		m.mu.Lock()
		m.plan, m.planIndex = &p, idx
		m.mu.Unlock()
	}
}

// fetchPlan runs one blocking query for the plan, locally on a voter.
func (m *nodeMonitor) fetchPlan(index uint64) (json.RawMessage, uint64, error) {
	a := m.a
	wait := 5 * time.Minute
	// Locally on a voter that follows a leader; a voter that knows none
	// (cut off, or removed while away and not yet retired) may hold an old
	// state for good, so it asks the others like any node.
	if n := a.raftNode(); n != nil && raftLeaderKnown(n) {
		ctx, cancel := context.WithTimeout(a.ctx, min(wait, 10*m.cfg.Interval))
		defer cancel()
		st := n.State()
		raw, idx := consensus.Blocking(ctx, st, index, func() (json.RawMessage, uint64) {
			p, _, i := st.MonitorPlan()
			return p, i
		})
		return raw, idx, a.ctx.Err()
	}
	// A short wait: a poll parked on a voter that then gets cut off (a
	// partition, a host gone silent) would otherwise hold this node on an
	// old plan for minutes.
	b, idx, err := a.voterLongPoll("/v1/monitor/plan", url.Values{}, index, min(wait, 10*m.cfg.Interval), consensus.MaxMonitorPlanBytes+1)
	if err != nil {
		return nil, 0, err
	}
	if len(b) > consensus.MaxMonitorPlanBytes {
		return nil, 0, fmt.Errorf("monitoring plan larger than %d bytes", consensus.MaxMonitorPlanBytes)
	}
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		b = nil
	}
	return b, idx, nil
}

func raftLeaderKnown(n *consensus.Node) bool {
	id, _ := n.Leader()
	return id != ""
}

// tick samples the node, merges its children and pushes upward.
func (m *nodeMonitor) tick(now time.Time) {
	own := m.sample(now)
	m.mu.Lock()
	plan := m.plan
	self := m.a.id.String()
	merged := own
	kept := 0
	for id, c := range m.children {
		if now.Sub(c.at) > 3*m.cfg.Interval {
			delete(m.children, id)
			continue
		}
		merged = monitor.Merge(merged, c.s)
		kept++
	}
	if plan != nil {
		m.health.ExpectAggregators(childAggregators(plan, self), now)
		if plan.Root() == self || m.standsInForRoot(plan) {
			m.mu.Unlock()
			m.refreshRules(now)
			m.mu.Lock()
			for _, g := range m.a.gossip.Members() {
				if g.Status == gossip.StatusLeft {
					m.health.ForgetNode(g.Meta.ID.String())
					continue
				}
				m.health.NodeStatus(g.Meta.ID.String(), g.Status == gossip.StatusAlive || g.Status == gossip.StatusSuspect, now)
			}
		}
	}
	isRoot := plan != nil && (plan.Root() == self || m.standsInForRoot(plan))
	if !isRoot {
		m.health.ForgetNodes()
	}
	for _, tr := range m.health.Evaluate(now) {
		m.logAlarm(tr)
	}
	merged.Alarms = append(merged.Alarms, m.health.Active()...)
	if isRoot && m.eval != nil {
		for _, tr := range m.eval.Evaluate(merged, now) {
			m.logAlarm(tr)
		}
		merged.Alarms = append(merged.Alarms, m.eval.Active()...)
	}
	merged = monitor.Merge(merged, &monitor.Summary{}) // sorts and bounds the alarms
	merged.Origin = self
	m.lastSeq = max(m.lastSeq+1, uint64(now.UnixMilli()))
	merged.Seq = m.lastSeq
	if plan != nil {
		merged.Epoch = plan.Version
	}
	m.own, m.merged, m.mergedAt = own, merged, now
	m.mu.Unlock()
	m.workNanos.Add(uint64(time.Since(now))) // the push's encoding is added in pushVersion, not its round trip
	if plan == nil {
		return
	}
	target, ok := plan.Failover(self, m.a.aliveByID)
	if !ok || target == "" {
		return // not planned yet, or the root (or its stand-in)
	}
	m.push(target, merged)
}

func (m *nodeMonitor) logAlarm(tr monitor.Transition) {
	if tr.Raised {
		m.a.logger.Warn("alarm raised", "subsystem", "monitor", "kind", tr.Alarm.Kind, "subject", tr.Alarm.Subject, "value", tr.Value)
	} else {
		m.a.logger.Info("alarm cleared", "subsystem", "monitor", "kind", tr.Alarm.Kind, "subject", tr.Alarm.Subject)
	}
}

// refreshRules re-reads the threshold rules (at most every 5 intervals):
// from its own state on a voter, else with a stale read from a voter.
func (m *nodeMonitor) refreshRules(now time.Time) {
	if now.Sub(m.rulesAt) < 5*m.cfg.Interval {
		return
	}
	m.rulesAt = now
	a := m.a
	text := ""
	if n := a.raftNode(); n != nil {
		s, _, _ := n.State().Setting(MonitorRulesSetting)
		text = s.Value
	} else {
		vs := a.voterMembers()
		if len(vs) == 0 {
			return
		}
		c, _ := NewClient(a.apiURL(vs[rand.IntN(len(vs))]))
		c.http = a.httpClient
		ctx, cancel := context.WithTimeout(a.ctx, m.cfg.Interval)
		defer cancel()
		var s consensus.Setting
		code, err := c.do(ctx, "GET", "/v1/settings/"+MonitorRulesSetting+"?consistency=stale", nil, &s, false)
		if err != nil && code != http.StatusNotFound {
			return // keep the rules we have
		}
		text = s.Value
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if text == m.rulesText && (m.eval != nil || text == "") {
		return
	}
	m.rulesText = text
	var rules []monitor.Rule
	for _, line := range strings.FieldsFunc(text, func(r rune) bool { return r == '\n' || r == ';' }) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		r, err := monitor.ParseRule(strings.TrimSpace(line))
		if err != nil {
			a.logger.Warn("ignoring a bad alarm rule", "subsystem", "monitor", "rule", line, "error", err)
			continue
		}
		rules = append(rules, r)
	}
	m.eval = nil
	if len(rules) > 0 {
		m.eval = monitor.NewEvaluator(rules)
	}
}

// childAggregators are this node's children that aggregate in turn.
func childAggregators(p *monitor.Plan, self string) []string {
	var out []string
	for _, c := range p.Children(self) {
		if p.Level(c) > 0 {
			out = append(out, c)
		}
	}
	return out
}

// standsInForRoot reports whether the root is dead and this node took
// its place.
func (m *nodeMonitor) standsInForRoot(p *monitor.Plan) bool {
	if m.a.aliveByID(p.Root()) {
		return false
	}
	target, ok := p.Failover(m.a.id.String(), m.a.aliveByID)
	return ok && target == ""
}

func (m *nodeMonitor) push(target string, s *monitor.Summary) {
	a := m.a
	mem, ok := a.memberByID(target)
	if !ok {
		return
	}
	version := monitor.SummaryVersion
	m.mu.Lock()
	if until, ok := m.downgrade[target]; ok && time.Now().Before(until) {
		version = monitor.MinSummaryVersion
	}
	m.mu.Unlock()
	code, msg, err := m.pushVersion(mem, s, version)
	if code == http.StatusBadRequest && version > monitor.MinSummaryVersion && strings.Contains(msg, "("+monitor.RejectVersion+")") {
		// A parent of the previous release (a rolling upgrade): speak its
		// version for a while, then try the current one again.
		a.logger.Info("parent refuses this summary version; sending the oldest one", "subsystem", "monitor", "to", mem.Name, "version", monitor.MinSummaryVersion)
		m.mu.Lock()
		m.downgrade[target] = time.Now().Add(10 * time.Minute)
		m.mu.Unlock()
		_, _, err = m.pushVersion(mem, s, monitor.MinSummaryVersion)
	}
	if err != nil {
		a.logger.Debug("summary push failed", "subsystem", "monitor", "to", mem.Name, "error", err)
	}
}

// pushVersion sends one summary in the given wire version and returns the
// response status and (for errors) the start of the body.
func (m *nodeMonitor) pushVersion(mem gossip.Member, s *monitor.Summary, version byte) (int, string, error) {
	a := m.a
	start := time.Now()
	body, err := s.ShrinkVersion(version, m.cfg.MaxSummaryBytes)
	m.workNanos.Add(uint64(time.Since(start)))
	if err != nil {
		a.logger.Warn("cannot encode the summary", "subsystem", "monitor", "error", err)
		return 0, "", err
	}
	m.mu.Lock()
	m.lastBytes = len(body)
	m.mu.Unlock()
	m.bytesOut.Add(uint64(len(body)))
	m.pushBytes.Observe(float64(len(body)))
	ctx, cancel := context.WithTimeout(a.ctx, m.cfg.Interval)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "PUT", a.apiURL(mem)+"/v1/monitor/summary", bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := a.httpClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusNoContent {
		m.pushes.Inc()
		return resp.StatusCode, "", nil
	}
	return resp.StatusCode, string(msg), fmt.Errorf("parent answered %s: %s", resp.Status, bytes.TrimSpace(msg))
}

// sample takes one reading of the host, the agent and its workloads.
func (m *nodeMonitor) sample(now time.Time) *monitor.Summary {
	a := m.a
	labels := a.gossip.LocalMeta().Labels
	dims := make([]string, 0, len(labels)+1)
	if z := labels["zone"]; z != "" {
		dims = append(dims, monitor.DimZone(z))
	}
	for _, k := range slices.Sorted(mapsKeys(labels)) {
		if k != "zone" {
			dims = append(dims, monitor.DimLabel(k, labels[k]))
		}
	}
	s := &monitor.Summary{Time: now.UnixMilli(), Nodes: map[string]uint64{"alive": 1}}
	s.Observe(monitorSampleMetric, float64(now.UnixMilli())/1000)
	m.hostMetrics(s, now, dims)
	if cpu, ok := s.Metric("cpu_percent", monitor.DimAll); ok {
		l := monitor.NodeLoad{Node: a.cfg.NodeName, CPU: clampPercent(cpu.Mean())}
		if mem, ok := s.Metric("mem_percent", monitor.DimAll); ok {
			l.Mem = clampPercent(mem.Mean())
		}
		s.Busiest = []monitor.NodeLoad{l}
		if s.Validate() != nil {
			s.Busiest = nil // a node name the summary cannot carry (spaces)
		}
	}
	s.Observe("members_alive", float64(a.gossip.CountAlive()), dims...)
	s.Observe("gossip_health_score", float64(a.gossip.Memberlist().GetHealthScore()), dims...)
	if a.runner != nil {
		seen := map[string]bool{}
		for _, st := range a.runner.Status() {
			if s.Workloads == nil {
				s.Workloads = map[string]uint64{}
			}
			s.Workloads[string(st.State)]++
			dep := monitor.DimDeployment(st.Deployment)
			s.Observe("workload_restarts", float64(st.Restarts), dep)
			for name, v := range st.Metrics {
				s.Observe("workload_"+name, v, dep)
			}
			if st.State == workload.StateStopped {
				// Stopped on purpose (deployment removed or moved): its
				// restarts are no longer a crash loop.
				continue
			}
			seen[st.InstanceID] = true
			m.mu.Lock()
			for n := m.restarts[st.InstanceID]; n < st.Restarts; n++ {
				m.health.Restart(st.InstanceID, now)
			}
			m.restarts[st.InstanceID] = st.Restarts
			m.mu.Unlock()
		}
		m.mu.Lock()
		for id := range m.restarts {
			if !seen[id] {
				delete(m.restarts, id)
				m.health.ForgetWorkload(id)
			}
		}
		m.mu.Unlock()
	}
	return s
}

func clampPercent(v float64) float64 { return min(max(v, 0), 100) }

func mapsKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// hostMetrics reads /proc (CPU from the delta since the last sample,
// memory, load, network rates) and the data dir's file system. Anything
// unreadable (not Linux, a restricted container) is left out.
func (m *nodeMonitor) hostMetrics(s *monitor.Summary, now time.Time, dims []string) {
	fs, err := procfs.NewDefaultFS()
	if err == nil {
		if st, err := fs.Stat(); err == nil {
			cur := st.CPUTotal
			if prev := m.cpu; prev != nil {
				busy := func(c *procfs.CPUStat) float64 {
					return c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ + c.Steal
				}
				total := func(c *procfs.CPUStat) float64 { return busy(c) + c.Idle + c.Iowait }
				if dt := total(&cur) - total(prev); dt > 0 {
					s.Observe("cpu_percent", 100*(busy(&cur)-busy(prev))/dt, dims...)
				}
			}
			m.cpu, m.cpuAt = &cur, now
		}
		if mi, err := fs.Meminfo(); err == nil && mi.MemTotal != nil && mi.MemAvailable != nil && *mi.MemTotal > 0 {
			used := float64(*mi.MemTotal-*mi.MemAvailable) * 1024
			s.Observe("mem_used_bytes", used, dims...)
			s.Observe("mem_total_bytes", float64(*mi.MemTotal)*1024, dims...)
			s.Observe("mem_percent", 100*used/(float64(*mi.MemTotal)*1024), dims...)
		}
		if la, err := fs.LoadAvg(); err == nil {
			s.Observe("load1", la.Load1, dims...)
		}
		if nd, err := fs.NetDev(); err == nil {
			var rx, tx uint64
			for name, l := range nd {
				if name != "lo" {
					rx, tx = rx+l.RxBytes, tx+l.TxBytes
				}
			}
			if !m.netAt.IsZero() && now.After(m.netAt) && rx >= m.net[0] && tx >= m.net[1] {
				secs := now.Sub(m.netAt).Seconds()
				s.Observe("net_rx_bytes_per_second", float64(rx-m.net[0])/secs, dims...)
				s.Observe("net_tx_bytes_per_second", float64(tx-m.net[1])/secs, dims...)
			}
			m.net, m.netAt = [2]uint64{rx, tx}, now
		}
	}
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(m.a.cfg.DataDir, &sfs); err == nil && sfs.Blocks > 0 {
		s.Observe("disk_used_percent", 100*float64(sfs.Blocks-sfs.Bfree)/float64(sfs.Blocks), dims...)
	}
}

// monitorRoutes registers the monitoring API.
func (a *Agent) monitorRoutes(r *router) {
	a.monitorState()
	r.handle("PUT", "/v1/monitor/summary", AccessAgent, a.handleSummary)
	r.handle("GET", "/v1/monitor/plan", AccessRead, a.handleMonitorPlan)
	r.handle("GET", "/v1/monitor/targets", AccessRead, a.handleMonitorTargets)
	r.handle("GET", "/v1/monitor/status", AccessRead, a.handleMonitorStatus)
	r.handle("GET", "/v1/cluster/metrics", AccessRead, a.handleClusterMetrics)
	r.handle("GET", "/v1/alarms", AccessRead, a.handleAlarms)
	r.handle("GET", "/metrics/group", AccessMetrics, a.handleGroupMetrics)
}

func (a *Agent) handleSummary(w http.ResponseWriter, r *http.Request) {
	m := a.monitorState()
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(m.cfg.MaxSummaryBytes)+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	now := time.Now()
	m.bytesIn.Add(uint64(len(body)))
	m.summariesIn.Add(1)
	defer func() { m.workNanos.Add(uint64(time.Since(now))) }()
	s, err := m.recv.Accept(body, now)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	m.mu.Lock()
	m.children[s.Origin] = childSummary{s: s, at: now}
	m.health.Heard(s.Origin, now)
	m.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (a *Agent) handleMonitorPlan(w http.ResponseWriter, r *http.Request) {
	var at, idx uint64
	raw, ok := blockingRead(a, w, r, func(st *consensus.State) (json.RawMessage, uint64) {
		p, planAt, i := st.MonitorPlan()
		at, idx = planAt, i
		return p, i
	})
	if !ok {
		return
	}
	if minIdx, _, _ := blockingParams(r); minIdx > 0 && idx > minIdx {
		a.spreadPlanWakeup(r.Context())
	}
	if len(raw) == 0 {
		raw = json.RawMessage("null")
	}
	w.Header().Set("Content-Type", "application/json")
	if len(raw) >= gzipPlanMin && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		if gz := a.monitorState().gzipPlan(at, raw); gz != nil {
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write(gz)
			return
		}
	}
	_, _ = w.Write(raw)
}

// gzipPlanMin is the plan size from which GET /v1/monitor/plan is sent
// gzipped to clients that accept it (Go's HTTP client, so every agent,
// asks for gzip and inflates transparently): about 1,000 nodes.
const gzipPlanMin = 64 << 10

// planWakeupSpread is how long, per member, a voter spreads the answers to
// the blocking plan queries that a new plan wakes, capped at
// planWakeupSpreadMax. Every node follows the plan, so a commit wakes them
// all, and each decodes and checks the whole plan (~80 bytes a node): the
// work of one commit grows as N², and answering everyone within a fixed
// time makes a burst that grows as N² too. Spread over a time that grows
// with N, it arrives at a rate that grows only as N.
//
// 2 ms a member was not enough: at 600 agents on one machine (the scale
// harness, an execution trace of its first stall) the followers' requests
// took about 1.3 CPU-seconds in the 1.2 s spread, on top of a core of
// gossip (and the trace's own cost), which saturated both cores for 3 s;
// the goroutines waiting to run grew to 2,500, probes went unanswered,
// and the first false suspicions came in that second. 10 ms a member
// spreads 1,000 answers over 10 s (the leader holds back plans 20 s
// between commits at that size while members join, planCommitDelay); a
// node follows a new plan that much later. (The storms at that size came
// back with 10 ms all the same: garbage collection spikes saturate the
// cores as well; see the README's seventh-session results.)
const (
	planWakeupSpread    = 10 * time.Millisecond
	planWakeupSpreadMax = 20 * time.Second
)

// spreadPlanWakeup waits a random part of the plan wake-up spread.
func (a *Agent) spreadPlanWakeup(ctx context.Context) {
	spread := min(time.Duration(a.gossip.NumAlive())*planWakeupSpread, planWakeupSpreadMax)
	if spread <= 0 {
		return
	}
	t := time.NewTimer(rand.N(spread))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// gzipPlan returns the plan committed at index at, gzipped, compressing it
// once per plan: after each change every node fetches the plan (0.8 MB at
// 10,000 nodes), and a voter compressing it per request would spend more
// than it saves. It returns nil if compression fails.
func (m *nodeMonitor) gzipPlan(at uint64, raw []byte) []byte {
	m.gzMu.Lock()
	defer m.gzMu.Unlock()
	if m.gzAt == at && m.gz != nil {
		return m.gz
	}
	var b bytes.Buffer
	zw, err := gzip.NewWriterLevel(&b, gzip.BestSpeed)
	if err != nil {
		return nil
	}
	if _, err := zw.Write(raw); err != nil {
		return nil
	}
	if err := zw.Close(); err != nil {
		return nil
	}
	m.gzAt, m.gz = at, b.Bytes()
	return m.gz
}

// MonitorStatus is this node's place in the monitoring tree (GET
// /v1/monitor/status).
type MonitorStatus struct {
	PlanVersion  uint64 `json:"plan_version"`
	PlanIndex    uint64 `json:"plan_index"`
	Root         string `json:"root"`
	Parent       string `json:"parent"`        // from the plan
	PushesTo     string `json:"pushes_to"`     // after failover
	Level        int    `json:"level"`         // 0 for a leaf
	Children     int    `json:"children"`      // fresh children summaries held
	SummaryBytes int    `json:"summary_bytes"` // size of the last push
	// Rejected counts refused summaries by reason.
	Rejected map[string]uint64 `json:"rejected,omitempty"`
	// BytesOut and BytesIn total the summary bytes pushed and received
	// since the agent started; SummariesIn counts the summaries received.
	BytesOut    uint64 `json:"bytes_out"`
	BytesIn     uint64 `json:"bytes_in"`
	SummariesIn uint64 `json:"summaries_in"`
	// WorkSeconds is the time spent sampling, merging, encoding and
	// accepting summaries (wall clock inside the monitoring code).
	WorkSeconds float64 `json:"work_seconds"`
}

func (a *Agent) handleMonitorStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, a.monitorState().status())
}

func (m *nodeMonitor) status() MonitorStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := MonitorStatus{
		Children: len(m.children), SummaryBytes: m.lastBytes, Rejected: m.recv.Rejections(),
		BytesOut: m.bytesOut.Load(), BytesIn: m.bytesIn.Load(), SummariesIn: m.summariesIn.Load(),
		WorkSeconds: time.Duration(m.workNanos.Load()).Seconds(),
	}
	if p := m.plan; p != nil {
		self := m.a.id.String()
		st.PlanVersion, st.PlanIndex, st.Root, st.Level = p.Version, m.planIndex, p.Root(), p.Level(self)
		st.Parent, _ = p.Parent(self)
		st.PushesTo, _ = p.Failover(self, m.a.aliveByID)
	}
	return st
}

// rootMember finds the node holding the cluster view: the planned root,
// or the stand-in its group picks when it is dead.
func (a *Agent) rootMember(p *monitor.Plan) (gossip.Member, bool) {
	if a.aliveByID(p.Root()) {
		return a.memberByID(p.Root())
	}
	for _, c := range p.Children(p.Root()) {
		if !a.aliveByID(c) {
			continue
		}
		if t, ok := p.Failover(c, a.aliveByID); ok && t == "" {
			return a.memberByID(c)
		}
	}
	return gossip.Member{}, false
}

// ClusterMetrics is the body of GET /v1/cluster/metrics: the root's view
// plus where it came from and how old it is.
type ClusterMetrics struct {
	monitor.MetricsView
	Root string `json:"root"`
	// AgeSeconds is how old the oldest sample in the view is.
	AgeSeconds float64 `json:"age_seconds"`
	// FreshnessBoundSeconds is the design bound: (depth+1) × interval.
	FreshnessBoundSeconds float64 `json:"freshness_bound_seconds"`
}

// clusterView returns the cluster summary if this node is the root, or
// forwards the request to the root and reports false.
func (a *Agent) clusterView(w http.ResponseWriter, r *http.Request) (*monitor.Summary, *monitor.Plan, bool) {
	m := a.monitorState()
	m.mu.Lock()
	p, merged := m.plan, m.merged
	m.mu.Unlock()
	if p == nil {
		writeError(w, http.StatusServiceUnavailable, errors.New("no monitoring plan yet: the leader commits one within a few seconds of forming"))
		return nil, nil, false
	}
	self := a.id.String()
	if p.Root() == self || m.standsInForRoot(p) {
		if merged == nil {
			writeError(w, http.StatusServiceUnavailable, errors.New("no sample yet"))
			return nil, nil, false
		}
		return merged, p, true
	}
	if r.Header.Get(HeaderForwarded) != "" {
		writeError(w, http.StatusServiceUnavailable, errors.New("forwarded to a node that is not the monitoring root (plans differ); retry"))
		return nil, nil, false
	}
	root, ok := a.rootMember(p)
	if !ok {
		writeError(w, http.StatusServiceUnavailable, errors.New("the monitoring root is unknown or dead and no stand-in is alive yet"))
		return nil, nil, false
	}
	a.forward(w, r, root)
	return nil, nil, false
}

func (a *Agent) handleClusterMetrics(w http.ResponseWriter, r *http.Request) {
	s, p, ok := a.clusterView(w, r)
	if !ok {
		return
	}
	prefix := ""
	switch by := r.URL.Query().Get("by"); by {
	case "", "all":
		if by == "all" {
			prefix = monitor.DimAll
		}
	case "zone", "label", "deployment":
		prefix = by + ":"
	default:
		prefix = by // a full key such as zone:eu-1
	}
	m := a.monitorState()
	v := a.decorate(s)
	out := ClusterMetrics{MetricsView: v.View(prefix), Root: a.cfg.NodeName, FreshnessBoundSeconds: (m.cfg.FreshnessBound(p.Depth) + m.cfg.Interval).Seconds()}
	if agg, ok := s.Metric(monitorSampleMetric, monitor.DimAll); ok && agg.Count > 0 {
		out.AgeSeconds = float64(time.Now().UnixMilli())/1000 - agg.Min
	}
	writeJSON(w, http.StatusOK, out)
}

// decorate adds what only the root's gossip view knows: nodes that cannot
// report themselves (suspect, dead).
func (a *Agent) decorate(s *monitor.Summary) *monitor.Summary {
	extra := &monitor.Summary{Nodes: map[string]uint64{}}
	for _, g := range a.gossip.Members() {
		switch g.Status {
		case gossip.StatusDead:
			extra.Nodes["dead"]++
		case gossip.StatusSuspect:
			extra.Nodes["suspect"]++
		}
	}
	return monitor.Merge(s, extra)
}

func (a *Agent) handleAlarms(w http.ResponseWriter, r *http.Request) {
	s, _, ok := a.clusterView(w, r)
	if !ok {
		return
	}
	out := s.Alarms
	if out == nil {
		out = []monitor.Alarm{}
	}
	writeJSON(w, http.StatusOK, out)
}

// handleGroupMetrics renders this aggregator's roll-up (its subtree) in
// the Prometheus text format.
func (a *Agent) handleGroupMetrics(w http.ResponseWriter, r *http.Request) {
	m := a.monitorState()
	m.mu.Lock()
	s, p := m.merged, m.plan
	m.mu.Unlock()
	if s == nil || p == nil || (p.Level(a.id.String()) == 0 && p.Root() != a.id.String()) {
		writeError(w, http.StatusNotFound, errors.New("this node is not an aggregator in the current monitoring plan"))
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = io.WriteString(w, renderGroup(s))
}

func renderGroup(s *monitor.Summary) string {
	var b strings.Builder
	q := strconv.Quote
	b.WriteString("# HELP colony_group_nodes Nodes in this aggregator's subtree by status.\n# TYPE colony_group_nodes gauge\n")
	for _, k := range slices.Sorted(mapKeys(s.Nodes)) {
		fmt.Fprintf(&b, "colony_group_nodes{status=%s} %d\n", q(k), s.Nodes[k])
	}
	b.WriteString("# HELP colony_group_workloads Workload instances in the subtree by state.\n# TYPE colony_group_workloads gauge\n")
	for _, k := range slices.Sorted(mapKeys(s.Workloads)) {
		fmt.Fprintf(&b, "colony_group_workloads{state=%s} %d\n", q(k), s.Workloads[k])
	}
	b.WriteString("# HELP colony_group_metric A metric aggregated over the subtree, by dimension and statistic.\n# TYPE colony_group_metric gauge\n")
	names := make([]string, 0, len(s.Metrics))
	for n := range s.Metrics {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		dims := make([]string, 0, len(s.Metrics[n]))
		for d := range s.Metrics[n] {
			dims = append(dims, d)
		}
		sort.Strings(dims)
		for _, d := range dims {
			agg := s.Metrics[n][d]
			for _, stat := range []string{"count", "mean", "min", "max", "p50", "p90", "p99"} {
				if v, ok := agg.Stat(stat); ok {
					fmt.Fprintf(&b, "colony_group_metric{metric=%s,dim=%s,stat=%s} %g\n", q(n), q(d), q(stat), v)
				}
			}
		}
	}
	b.WriteString("# HELP colony_group_alarms Active alarms in the subtree by kind.\n# TYPE colony_group_alarms gauge\n")
	kinds := map[string]int{}
	for _, al := range s.Alarms {
		kinds[al.Kind]++
	}
	for _, k := range []string{monitor.KindNodeDown, monitor.KindAggregatorLost, monitor.KindCrashLoop, monitor.KindThreshold} {
		fmt.Fprintf(&b, "colony_group_alarms{kind=%s} %d\n", q(k), kinds[k])
	}
	return b.String()
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TargetGroup is one entry of Prometheus HTTP service discovery.
type TargetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// handleMonitorTargets lists the aggregators in Prometheus HTTP SD format,
// pointing at their /metrics/group roll-ups.
func (a *Agent) handleMonitorTargets(w http.ResponseWriter, r *http.Request) {
	m := a.monitorState()
	m.mu.Lock()
	p := m.plan
	m.mu.Unlock()
	out := []TargetGroup{}
	if p != nil {
		ids := make([]string, 0)
		for id := range p.Parents {
			if p.Level(id) > 0 || id == p.Root() {
				ids = append(ids, id)
			}
		}
		sort.Strings(ids)
		for _, id := range ids {
			g, ok := a.memberByID(id)
			if !ok {
				continue
			}
			tg := TargetGroup{Targets: []string{apiAddr(g)}, Labels: map[string]string{
				"__metrics_path__": "/metrics/group", "colony_node": g.Name, "colony_level": strconv.Itoa(p.Level(id)),
				"colony_root": strconv.FormatBool(id == p.Root()),
			}}
			if a.tls != nil {
				tg.Labels["__scheme__"] = "https"
			}
			out = append(out, tg)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// ownCollector exports the node's own latest sample on /metrics.
type ownCollector struct{ m *nodeMonitor }

var ownDesc = prometheus.NewDesc("colony_node_metric", "This node's latest monitoring sample.", []string{"metric"}, nil)
var workloadDesc = prometheus.NewDesc("colony_node_workloads", "This node's workload instances by state.", []string{"state"}, nil)
var alarmDesc = prometheus.NewDesc("colony_alarms_active", "Alarms active in the cluster (exported by the monitoring root) or raised by this node, by kind.", []string{"kind"}, nil)

// Describe implements prometheus.Collector.
func (c *ownCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- ownDesc
	ch <- workloadDesc
	ch <- alarmDesc
}

// Collect implements prometheus.Collector.
func (c *ownCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	own, merged := c.m.own, c.m.merged
	c.m.mu.Unlock()
	if own == nil {
		return
	}
	for name, dims := range own.Metrics {
		if name == monitorSampleMetric {
			continue
		}
		if agg, ok := dims[monitor.DimAll]; ok && agg.Count > 0 {
			ch <- prometheus.MustNewConstMetric(ownDesc, prometheus.GaugeValue, agg.Mean(), name)
		}
	}
	for st, n := range own.Workloads {
		ch <- prometheus.MustNewConstMetric(workloadDesc, prometheus.GaugeValue, float64(n), st)
	}
	kinds := map[string]int{monitor.KindNodeDown: 0, monitor.KindAggregatorLost: 0, monitor.KindCrashLoop: 0, monitor.KindThreshold: 0}
	if merged != nil {
		for _, al := range merged.Alarms {
			kinds[al.Kind]++
		}
	}
	for k, n := range kinds {
		ch <- prometheus.MustNewConstMetric(alarmDesc, prometheus.GaugeValue, float64(n), k)
	}
}
