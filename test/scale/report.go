package scale

import (
	"cmp"
	"encoding/csv"
	"errors"
	"fmt"
	"html"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

var csvHeader = []string{"mode", "profile", "n", "converge_s", "leader_s", "plan_s", "deploy_s", "join_s",
	"cpu_pct_per_node", "gossip_bytes_per_s_per_node", "mem_mb_per_node", "goroutines_per_node",
	"suspicions_per_min", "join_suspicions", "false_dead", "not_alive", "peak_rss_mb", "error", "converge_cpu_s", "view_s"}

func dsec(d time.Duration) string {
	if d < 0 {
		return ""
	}
	return strconv.FormatFloat(d.Seconds(), 'f', 2, 64)
}

func (r Result) row() []string {
	f := func(v float64, prec int) string { return strconv.FormatFloat(v, 'f', prec, 64) }
	return []string{r.Mode, r.Profile, strconv.Itoa(r.N), dsec(r.Converge), dsec(r.Leader), dsec(r.Plan), dsec(r.Deploy), dsec(r.JoinTime),
		f(r.CPUPercent, 3), f(r.BytesPerSec, 0), f(r.MemPerNode/1e6, 2), f(r.Goroutines, 1),
		f(r.Suspicions, 2), f(r.JoinSuspects, 1), f(r.FalseDead, 1), strconv.Itoa(r.NotAlive), f(float64(r.PeakRSS)/1e6, 0), r.Err, dsec(r.ConvCPU), dsec(r.View)}
}

func parseSec(s string) time.Duration {
	if s == "" {
		return -1
	}
	v, _ := strconv.ParseFloat(s, 64)
	return time.Duration(v * float64(time.Second))
}

func fromRow(rec []string) (Result, bool) {
	if len(rec) < 18 || rec[0] == "mode" {
		return Result{}, false
	}
	rec = append(rec, "", "") // rows written before converge_cpu_s and view_s

	fl := func(s string) float64 { v, _ := strconv.ParseFloat(s, 64); return v }
	n, _ := strconv.Atoi(rec[2])
	na, _ := strconv.Atoi(rec[15])
	return Result{Mode: rec[0], Profile: rec[1], N: n, Converge: parseSec(rec[3]), Leader: parseSec(rec[4]), Plan: parseSec(rec[5]),
		Deploy: parseSec(rec[6]), JoinTime: parseSec(rec[7]), CPUPercent: fl(rec[8]), BytesPerSec: fl(rec[9]), MemPerNode: fl(rec[10]) * 1e6,
		Goroutines: fl(rec[11]), Suspicions: fl(rec[12]), JoinSuspects: fl(rec[13]), FalseDead: fl(rec[14]), NotAlive: na,
		PeakRSS: uint64(fl(rec[16]) * 1e6), Err: rec[17], ConvCPU: parseSec(rec[18]), View: parseSec(rec[19])}, true
}

// Write merges results into dir/results.csv (a new run of the same mode,
// profile and N replaces the old row, so runs at different N add up) and
// rewrites dir/results.md and the plots from the merged table.
func Write(dir string, results []Result) ([]Result, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	merged, err := mergeCSV(filepath.Join(dir, "results.csv"), csvHeader, results, fromRow, Result.row,
		func(r Result) string { return fmt.Sprintf("%s/%s/%d", r.Mode, r.Profile, r.N) },
		func(a, b Result) int {
			return cmp.Or(cmp.Compare(a.Profile, b.Profile), cmp.Compare(a.N, b.N), cmp.Compare(a.Mode, b.Mode))
		})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(Markdown(merged)), 0o644); err != nil {
		return nil, err
	}
	var mons []MonResult
	for _, r := range results {
		mons = append(mons, r.Monitor...)
	}
	ms, err := writeMonitor(dir, mons)
	if err != nil {
		return nil, err
	}
	return merged, writePlots(dir, merged, ms)
}

// MonitorResults reads the monitoring rows held in dir/monitor.csv.
func MonitorResults(dir string) []MonResult {
	return readCSV(filepath.Join(dir, "monitor.csv"), monFromRow)
}

// writeMonitor merges monitoring rows into dir/monitor.csv like Write
// does results (keyed by mode, profile, N, layout and K) and rewrites
// dir/monitor.md.
func writeMonitor(dir string, rs []MonResult) ([]MonResult, error) {
	path := filepath.Join(dir, "monitor.csv")
	if len(rs) == 0 && len(MonitorResults(dir)) == 0 {
		return nil, nil
	}
	merged, err := mergeCSV(path, monHeader, rs, monFromRow, MonResult.row,
		func(r MonResult) string { return fmt.Sprintf("%s/%s/%d/%s/%d", r.Mode, r.Profile, r.N, r.Layout, r.K) },
		func(a, b MonResult) int {
			return cmp.Or(cmp.Compare(a.Profile, b.Profile), cmp.Compare(a.N, b.N), cmp.Compare(a.Mode, b.Mode),
				cmp.Compare(b.Layout, a.Layout), // tree before flat
				cmp.Compare(a.K, b.K))
		})
	if err != nil {
		return nil, err
	}
	return merged, os.WriteFile(filepath.Join(dir, "monitor.md"), []byte(MonitorMarkdown(merged)), 0o644)
}

// readCSV parses the rows of a CSV file; parse refuses the header and
// damaged rows. A missing file has no rows.
func readCSV[T any](path string, parse func([]string) (T, bool)) []T {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	recs, _ := csv.NewReader(f).ReadAll()
	var out []T
	for _, rec := range recs {
		if r, ok := parse(rec); ok {
			out = append(out, r)
		}
	}
	return out
}

// mergeCSV adds rows to the ones held in path, a later row replacing an
// earlier one with the same key, and rewrites the file sorted by order.
func mergeCSV[T any](path string, header []string, add []T, parse func([]string) (T, bool), row func(T) []string,
	key func(T) string, order func(a, b T) int) ([]T, error) {
	all := map[string]T{}
	for _, r := range readCSV(path, parse) {
		all[key(r)] = r
	}
	for _, r := range add {
		all[key(r)] = r
	}
	merged := slices.SortedFunc(maps.Values(all), order)
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	w := csv.NewWriter(f)
	_ = w.Write(header)
	for _, r := range merged {
		_ = w.Write(row(r))
	}
	w.Flush()
	if err := errors.Join(w.Error(), f.Close()); err != nil {
		return nil, err
	}
	return merged, nil
}

// Markdown renders the table, with Colony/bare ratios where both ran.
func Markdown(rs []Result) string {
	var b strings.Builder
	b.WriteString("| mode | profile | N | converge | view | leader+voters | plan | 1 instance/node | CPU-s to converge | CPU %/node | gossip B/s/node | MB/node | suspicions/min | false dead | peak RSS MB | note |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	bare := map[string]Result{}
	for _, r := range rs {
		if r.Mode == ModeBare {
			bare[fmt.Sprintf("%s/%d", r.Profile, r.N)] = r
		}
	}
	for _, r := range rs {
		note := r.Err
		if br, ok := bare[fmt.Sprintf("%s/%d", r.Profile, r.N)]; ok && r.Mode != ModeBare && br.Converge > 0 && r.Converge > 0 {
			ratio := fmt.Sprintf("converge %.2f× bare", r.Converge.Seconds()/br.Converge.Seconds())
			if r.View > 0 {
				ratio += fmt.Sprintf(", view %.2f×", r.View.Seconds()/br.Converge.Seconds())
			}
			if br.CPUPercent > 0 {
				ratio += fmt.Sprintf(", CPU %.1f×", r.CPUPercent/br.CPUPercent)
			}
			if br.BytesPerSec > 0 {
				ratio += fmt.Sprintf(", bytes %.1f×", r.BytesPerSec/br.BytesPerSec)
			}
			note = strings.TrimPrefix(note+"; "+ratio, "; ")
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %.2f | %.0f | %.2f | %.2f | %.0f | %.0f | %s |\n",
			r.Mode, r.Profile, r.N, secs(r.Converge), secs(r.View), secs(r.Leader), secs(r.Plan), secs(r.Deploy), secs(r.ConvCPU),
			r.CPUPercent, r.BytesPerSec, r.MemPerNode/1e6, r.Suspicions, r.FalseDead, float64(r.PeakRSS)/1e6, note)
	}
	return b.String()
}

// figure is one plot: a value of each result against N.
type figure struct {
	file, title, unit string
	value             func(Result) (float64, bool)
}

func timeFig(file, title string, get func(Result) time.Duration) figure {
	return figure{file, title, "s", func(r Result) (float64, bool) { d := get(r); return d.Seconds(), d >= 0 }}
}

var figures = []figure{
	timeFig("converge.svg", "Time to full membership convergence", func(r Result) time.Duration { return r.Converge }),
	timeFig("view.svg", "Time until every node lists every member with its metadata", func(r Result) time.Duration { return r.View }),
	timeFig("leader.svg", "Time to leader and voters", func(r Result) time.Duration { return r.Leader }),
	timeFig("plan.svg", "Time to a complete monitoring plan", func(r Result) time.Duration { return r.Plan }),
	timeFig("deploy.svg", "Time to one instance running per node", func(r Result) time.Duration { return r.Deploy }),
	{"cpu.svg", "Steady-state CPU per node", "% of a core", func(r Result) (float64, bool) { return r.CPUPercent, r.Converge >= 0 }},
	{"bytes.svg", "Steady-state gossip bytes sent per node", "B/s", func(r Result) (float64, bool) { return r.BytesPerSec, r.Converge >= 0 }},
	{"memory.svg", "Memory per node", "MB", func(r Result) (float64, bool) { return r.MemPerNode / 1e6, r.Converge >= 0 }},
	{"suspicions.svg", "False suspicions at steady state", "per minute", func(r Result) (float64, bool) { return r.Suspicions, r.Converge >= 0 }},
	{"rss.svg", "Peak RSS of the run", "MB", func(r Result) (float64, bool) { return float64(r.PeakRSS) / 1e6, r.PeakRSS > 0 }},
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"}

func writePlots(dir string, rs []Result, ms []MonResult) error {
	for _, fg := range figures {
		var pts []point
		for _, r := range rs {
			if v, ok := fg.value(r); ok {
				pts = append(pts, point{r.Mode + " (" + r.Profile + ")", float64(r.N), v})
			}
		}
		if err := os.WriteFile(filepath.Join(dir, fg.file), []byte(plotSVG(fg.title, fg.unit, pts)), 0o644); err != nil {
			return err
		}
	}
	if len(ms) == 0 {
		return nil
	}
	for _, fg := range monFigures {
		if err := os.WriteFile(filepath.Join(dir, fg.file), []byte(plotSVG(fg.title, fg.unit, monPoints(ms, fg.value))), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// point is one value of a series at N = x.
type point struct {
	series string
	x, y   float64
}

// plotSVG draws one figure: a line per series, N on a logarithmic x axis.
func plotSVG(title, unit string, all []point) string {
	type pt struct{ x, y float64 }
	series := map[string][]pt{}
	var names []string
	xmin, xmax, ymax := math.Inf(1), math.Inf(-1), 0.0
	for _, p := range all {
		if p.x <= 0 {
			continue
		}
		if _, seen := series[p.series]; !seen {
			names = append(names, p.series)
		}
		series[p.series] = append(series[p.series], pt{p.x, p.y})
		xmin, xmax, ymax = math.Min(xmin, p.x), math.Max(xmax, p.x), math.Max(ymax, p.y)
	}
	sort.Strings(names)
	const W, H, L, R, T, B = 640, 400, 70, 170, 40, 50
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15">%s</text>`+"\n", L, html.EscapeString(title))
	if len(names) == 0 {
		b.WriteString(`<text x="200" y="200">no data</text></svg>` + "\n")
		return b.String()
	}
	if xmin == xmax {
		xmin, xmax = xmin/2, xmax*2
	}
	if ymax <= 0 {
		ymax = 1
	}
	ymax = niceCeil(ymax * 1.05)
	lx0, lx1 := math.Log10(xmin), math.Log10(xmax)
	px := func(x float64) float64 { return L + (math.Log10(x)-lx0)/(lx1-lx0)*(W-L-R) }
	py := func(y float64) float64 { return H - B - y/ymax*(H-T-B) }
	fmt.Fprintf(&b, `<path d="M%d %d V%d H%d" stroke="black" fill="none"/>`+"\n", L, T, H-B, W-R)
	for i := 0; i <= 4; i++ {
		y := ymax * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
			L, W-R, py(y), py(y), L-6, py(y)+4, strconv.FormatFloat(y, 'g', 3, 64))
	}
	var ticks []float64
	for _, p := range all {
		ticks = append(ticks, p.x)
	}
	sort.Float64s(ticks)
	last := -1e9
	for _, x := range ticks {
		if px(x)-last < 28 {
			continue
		}
		last = px(x)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%g</text>`+"\n", px(x), H-B+16, x)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">N (nodes, log scale)</text>`+"\n", L+(W-L-R)/2, H-12)
	fmt.Fprintf(&b, `<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">%s</text>`+"\n", T+(H-T-B)/2, T+(H-T-B)/2, html.EscapeString(unit))
	for i, name := range names {
		pts := series[name]
		sort.Slice(pts, func(a, c int) bool { return pts[a].x < pts[c].x })
		col := palette[i%len(palette)]
		var d strings.Builder
		for j, p := range pts {
			cmd := "L"
			if j == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&d, "%s%.1f %.1f ", cmd, px(p.x), py(p.y))
		}
		fmt.Fprintf(&b, `<path d="%s" stroke="%s" stroke-width="2" fill="none"/>`+"\n", strings.TrimSpace(d.String()), col)
		for _, p := range pts {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>N=%g: %g</title></circle>`+"\n", px(p.x), py(p.y), col, p.x, p.y)
		}
		ly := T + 10 + 18*i
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n", W-R+12, ly, col, W-R+30, ly+10, html.EscapeString(name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}
