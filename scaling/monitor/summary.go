package monitor

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Limits that keep a summary compact whatever the cluster looks like. Merge
// keeps them (dropping the lexically largest keys and setting Truncated),
// Validate enforces them on anything decoded from the network.
const (
	// MaxMetrics is the number of distinct metric names in a summary.
	MaxMetrics = 64
	// MaxDimensions is the number of dimensions per metric.
	MaxDimensions = 64
	// MaxStates bounds the node-status and workload-state count maps.
	MaxStates = 16
	// MaxAlarms bounds the alarms carried up the tree.
	MaxAlarms = 32
	// MaxNameLen bounds metric, status, state and alarm kind names.
	MaxNameLen = 64
	// MaxValueLen bounds IDs, dimension strings and alarm subjects.
	MaxValueLen = 128
	// MaxSubjectLen bounds alarm subjects (a rule's text plus a dimension).
	MaxSubjectLen = 256
	// MaxRuleLen bounds the text of a threshold rule.
	MaxRuleLen = 120
	// MaxValue bounds the magnitude of one sample so sums stay finite.
	MaxValue = 1e18
	// MaxBusiest is how many of the busiest nodes a summary carries.
	MaxBusiest = 5
)

// Dimension keys. A metric's aggregate is kept per dimension: DimAll for
// the whole subtree plus any of zone, label and deployment breakdowns.
const (
	DimAll              = "all"
	dimZonePrefix       = "zone:"
	dimLabelPrefix      = "label:"
	dimDeploymentPrefix = "deployment:"
)

// DimZone is the dimension key of one zone.
func DimZone(zone string) string { return dimZonePrefix + zone }

// DimLabel is the dimension key of one operator label value.
func DimLabel(key, value string) string { return dimLabelPrefix + key + "=" + value }

// DimDeployment is the dimension key of one deployment's workloads.
func DimDeployment(name string) string { return dimDeploymentPrefix + name }

// ErrInvalidSummary is wrapped by every validation failure.
var ErrInvalidSummary = errors.New("invalid summary")

// Agg is a mergeable aggregate of one metric in one dimension.
type Agg struct {
	Count uint64
	Sum   float64
	Min   float64
	Max   float64
	// Sketch holds the same values for quantiles. It may be empty
	// (dropped to save space); quantiles are then unavailable.
	Sketch Sketch
}

// Add records one sample; NaN, infinities and magnitudes above MaxValue
// are refused so one bad reading cannot poison a whole subtree.
func (a *Agg) Add(v float64) bool {
	if math.IsNaN(v) || math.Abs(v) > MaxValue {
		return false
	}
	if a.Count == 0 {
		a.Min, a.Max = v, v
	} else {
		a.Min, a.Max = min(a.Min, v), max(a.Max, v)
	}
	a.Count++
	a.Sum += v
	a.Sketch.Add(v)
	return true
}

// Merge folds o into a. The result carries a sketch only if both did.
func (a *Agg) Merge(o *Agg) {
	if o.Count == 0 {
		return
	}
	if a.Count == 0 {
		*a = o.clone()
		return
	}
	aSketch, oSketch := a.hasSketch(), o.hasSketch()
	a.Count += o.Count
	a.Sum += o.Sum
	a.Min, a.Max = min(a.Min, o.Min), max(a.Max, o.Max)
	if aSketch && oSketch {
		a.Sketch.Merge(&o.Sketch)
	} else {
		a.Sketch = Sketch{}
	}
}

func (a *Agg) hasSketch() bool { return a.Sketch.Len() > 0 }

func (a *Agg) clone() Agg {
	c := *a
	c.Sketch = a.Sketch.Clone()
	return c
}

// Mean is Sum/Count (0 when empty).
func (a *Agg) Mean() float64 {
	if a.Count == 0 {
		return 0
	}
	return a.Sum / float64(a.Count)
}

// Quantile estimates the q-quantile within SketchRelativeAccuracy, clamped
// to the exact [Min, Max]. ok is false without a sketch.
func (a *Agg) Quantile(q float64) (float64, bool) {
	v, ok := a.Sketch.Quantile(q)
	if !ok {
		return 0, false
	}
	return min(max(v, a.Min), a.Max), true
}

// Stat returns a named statistic: count, sum, min, max, mean, or pNN
// (p50, p90, p99, p99.9 …).
func (a *Agg) Stat(stat string) (float64, bool) {
	switch stat {
	case "count":
		return float64(a.Count), true
	case "sum":
		return a.Sum, a.Count > 0
	case "min":
		return a.Min, a.Count > 0
	case "max":
		return a.Max, a.Count > 0
	case "mean":
		return a.Mean(), a.Count > 0
	}
	q, err := parseQuantile(stat)
	if err != nil {
		return 0, false
	}
	return a.Quantile(q)
}

// Alarm is an active alarm carried up the tree so any node can list them.
type Alarm struct {
	// Kind is threshold, node_down, aggregator_lost or crash_loop.
	Kind string
	// Subject says what is alarming: a rule and dimension, a node ID, a
	// workload instance.
	Subject string
	// Since is when the condition started, in Unix milliseconds.
	Since int64
}

func (a Alarm) key() string { return a.Kind + "\x00" + a.Subject }

// NodeLoad is one node's load, as carried in a summary's list of the
// busiest nodes. Percentages are in [0, 100]; the wire format keeps two
// decimals.
type NodeLoad struct {
	Node string  `json:"node"`
	CPU  float64 `json:"cpu_percent"`
	Mem  float64 `json:"mem_percent"`
}

// compareLoad orders the busiest first: by CPU, then memory, then name.
func compareLoad(x, y NodeLoad) int {
	return cmp.Or(cmp.Compare(y.CPU, x.CPU), cmp.Compare(y.Mem, x.Mem), cmp.Compare(x.Node, y.Node))
}

// mergeBusiest keeps the MaxBusiest busiest of both lists, one entry per
// node (its busiest), with percentages rounded to the two decimals the
// wire keeps (so the order survives encoding). Since every node sits in
// exactly one subtree of the plan, lists from different children never
// share a node and the result is exactly the cluster's top MaxBusiest
// whatever the merge order.
func mergeBusiest(a, b []NodeLoad) []NodeLoad {
	if len(a)+len(b) == 0 {
		return nil
	}
	all := slices.Concat(a, b)
	for i := range all {
		all[i].CPU, all[i].Mem = roundPercent(all[i].CPU), roundPercent(all[i].Mem)
	}
	slices.SortFunc(all, compareLoad)
	out := make([]NodeLoad, 0, min(len(all), MaxBusiest))
	seen := make(map[string]bool, len(all))
	for _, l := range all {
		if len(out) == MaxBusiest {
			break
		}
		if !seen[l.Node] {
			seen[l.Node] = true
			out = append(out, l)
		}
	}
	return out
}

// Summary is what a node, or an aggregator for its whole subtree, pushes to
// its parent every interval.
type Summary struct {
	// Origin is the sender's node ID; Merge leaves it empty for the
	// aggregator to fill in.
	Origin string
	// Epoch is the version of the monitoring plan the sender followed.
	Epoch uint64
	// Seq increases with every summary an origin sends, across restarts
	// (the agent uses the sample time in milliseconds): receivers refuse
	// anything not newer than the last one they accepted.
	Seq uint64
	// Time is the sample time in Unix milliseconds (the newest sample in a
	// merged summary).
	Time int64
	// Truncated is set when limits dropped something anywhere below.
	Truncated bool
	// Nodes counts nodes by status (alive, suspect, dead, draining…).
	Nodes map[string]uint64
	// Workloads counts workload instances by state (running, failed…).
	Workloads map[string]uint64
	// Metrics holds aggregates by metric name, then dimension key.
	Metrics map[string]map[string]*Agg
	// Alarms lists active alarms, sorted by kind then subject.
	Alarms []Alarm
	// Busiest lists the subtree's busiest nodes by CPU, busiest first, at
	// most MaxBusiest (absent from version-1 summaries).
	Busiest []NodeLoad
}

// Observe records one sample of metric in each of the given dimensions
// (DimAll is always included). It reports false if the value or a name was
// refused or a limit was reached.
func (s *Summary) Observe(metric string, v float64, dims ...string) bool {
	if validName(metric) != nil {
		return false
	}
	if s.Metrics == nil {
		s.Metrics = make(map[string]map[string]*Agg)
	}
	byDim, ok := s.Metrics[metric]
	if !ok {
		if len(s.Metrics) >= MaxMetrics {
			s.Truncated = true
			return false
		}
		byDim = make(map[string]*Agg)
		s.Metrics[metric] = byDim
	}
	okAll := true
	for _, d := range append([]string{DimAll}, dims...) {
		if validDimension(d) != nil {
			okAll = false
			continue
		}
		a, ok := byDim[d]
		if !ok {
			if len(byDim) >= MaxDimensions {
				s.Truncated = true
				okAll = false
				continue
			}
			a = &Agg{}
			byDim[d] = a
		}
		okAll = a.Add(v) && okAll
	}
	return okAll
}

// Metric returns the aggregate of a metric in a dimension.
func (s *Summary) Metric(metric, dim string) (*Agg, bool) {
	a, ok := s.Metrics[metric][dim]
	return a, ok
}

// Merge combines two summaries into a new one without modifying either. It
// is commutative and associative (exactly for counts, min, max, sketches,
// states and alarms; sums up to floating-point rounding), so aggregators can
// merge children in any order and grouping. When the union exceeds a limit
// the lexically largest keys are dropped, which gives the same result
// whatever the order, and Truncated is set.
func Merge(a, b *Summary) *Summary {
	out := &Summary{
		Epoch:     max(a.Epoch, b.Epoch),
		Time:      max(a.Time, b.Time),
		Truncated: a.Truncated || b.Truncated,
		Nodes:     mergeCounts(a.Nodes, b.Nodes),
		Workloads: mergeCounts(a.Workloads, b.Workloads),
	}
	if len(out.Nodes) > MaxStates || len(out.Workloads) > MaxStates {
		out.Truncated = true
		out.Nodes, out.Workloads = keepSmallest(out.Nodes, MaxStates), keepSmallest(out.Workloads, MaxStates)
	}
	if len(a.Metrics)+len(b.Metrics) > 0 {
		out.Metrics = make(map[string]map[string]*Agg)
	}
	for _, src := range []*Summary{a, b} {
		for name, dims := range src.Metrics {
			od, ok := out.Metrics[name]
			if !ok {
				od = make(map[string]*Agg, len(dims))
				out.Metrics[name] = od
			}
			for d, agg := range dims {
				if cur, ok := od[d]; ok {
					cur.Merge(agg)
				} else {
					c := agg.clone()
					od[d] = &c
				}
			}
		}
	}
	for name, dims := range out.Metrics {
		if len(dims) > MaxDimensions {
			out.Truncated = true
			out.Metrics[name] = keepSmallest(dims, MaxDimensions)
		}
	}
	if len(out.Metrics) > MaxMetrics {
		out.Truncated = true
		out.Metrics = keepSmallest(out.Metrics, MaxMetrics)
	}
	out.Alarms = mergeAlarms(a.Alarms, b.Alarms)
	if len(out.Alarms) > MaxAlarms {
		out.Truncated = true
		out.Alarms = out.Alarms[:MaxAlarms]
	}
	out.Busiest = mergeBusiest(a.Busiest, b.Busiest)
	return out
}

func mergeCounts(a, b map[string]uint64) map[string]uint64 {
	if len(a)+len(b) == 0 {
		return nil
	}
	out := make(map[string]uint64, len(a)+len(b))
	for k, v := range a {
		out[k] += v
	}
	for k, v := range b {
		out[k] += v
	}
	return out
}

func keepSmallest[V any](m map[string]V, n int) map[string]V {
	if len(m) <= n {
		return m
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys[n:] {
		delete(m, k)
	}
	return m
}

// mergeAlarms unions two alarm lists; the same alarm reported twice keeps
// the earliest start.
func mergeAlarms(a, b []Alarm) []Alarm {
	if len(a)+len(b) == 0 {
		return nil
	}
	byKey := make(map[string]Alarm, len(a)+len(b))
	for _, al := range slices.Concat(a, b) {
		if cur, ok := byKey[al.key()]; !ok || al.Since < cur.Since {
			byKey[al.key()] = al
		}
	}
	out := make([]Alarm, 0, len(byKey))
	for _, al := range byKey {
		out = append(out, al)
	}
	sortAlarms(out)
	return out
}

func sortAlarms(as []Alarm) {
	slices.SortFunc(as, func(x, y Alarm) int {
		return cmp.Or(cmp.Compare(x.Kind, y.Kind), cmp.Compare(x.Subject, y.Subject))
	})
}

// Validate checks every field against the limits and sanity rules; it is
// what makes a decoded summary safe to merge.
func (s *Summary) Validate() error {
	if err := validValue(s.Origin); err != nil {
		return fmt.Errorf("%w: origin: %w", ErrInvalidSummary, err)
	}
	if s.Time < 0 {
		return fmt.Errorf("%w: negative time", ErrInvalidSummary)
	}
	for _, m := range []map[string]uint64{s.Nodes, s.Workloads} {
		if len(m) > MaxStates {
			return fmt.Errorf("%w: %d states > %d", ErrInvalidSummary, len(m), MaxStates)
		}
		for k := range m {
			if err := validName(k); err != nil {
				return fmt.Errorf("%w: state: %w", ErrInvalidSummary, err)
			}
		}
	}
	if len(s.Metrics) > MaxMetrics {
		return fmt.Errorf("%w: %d metrics > %d", ErrInvalidSummary, len(s.Metrics), MaxMetrics)
	}
	for name, dims := range s.Metrics {
		if err := validName(name); err != nil {
			return fmt.Errorf("%w: metric: %w", ErrInvalidSummary, err)
		}
		if len(dims) == 0 || len(dims) > MaxDimensions {
			return fmt.Errorf("%w: metric %s has %d dimensions", ErrInvalidSummary, name, len(dims))
		}
		for d, a := range dims {
			if err := validDimension(d); err != nil {
				return fmt.Errorf("%w: metric %s: %w", ErrInvalidSummary, name, err)
			}
			if err := a.validate(); err != nil {
				return fmt.Errorf("%w: metric %s %s: %w", ErrInvalidSummary, name, d, err)
			}
		}
	}
	if len(s.Alarms) > MaxAlarms {
		return fmt.Errorf("%w: %d alarms > %d", ErrInvalidSummary, len(s.Alarms), MaxAlarms)
	}
	for i, al := range s.Alarms {
		if err := validName(al.Kind); err != nil {
			return fmt.Errorf("%w: alarm kind: %w", ErrInvalidSummary, err)
		}
		if err := validSubject(al.Subject); err != nil {
			return fmt.Errorf("%w: alarm subject: %w", ErrInvalidSummary, err)
		}
		if i > 0 && s.Alarms[i-1].key() >= al.key() {
			return fmt.Errorf("%w: alarms unsorted or duplicated", ErrInvalidSummary)
		}
	}
	if len(s.Busiest) > MaxBusiest {
		return fmt.Errorf("%w: %d busiest nodes > %d", ErrInvalidSummary, len(s.Busiest), MaxBusiest)
	}
	nodes := make(map[string]bool, len(s.Busiest))
	for i, l := range s.Busiest {
		if err := validValue(l.Node); err != nil || l.Node == "" {
			return fmt.Errorf("%w: busiest node name %q", ErrInvalidSummary, l.Node)
		}
		if !validPercent(l.CPU) || !validPercent(l.Mem) {
			return fmt.Errorf("%w: busiest node %s: cpu %v%% or mem %v%% not in [0, 100]", ErrInvalidSummary, l.Node, l.CPU, l.Mem)
		}
		if nodes[l.Node] {
			return fmt.Errorf("%w: busiest node %s listed twice", ErrInvalidSummary, l.Node)
		}
		nodes[l.Node] = true
		if i > 0 && compareLoad(s.Busiest[i-1], l) >= 0 {
			return fmt.Errorf("%w: busiest nodes not sorted busiest first", ErrInvalidSummary)
		}
	}
	return nil
}

// roundPercent rounds to hundredths, as the wire format does.
func roundPercent(v float64) float64 { return math.Round(v*100) / 100 }

func validPercent(v float64) bool { return v >= 0 && v <= 100 } // false for NaN

func (a *Agg) validate() error {
	if a.Count == 0 {
		return errors.New("empty aggregate")
	}
	for _, v := range []float64{a.Min, a.Max} {
		if math.IsNaN(v) || math.Abs(v) > MaxValue {
			return fmt.Errorf("min/max %v out of range", v)
		}
	}
	if math.IsNaN(a.Sum) || math.IsInf(a.Sum, 0) {
		return errors.New("sum not finite")
	}
	if a.Min > a.Max {
		return fmt.Errorf("min %v above max %v", a.Min, a.Max)
	}
	// The mean must lie between min and max, give or take rounding.
	mean := a.Sum / float64(a.Count)
	slack := 1e-9 * max(math.Abs(a.Min), math.Abs(a.Max), 1)
	if mean < a.Min-slack || mean > a.Max+slack {
		return fmt.Errorf("mean %v outside [%v, %v]", mean, a.Min, a.Max)
	}
	if a.Sketch.Len() > MaxSketchBuckets {
		return fmt.Errorf("%d sketch buckets > %d", a.Sketch.Len(), MaxSketchBuckets)
	}
	if a.Sketch.Len() > 0 {
		var total uint64
		for k, n := range a.Sketch.bins {
			if !validSketchKey(k) || n == 0 {
				return fmt.Errorf("bad sketch bucket %d:%d", k, n)
			}
			if total+n < total {
				return errors.New("sketch count overflows")
			}
			total += n
		}
		if total != a.Count {
			return fmt.Errorf("sketch holds %d values, count is %d", total, a.Count)
		}
	}
	return nil
}

// validName accepts Prometheus-style names: a lowercase letter, then
// lowercase letters, digits and underscores.
func validName(s string) error {
	if s == "" || len(s) > MaxNameLen {
		return fmt.Errorf("name length %d not in [1, %d]", len(s), MaxNameLen)
	}
	for i := range len(s) {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c == '_' || i > 0 && c >= '0' && c <= '9') {
			return fmt.Errorf("bad name %q", s)
		}
	}
	return nil
}

// validValue accepts printable ASCII without spaces (IDs, label values).
func validValue(s string) error {
	if len(s) > MaxValueLen {
		return fmt.Errorf("value length %d > %d", len(s), MaxValueLen)
	}
	for i := range len(s) {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return fmt.Errorf("bad character in %q", s)
		}
	}
	return nil
}

// validSubject accepts printable ASCII with spaces (rule texts), up to
// MaxSubjectLen.
func validSubject(s string) error {
	if s == "" || len(s) > MaxSubjectLen {
		return fmt.Errorf("subject length %d not in [1, %d]", len(s), MaxSubjectLen)
	}
	for i := range len(s) {
		if s[i] < ' ' || s[i] >= 0x7f {
			return fmt.Errorf("bad character in %q", s)
		}
	}
	return nil
}

func validDimension(d string) error {
	if d == DimAll {
		return nil
	}
	if err := validValue(d); err != nil {
		return err
	}
	var rest string
	switch {
	case strings.HasPrefix(d, dimZonePrefix):
		rest = d[len(dimZonePrefix):]
	case strings.HasPrefix(d, dimDeploymentPrefix):
		rest = d[len(dimDeploymentPrefix):]
	case strings.HasPrefix(d, dimLabelPrefix):
		k, v, ok := strings.Cut(d[len(dimLabelPrefix):], "=")
		if !ok || k == "" {
			return fmt.Errorf("bad label dimension %q", d)
		}
		rest = k + v
	default:
		return fmt.Errorf("unknown dimension %q", d)
	}
	if rest == "" {
		return fmt.Errorf("empty dimension value in %q", d)
	}
	return nil
}
