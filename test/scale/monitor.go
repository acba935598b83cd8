package scale

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"colony/agent"
	"colony/scaling/monitor"
)

// Monitoring layouts measured one after the other on the same cluster.
const (
	LayoutTree = "tree" // K from Options.MonitorK: depth ⌈log_K N⌉
	LayoutFlat = "flat" // K = N+1: one node collects from all, depth 1
)

// MonResult is the monitoring cost of one layout in one colony run. The
// layout is switched through the monitor.group_size cluster setting, the
// way an operator would; the figures come from every node's
// GET /v1/monitor/status and the root's GET /v1/cluster/metrics.
type MonResult struct {
	Mode, Profile, Layout string
	N, K, Depth           int
	Interval, Window      time.Duration
	// Root fan-in: children in the plan, and fresh children summaries the
	// root holds at the end of the window; the largest planned fan-in of
	// any aggregator.
	RootFanIn, RootChildren, MaxFanIn int
	// Summary bytes per second per node: sent (mean, max), received (the
	// busiest node), received by the root.
	OutMean, OutMax, InMax, RootIn float64
	// Time in the monitoring code (sampling, merging, encoding, accepting)
	// per node in ms per second (10 ms/s = 1 % of a core): mean and max.
	WorkMean, WorkMax float64
	// CPUPercent is the whole cluster's CPU per node over the window, in
	// % of one core (gossip, Raft, HTTP included): the difference between
	// the layouts is what the layout costs beyond the monitoring code.
	CPUPercent float64
	// Age of the oldest sample in the cluster view the root answers with
	// (mean and max over Reads reads, one every half interval), against
	// the bound (depth+1) × interval.
	AgeMean, AgeMax, Bound float64
	Reads                  int
	// Rejected counts summaries refused by aggregators during the window.
	Rejected int
	Err      string
}

// monitorAPI is what a cluster offers the monitoring measurement.
type monitorAPI interface{ monAPI() *api }

func (p *api) monAPI() *api { return p }

// measureMonitor measures the tree for each K, then the flat alternative,
// on a converged cluster (a tree with N ≤ K is one group: the flat layout,
// not measured twice).
func measureMonitor(ctx context.Context, o *Options, c cluster, mode string, n int) []MonResult {
	ma, ok := c.(monitorAPI)
	if !ok {
		return nil
	}
	p := ma.monAPI()
	type layout struct {
		name string
		k    int
	}
	var layouts []layout
	for _, k := range o.MonitorK {
		layouts = append(layouts, layout{LayoutTree, k})
	}
	var out []MonResult
	for _, l := range append(layouts, layout{LayoutFlat, n + 1}) {
		if l.k > agent.MaxMonitorGroupSize {
			continue // N too large for one group: no flat layout
		}
		if l.name == LayoutTree && n <= l.k {
			continue // one group: the tree is the flat layout
		}
		r := MonResult{Mode: mode, Profile: o.Profile, Layout: l.name, N: n, K: l.k, Interval: o.MonitorInterval}
		o.logf("%s: monitoring, %s layout (K=%d, interval %s)", mode, l.name, l.k, o.MonitorInterval)
		if err := measureLayout(ctx, o, c, p, &r); err != nil {
			r.Err = err.Error()
			o.logf("%s: monitoring %s: %v", mode, l.name, err)
		}
		o.logf("%s", r.summary())
		out = append(out, r)
	}
	return out
}

func (r MonResult) summary() string {
	return fmt.Sprintf("monitor %s N=%d K=%d depth %d: root fan-in %d (holds %d), max fan-in %d | per node sent %.0f B/s (max %.0f), busiest receives %.0f B/s, root %.0f B/s | monitoring code %.2f ms/s per node (max %.2f), cluster CPU %.3f%%/node | oldest sample at the root %.2fs mean, %.2fs max (%d reads), bound %.0fs | %d rejected",
		r.Layout, r.N, r.K, r.Depth, r.RootFanIn, r.RootChildren, r.MaxFanIn, r.OutMean, r.OutMax, r.InMax, r.RootIn, r.WorkMean, r.WorkMax, r.CPUPercent, r.AgeMean, r.AgeMax, r.Reads, r.Bound, r.Rejected)
}

func measureLayout(ctx context.Context, o *Options, c cluster, p *api, r *MonResult) error {
	var old monitor.Plan
	if err := p.get(ctx, p.addrs[0], "/v1/monitor/plan", &old); err != nil {
		return err
	}
	if err := p.put(ctx, "/v1/settings/"+agent.MonitorGroupSizeSetting, fmt.Sprintf(`{"value": "%d"}`, r.K)); err != nil {
		return err
	}
	t0 := time.Now()
	var plan *monitor.Plan
	for {
		var err error
		if plan, err = p.followedPlan(ctx, r.K); err == nil {
			break
		}
		if time.Since(t0) > o.Timeout || ctx.Err() != nil {
			return fmt.Errorf("no plan with K=%d followed by all within %s: %w", r.K, o.Timeout, err)
		}
		sleepCtx(ctx, 250*time.Millisecond)
	}
	r.Depth = plan.Depth
	r.Bound = float64(plan.Depth+1) * o.MonitorInterval.Seconds()
	r.RootFanIn = plan.FanIn(plan.Root())
	for id := range plan.Parents {
		r.MaxFanIn = max(r.MaxFanIn, plan.FanIn(id))
	}
	o.logf("%s layout: plan v%d (depth %d, root fan-in %d) followed by all %d nodes after %s", r.Layout, plan.Version, plan.Depth, r.RootFanIn, r.N, secs(time.Since(t0)))
	// Before measuring, what the old plan left behind must be gone: an
	// aggregator keeps a child's last summary for 3 intervals, and keeps
	// merging it into what it pushes, so samples from before the switch
	// can reach the root for 3 intervals plus one per level of the old
	// tree, plus the root's own interval.
	sleepCtx(ctx, time.Duration(max(plan.Depth, old.Depth)+5)*o.MonitorInterval)

	// The window runs from the middle of the first round of status reads
	// to the middle of the last (500 reads take a moment).
	t := time.Now()
	st0, err := p.monitorStatuses(ctx)
	if err != nil {
		return err
	}
	w0 := t.Add(time.Since(t) / 2)
	c0, err := c.sample(ctx)
	if err != nil {
		return err
	}
	rootAddr := ""
	for i, st := range st0 {
		if st.Root == plan.Root() && st.Parent == "" && st.Level >= 0 {
			rootAddr = p.addrs[i]
		}
	}
	if rootAddr == "" {
		return fmt.Errorf("no node says it is the root %.8s", plan.Root())
	}
	var ages []float64
	for time.Since(w0) < o.MonitorWindow && ctx.Err() == nil {
		var v agent.ClusterMetrics
		if err := p.get(ctx, rootAddr, "/v1/cluster/metrics?by=all", &v); err == nil && v.AgeSeconds > 0 {
			ages = append(ages, v.AgeSeconds)
		}
		sleepCtx(ctx, o.MonitorInterval/2)
	}
	c1, err := c.sample(ctx)
	if err != nil {
		return err
	}
	t = time.Now()
	st1, err := p.monitorStatuses(ctx)
	if err != nil {
		return err
	}
	win := t.Add(time.Since(t) / 2).Sub(w0)
	r.Window = win
	s, nf := win.Seconds(), float64(r.N)
	r.CPUPercent = 100 * (c1.cpu - c0.cpu).Seconds() / s / nf
	var outs, works []float64
	for i := range st1 {
		a, b := st1[i], st0[i]
		out := float64(a.BytesOut-b.BytesOut) / s
		in := float64(a.BytesIn-b.BytesIn) / s
		outs, works = append(outs, out), append(works, 1000*(a.WorkSeconds-b.WorkSeconds)/s)
		for reason, k := range a.Rejected {
			r.Rejected += int(k - b.Rejected[reason])
		}
		r.InMax = max(r.InMax, in)
		if p.addrs[i] == rootAddr {
			r.RootIn, r.RootChildren = in, a.Children
		}
		if a.PlanVersion != plan.Version {
			return fmt.Errorf("%s moved to plan v%d during the window (v%d measured)", p.addrs[i], a.PlanVersion, plan.Version)
		}
	}
	r.OutMean, r.OutMax = meanOf(outs), slices.Max(outs)
	r.WorkMean, r.WorkMax = meanOf(works), slices.Max(works)
	if len(ages) == 0 {
		return fmt.Errorf("the root at %s never answered GET /v1/cluster/metrics", rootAddr)
	}
	r.Reads, r.AgeMean, r.AgeMax = len(ages), meanOf(ages), slices.Max(ages)
	return nil
}

// followedPlan returns the committed plan once it has group size k,
// places every node and every node follows it.
func (p *api) followedPlan(ctx context.Context, k int) (*monitor.Plan, error) {
	var pl monitor.Plan
	if err := p.get(ctx, p.addrs[0], "/v1/monitor/plan", &pl); err != nil {
		return nil, err
	}
	if pl.GroupSize != k || pl.Len() < len(p.addrs) {
		return nil, fmt.Errorf("plan v%d has K=%d and %d of %d nodes", pl.Version, pl.GroupSize, pl.Len(), len(p.addrs))
	}
	sts, err := p.monitorStatuses(ctx)
	if err != nil {
		return nil, err
	}
	for i, st := range sts {
		if st.PlanVersion != pl.Version {
			return nil, fmt.Errorf("%s follows plan v%d, not v%d", p.addrs[i], st.PlanVersion, pl.Version)
		}
	}
	return &pl, nil
}

// monitorStatuses reads GET /v1/monitor/status from every node, in the
// order of addrs.
func (p *api) monitorStatuses(ctx context.Context) ([]agent.MonitorStatus, error) {
	out := make([]agent.MonitorStatus, len(p.addrs))
	var mu sync.Mutex
	var first error
	forEach(len(p.addrs), 32, func(i int) {
		if err := p.get(ctx, p.addrs[i], "/v1/monitor/status", &out[i]); err != nil {
			mu.Lock()
			if first == nil {
				first = err
			}
			mu.Unlock()
		}
	})
	return out, first
}

func meanOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

var monHeader = []string{"mode", "profile", "n", "layout", "k", "depth", "interval_s", "window_s", "root_fan_in", "root_children", "max_fan_in",
	"sent_bytes_per_s_mean", "sent_bytes_per_s_max", "received_bytes_per_s_max", "root_received_bytes_per_s",
	"monitor_ms_per_s_mean", "monitor_ms_per_s_max", "cpu_pct_per_node", "age_mean_s", "age_max_s", "bound_s", "reads", "error", "rejected"}

func (r MonResult) row() []string {
	f := func(v float64, prec int) string { return strconv.FormatFloat(v, 'f', prec, 64) }
	return []string{r.Mode, r.Profile, strconv.Itoa(r.N), r.Layout, strconv.Itoa(r.K), strconv.Itoa(r.Depth), dsec(r.Interval), dsec(r.Window),
		strconv.Itoa(r.RootFanIn), strconv.Itoa(r.RootChildren), strconv.Itoa(r.MaxFanIn),
		f(r.OutMean, 0), f(r.OutMax, 0), f(r.InMax, 0), f(r.RootIn, 0),
		f(r.WorkMean, 3), f(r.WorkMax, 3), f(r.CPUPercent, 3), f(r.AgeMean, 2), f(r.AgeMax, 2), f(r.Bound, 1), strconv.Itoa(r.Reads), r.Err, strconv.Itoa(r.Rejected)}
}

func monFromRow(rec []string) (MonResult, bool) {
	if len(rec) < len(monHeader) || rec[0] == "mode" {
		return MonResult{}, false
	}
	fl := func(s string) float64 { v, _ := strconv.ParseFloat(s, 64); return v }
	in := func(s string) int { v, _ := strconv.Atoi(s); return v }
	return MonResult{Mode: rec[0], Profile: rec[1], N: in(rec[2]), Layout: rec[3], K: in(rec[4]), Depth: in(rec[5]),
		Interval: parseSec(rec[6]), Window: parseSec(rec[7]), RootFanIn: in(rec[8]), RootChildren: in(rec[9]), MaxFanIn: in(rec[10]),
		OutMean: fl(rec[11]), OutMax: fl(rec[12]), InMax: fl(rec[13]), RootIn: fl(rec[14]), WorkMean: fl(rec[15]), WorkMax: fl(rec[16]),
		CPUPercent: fl(rec[17]), AgeMean: fl(rec[18]), AgeMax: fl(rec[19]), Bound: fl(rec[20]), Reads: in(rec[21]), Err: rec[22], Rejected: in(rec[23])}, true
}

// MonitorMarkdown renders the monitoring table: per-node cost, the root's
// fan-in and traffic, and freshness at the root, tree beside flat.
func MonitorMarkdown(rs []MonResult) string {
	var b strings.Builder
	b.WriteString("| mode | profile | N | layout | K | depth | interval | root fan-in (holds) | max fan-in | sent B/s/node mean (max) | busiest receives B/s | root receives B/s | monitoring ms/s/node mean (max) | CPU %/node | oldest sample at root mean / max | bound (depth+1)×interval | note |\n")
	b.WriteString("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range rs {
		note := r.Err
		if r.Err == "" && r.Reads > 0 {
			if r.AgeMax <= r.Bound {
				note = "within bound"
			} else {
				note = fmt.Sprintf("max %.2f× bound", r.AgeMax/r.Bound)
			}
			if r.RootFanIn > r.K {
				note += fmt.Sprintf("; root fan-in %d > K", r.RootFanIn)
			}
			if r.Rejected > 0 {
				note += fmt.Sprintf("; %d summaries rejected", r.Rejected)
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %d | %d | %s | %d (%d) | %d | %.0f (%.0f) | %.0f | %.0f | %.2f (%.2f) | %.3f | %.2f s / %.2f s | %.0f s | %s |\n",
			r.Mode, r.Profile, r.N, r.Layout, r.K, r.Depth, secs(r.Interval), r.RootFanIn, r.RootChildren, r.MaxFanIn,
			r.OutMean, r.OutMax, r.InMax, r.RootIn, r.WorkMean, r.WorkMax, r.CPUPercent, r.AgeMean, r.AgeMax, r.Bound, note)
	}
	return b.String()
}

// monFigures are the monitoring plots: one series per (layout, profile).
var monFigures = []struct {
	file, title, unit string
	value             func(MonResult) float64
}{
	{"monitor-bytes.svg", "Monitoring summary bytes sent per node (mean)", "B/s", func(r MonResult) float64 { return r.OutMean }},
	{"monitor-root.svg", "Monitoring bytes received by the root", "B/s", func(r MonResult) float64 { return r.RootIn }},
	{"monitor-cpu.svg", "Time in the monitoring code per node (mean)", "ms/s", func(r MonResult) float64 { return r.WorkMean }},
	{"monitor-age.svg", "Oldest sample at the root (max) / (depth+1)×interval", "ratio", func(r MonResult) float64 { return r.AgeMax / r.Bound }},
}

func monPoints(rs []MonResult, value func(MonResult) float64) []point {
	var pts []point
	for _, r := range rs {
		if r.Err != "" || r.Bound == 0 {
			continue
		}
		pts = append(pts, point{fmt.Sprintf("%s K=%s (%s)", r.Layout, kLabel(r), r.Profile), float64(r.N), value(r)})
	}
	return pts
}

// kLabel names a layout's K in a plot legend: the flat layout's K is N+1.
func kLabel(r MonResult) string {
	if r.Layout == LayoutFlat {
		return "N+1"
	}
	return strconv.Itoa(r.K)
}
