package monitor

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Alarm kinds.
const (
	KindThreshold      = "threshold"
	KindNodeDown       = "node_down"
	KindAggregatorLost = "aggregator_lost"
	KindCrashLoop      = "crash_loop"
)

// ErrBadRule is wrapped by every ParseRule failure.
var ErrBadRule = errors.New("bad alarm rule")

// Op compares a statistic with a rule's threshold.
type Op string

// Comparison operators a rule may use.
const (
	OpGT Op = ">"
	OpGE Op = ">="
	OpLT Op = "<"
	OpLE Op = "<="
)

func (o Op) holds(v, threshold float64) bool {
	switch o {
	case OpGT:
		return v > threshold
	case OpGE:
		return v >= threshold
	case OpLT:
		return v < threshold
	case OpLE:
		return v <= threshold
	}
	return false
}

// Rule is a threshold alarm on an aggregated metric:
//
//	<metric> <stat> <op> <threshold> [for <duration>] [in <scope>]
//
// e.g. "cpu_percent p99 > 90 for 2m" or "mem_used_percent max >= 95 in zone:*".
// stat is count, sum, min, max, mean or pNN (p50, p90, p99, p99.9); op is
// >, >=, < or <=; duration is a Go duration (default 0: raise at once);
// scope is a dimension key (default "all") or a kind wildcard "zone:*",
// "deployment:*", "label:*" that evaluates every matching dimension
// separately.
type Rule struct {
	// Text is the rule as written; alarms name it in their subject.
	Text      string
	Metric    string
	Stat      string
	Op        Op
	Threshold float64
	For       time.Duration
	Scope     string
}

// ParseRule parses and validates the short rule syntax.
func ParseRule(text string) (Rule, error) {
	f := strings.Fields(text)
	r := Rule{Text: strings.Join(f, " "), Scope: DimAll}
	if len(r.Text) > MaxRuleLen {
		return Rule{}, fmt.Errorf("%w: %d characters > %d", ErrBadRule, len(r.Text), MaxRuleLen)
	}
	if len(f) < 4 {
		return Rule{}, fmt.Errorf("%w %q: want \"<metric> <stat> <op> <threshold> [for <duration>] [in <scope>]\"", ErrBadRule, text)
	}
	r.Metric, r.Stat, r.Op = f[0], f[1], Op(f[2])
	if err := validName(r.Metric); err != nil {
		return Rule{}, fmt.Errorf("%w %q: metric: %w", ErrBadRule, text, err)
	}
	if err := validStat(r.Stat); err != nil {
		return Rule{}, fmt.Errorf("%w %q: %w", ErrBadRule, text, err)
	}
	switch r.Op {
	case OpGT, OpGE, OpLT, OpLE:
	default:
		return Rule{}, fmt.Errorf("%w %q: operator %q is not one of > >= < <=", ErrBadRule, text, f[2])
	}
	th, err := strconv.ParseFloat(f[3], 64)
	if err != nil || math.IsNaN(th) || math.IsInf(th, 0) {
		return Rule{}, fmt.Errorf("%w %q: threshold %q is not a finite number", ErrBadRule, text, f[3])
	}
	r.Threshold = th
	rest := f[4:]
	for len(rest) > 0 {
		if len(rest) < 2 {
			return Rule{}, fmt.Errorf("%w %q: %q needs a value", ErrBadRule, text, rest[0])
		}
		switch rest[0] {
		case "for":
			d, err := time.ParseDuration(rest[1])
			if err != nil || d < 0 {
				return Rule{}, fmt.Errorf("%w %q: duration %q: want e.g. 30s, 2m", ErrBadRule, text, rest[1])
			}
			r.For = d
		case "in":
			if err := validScope(rest[1]); err != nil {
				return Rule{}, fmt.Errorf("%w %q: scope: %w", ErrBadRule, text, err)
			}
			r.Scope = rest[1]
		default:
			return Rule{}, fmt.Errorf("%w %q: unexpected %q, want \"for\" or \"in\"", ErrBadRule, text, rest[0])
		}
		rest = rest[2:]
	}
	return r, nil
}

func validStat(s string) error {
	switch s {
	case "count", "sum", "min", "max", "mean":
		return nil
	}
	if _, err := parseQuantile(s); err != nil {
		return fmt.Errorf("stat %q is not count, sum, min, max, mean or pNN", s)
	}
	return nil
}

// parseQuantile turns "p99" into 0.99 and "p99.9" into 0.999.
func parseQuantile(s string) (float64, error) {
	if len(s) < 2 || s[0] != 'p' {
		return 0, fmt.Errorf("not a quantile: %q", s)
	}
	v, err := strconv.ParseFloat(s[1:], 64)
	if err != nil || !(v >= 0 && v <= 100) {
		return 0, fmt.Errorf("not a quantile: %q", s)
	}
	return v / 100, nil
}

func validScope(s string) error {
	switch s {
	case "zone:*", "deployment:*", "label:*":
		return nil
	}
	return validDimension(s)
}

func (r Rule) dims(byDim map[string]*Agg) []string {
	if !strings.HasSuffix(r.Scope, ":*") {
		return []string{r.Scope}
	}
	prefix := strings.TrimSuffix(r.Scope, "*")
	var out []string
	for d := range byDim {
		if strings.HasPrefix(d, prefix) {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out
}

// Transition is an alarm being raised or cleared.
type Transition struct {
	Alarm  Alarm
	Raised bool // false: cleared
	// Value is the statistic that triggered a threshold alarm.
	Value float64
}

// Evaluator applies threshold rules to successive cluster snapshots. It
// keeps, per rule and dimension, when the condition started holding, and
// raises once it has held for the rule's For duration. Time is passed in,
// never read, so evaluation is reproducible.
type Evaluator struct {
	rules   []Rule
	pending map[string]time.Time // key → condition true since
	active  map[string]Alarm
}

// NewEvaluator returns an evaluator for the rules (parse them with
// ParseRule).
func NewEvaluator(rules []Rule) *Evaluator {
	return &Evaluator{
		rules:   slices.Clone(rules),
		pending: make(map[string]time.Time),
		active:  make(map[string]Alarm),
	}
}

// Evaluate checks every rule against snapshot s taken at now. A metric or
// statistic missing from the snapshot counts as the condition not holding
// (a silent subtree is node_down's and aggregator_lost's business). It
// returns the alarms raised and cleared by this snapshot, in a stable order.
func (e *Evaluator) Evaluate(s *Summary, now time.Time) []Transition {
	var out []Transition
	seen := make(map[string]bool)
	for _, r := range e.rules {
		byDim := s.Metrics[r.Metric]
		for _, d := range r.dims(byDim) {
			subject := r.Text
			if d != DimAll {
				subject += " [" + d + "]"
			}
			key := subject
			a, ok := byDim[d]
			if !ok {
				continue
			}
			v, ok := a.Stat(r.Stat)
			if !ok || !r.Op.holds(v, r.Threshold) {
				continue
			}
			seen[key] = true
			since, ok := e.pending[key]
			if !ok {
				since = now
				e.pending[key] = now
			}
			if _, on := e.active[key]; !on && now.Sub(since) >= r.For {
				al := Alarm{Kind: KindThreshold, Subject: subject, Since: since.UnixMilli()}
				e.active[key] = al
				out = append(out, Transition{Alarm: al, Raised: true, Value: v})
			}
		}
	}
	for _, key := range sortedKeys(e.pending) {
		if seen[key] {
			continue
		}
		delete(e.pending, key)
		if al, on := e.active[key]; on {
			delete(e.active, key)
			out = append(out, Transition{Alarm: al})
		}
	}
	return out
}

// Active lists the alarms currently raised, sorted.
func (e *Evaluator) Active() []Alarm {
	out := make([]Alarm, 0, len(e.active))
	for _, al := range e.active {
		out = append(out, al)
	}
	sortAlarms(out)
	return out
}

// Health turns liveness observations into node_down, aggregator_lost and
// crash_loop alarms. Each node runs one for what it is responsible for: the
// leader (or root) for node liveness, every aggregator for its child
// aggregators, every node for its own workloads. Time is passed in.
type Health struct {
	cfg Config

	downSince map[string]time.Time // node → first seen not alive
	lastHeard map[string]time.Time // child aggregator → last summary
	restarts  map[string][]time.Time
	active    map[string]Alarm
}

// NewHealth returns a tracker using cfg's grace periods and thresholds.
func NewHealth(cfg Config) (*Health, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Health{
		cfg:       cfg,
		downSince: make(map[string]time.Time),
		lastHeard: make(map[string]time.Time),
		restarts:  make(map[string][]time.Time),
		active:    make(map[string]Alarm),
	}, nil
}

// NodeStatus records the gossip view of a node at now.
func (h *Health) NodeStatus(id string, alive bool, now time.Time) {
	if alive {
		delete(h.downSince, id)
	} else if _, ok := h.downSince[id]; !ok {
		h.downSince[id] = now
	}
}

// ForgetNode stops tracking a node that left the cluster on purpose (a
// graceful leave or a scale-in is not an alarm).
func (h *Health) ForgetNode(id string) { delete(h.downSince, id) }

// ForgetNodes stops tracking node liveness altogether: a node that is no
// longer the root (a new plan, or the real root is back after a partition)
// must not keep pushing node_down alarms that only the root can clear.
func (h *Health) ForgetNodes() { clear(h.downSince) }

// ExpectAggregators sets the child aggregators this node should hear from
// (from the plan), starting the clock for new ones at now.
func (h *Health) ExpectAggregators(ids []string, now time.Time) {
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
		if _, ok := h.lastHeard[id]; !ok {
			h.lastHeard[id] = now
		}
	}
	for id := range h.lastHeard {
		if !want[id] {
			delete(h.lastHeard, id)
		}
	}
}

// Heard records an accepted summary from a child aggregator.
func (h *Health) Heard(id string, now time.Time) {
	if _, ok := h.lastHeard[id]; ok {
		h.lastHeard[id] = now
	}
}

// Restart records one restart of a workload instance.
func (h *Health) Restart(instance string, at time.Time) {
	h.restarts[instance] = append(h.restarts[instance], at)
}

// ForgetWorkload stops tracking an instance that was removed.
func (h *Health) ForgetWorkload(instance string) { delete(h.restarts, instance) }

// Evaluate returns the alarms raised and cleared as of now.
func (h *Health) Evaluate(now time.Time) []Transition {
	cond := make(map[string]Alarm)
	for id, since := range h.downSince {
		if now.Sub(since) > h.cfg.NodeDownGrace {
			cond[KindNodeDown+"\x00"+id] = Alarm{Kind: KindNodeDown, Subject: id, Since: since.UnixMilli()}
		}
	}
	lost := time.Duration(h.cfg.AggregatorLostIntervals) * h.cfg.Interval
	for id, last := range h.lastHeard {
		if now.Sub(last) > lost {
			cond[KindAggregatorLost+"\x00"+id] = Alarm{Kind: KindAggregatorLost, Subject: id, Since: last.UnixMilli()}
		}
	}
	for inst, times := range h.restarts {
		cut := now.Add(-h.cfg.CrashLoopWindow)
		kept := slices.DeleteFunc(times, func(t time.Time) bool { return !t.After(cut) })
		if len(kept) == 0 {
			delete(h.restarts, inst)
			continue
		}
		h.restarts[inst] = kept
		if len(kept) >= h.cfg.CrashLoopRestarts {
			cond[KindCrashLoop+"\x00"+inst] = Alarm{Kind: KindCrashLoop, Subject: inst, Since: kept[0].UnixMilli()}
		}
	}
	var out []Transition
	for _, key := range sortedKeys(cond) {
		if _, on := h.active[key]; !on {
			h.active[key] = cond[key]
			out = append(out, Transition{Alarm: cond[key], Raised: true})
		}
	}
	for _, key := range sortedKeys(h.active) {
		if _, still := cond[key]; !still {
			out = append(out, Transition{Alarm: h.active[key]})
			delete(h.active, key)
		}
	}
	return out
}

// Active lists the health alarms currently raised, sorted.
func (h *Health) Active() []Alarm {
	out := make([]Alarm, 0, len(h.active))
	for _, al := range h.active {
		out = append(out, al)
	}
	sortAlarms(out)
	return out
}
