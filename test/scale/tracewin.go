package scale

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"golang.org/x/exp/trace"
)

// Trace windows: what an execution trace (the flight recorder's, or
// /debug/pprof/trace) says the process did, window by window: how many
// cores its goroutines used, how many waited to run, whether a GC mark was
// on, and, over a range of windows, where the time went. `go tool trace`
// answers for the whole trace or interactively; a stall needs the windows
// before, during and after it side by side (colony-scale trace FILE).

// TraceWindow is one window of a trace.
type TraceWindow struct {
	Start    time.Duration // since the trace's first event
	Cores    float64       // goroutines' running time / window
	Runnable int           // goroutines waiting to run at the window's last event
	GCMark   bool          // a GC mark phase was on at some point of the window
	// Running is goroutines' running time by the stack they stopped at
	// (innermost frames first; where the work ran up to, not where it
	// began); Samples counts CPU profile samples by every function on
	// their stacks, when a CPU profile ran with the trace.
	Running map[string]time.Duration
	Samples map[string]int
}

// traceStackDepth is how many frames name a stopping point.
const traceStackDepth = 12

// ReadTraceWindows reads a whole execution trace into windows of win.
func ReadTraceWindows(in io.Reader, win time.Duration) ([]TraceWindow, error) {
	r, err := trace.NewReader(in)
	if err != nil {
		return nil, err
	}
	var (
		ws       []TraceWindow
		t0       trace.Time
		started  bool
		runnable int
		gcMark   bool
		since    = map[trace.GoID]trace.Time{} // when each running goroutine started
	)
	at := func(t trace.Time) int {
		i := int(t.Sub(t0) / win)
		for len(ws) <= i {
			ws = append(ws, TraceWindow{Start: time.Duration(len(ws)) * win, Running: map[string]time.Duration{}, Samples: map[string]int{}, GCMark: gcMark})
		}
		return i
	}
	for {
		ev, err := r.ReadEvent()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return ws, fmt.Errorf("trace: %w", err)
		}
		if !started {
			t0, started = ev.Time(), true
		}
		i := at(ev.Time())
		switch ev.Kind() {
		case trace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind != trace.ResourceGoroutine {
				continue
			}
			id := st.Resource.Goroutine()
			from, to := st.Goroutine()
			if from == trace.GoRunning {
				if s, ok := since[id]; ok {
					stack := frames(ev.Stack(), traceStackDepth)
					if stack == "" {
						stack = "(" + st.Reason + ")"
					}
					for s < ev.Time() { // split the run over the windows it spans
						j := at(s)
						end := min(t0+trace.Time(time.Duration(j+1)*win), ev.Time())
						ws[j].Cores += float64(end.Sub(s)) / float64(win)
						ws[j].Running[stack] += end.Sub(s)
						s = end
					}
					delete(since, id)
				}
			}
			if to == trace.GoRunning {
				since[id] = ev.Time()
			}
			if from == trace.GoRunnable {
				runnable--
			}
			if to == trace.GoRunnable {
				runnable++
			}
			ws[i].Runnable = max(runnable, 0)
		case trace.EventRangeBegin, trace.EventRangeActive:
			if ev.Range().Name == "GC concurrent mark phase" {
				gcMark = true
				ws[i].GCMark = true
			}
		case trace.EventRangeEnd:
			if ev.Range().Name == "GC concurrent mark phase" {
				gcMark = false
			}
		case trace.EventStackSample:
			seen := map[string]bool{}
			for f := range ev.Stack().Frames() {
				if !seen[f.Func] {
					seen[f.Func] = true
					ws[i].Samples[f.Func]++
				}
			}
			ws[i].Samples[""]++ // all samples
		}
	}
	return ws, nil
}

func frames(s trace.Stack, depth int) string {
	var b strings.Builder
	n := 0
	for f := range s.Frames() {
		if n == depth {
			break
		}
		if n > 0 {
			b.WriteString(" < ")
		}
		b.WriteString(f.Func)
		n++
	}
	return b.String()
}

// WriteTraceWindows prints one line per window, then, for windows from to
// to (inclusive, by index), the stopping stacks that ran longest and the
// functions most often on the CPU samples' stacks, per second of the range.
func WriteTraceWindows(out io.Writer, ws []TraceWindow, from, to, top int) {
	fmt.Fprintln(out, "window_s  cores  runnable  gc_mark")
	for _, w := range ws {
		mark := ""
		if w.GCMark {
			mark = "mark"
		}
		fmt.Fprintf(out, "%8.1f  %5.2f  %8d  %s\n", w.Start.Seconds(), w.Cores, w.Runnable, mark)
	}
	if from < 0 || to < from || from >= len(ws) {
		return
	}
	to = min(to, len(ws)-1)
	running, samples := map[string]time.Duration{}, map[string]int{}
	for _, w := range ws[from : to+1] {
		for k, v := range w.Running {
			running[k] += v
		}
		for k, v := range w.Samples {
			samples[k] += v
		}
	}
	secs := (ws[to].Start - ws[from].Start).Seconds()
	if len(ws) > 1 {
		secs += (ws[1].Start - ws[0].Start).Seconds()
	}
	fmt.Fprintf(out, "\nwindows %d-%d (%.1f s): running time by where goroutines stopped\n", from, to, secs)
	for _, k := range topKeys(running, top) {
		fmt.Fprintf(out, "%9.1f ms  %s\n", float64(running[k])/1e6, k)
	}
	if samples[""] == 0 {
		return
	}
	fmt.Fprintf(out, "\nCPU samples per second (%d in all), by function on the stack\n", samples[""])
	for _, k := range topKeys(samples, top+1) {
		if k != "" {
			fmt.Fprintf(out, "%8.1f  %s\n", float64(samples[k])/secs, k)
		}
	}
}

func topKeys[V int | time.Duration](m map[string]V, n int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] })
	return keys[:min(n, len(keys))]
}
