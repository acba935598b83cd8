package scale

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/metrics"
	"runtime/trace"
	"sync"
	"time"
)

// The runtime watch records, once a second, how this process's Go runtime
// is doing while its agents run: how late a 50 ms ticker woke (a stall of
// the whole process shows here first), the scheduler's latency (how long
// runnable goroutines waited for a CPU), garbage collection (cycles, CPU,
// assists that make allocating goroutines mark, stop-the-world pauses),
// goroutines and live heap. Every agent in colony and bare modes shares
// this runtime, so a stall here is a stall of every agent at once: the
// probes each sends go unanswered and all suspect each other.
//
// With a flight recorder (Options.FlightRecorder) the watch also keeps the
// last seconds of execution trace and writes them out the first times the
// ticker wakes late by StallTrace or more: `go tool trace -pprof=sched`
// (or sync, syscall) then tells what the goroutines waited for.

// watchMetrics are the runtime/metrics samples read each second, in the
// order of the indices below.
var watchMetrics = []string{
	mSched:      "/sched/latencies:seconds",
	mPause:      "/sched/pauses/total/gc:seconds",
	mGoroutines: "/sched/goroutines:goroutines",
	mLive:       "/gc/heap/live:bytes",
	mCycles:     "/gc/cycles/total:gc-cycles",
	mGCCPU:      "/cpu/classes/gc/total:cpu-seconds",
	mAssistCPU:  "/cpu/classes/gc/mark/assist:cpu-seconds",
	mUserCPU:    "/cpu/classes/user:cpu-seconds",
}

const (
	mSched = iota
	mPause
	mGoroutines
	mLive
	mCycles
	mGCCPU
	mAssistCPU
	mUserCPU
)

// watchRow is one second of the watch.
type watchRow struct {
	at                    time.Duration // since the watch started
	lateMax               time.Duration // worst lateness of the 50 ms ticker
	schedP99, schedMax    float64       // scheduler latency this second, seconds (bucket bounds)
	pauseMax              float64       // longest stop-the-world pause this second, seconds
	goroutines, liveMB    uint64
	gcCycles              uint64
	gcCPU, assistCPU, cpu float64 // CPU-seconds: GC, GC assists, user Go code (the runtime's estimates, updated at each GC)
	procCPU               float64 // CPU-seconds this process used this second (getrusage)
}

const watchHeader = "t_s,ticker_late_max_ms,sched_latency_p99_ms,sched_latency_max_ms,gc_pause_max_ms,goroutines,heap_live_mb,gc_cycles,gc_cpu_s,gc_assist_cpu_s,user_cpu_s,process_cpu_s"

func (w watchRow) csv() string {
	ms := func(s float64) string { return fmt.Sprintf("%.1f", 1000*s) }
	return fmt.Sprintf("%.1f,%.1f,%s,%s,%s,%d,%d,%d,%.3f,%.3f,%.3f,%.3f", w.at.Seconds(),
		float64(w.lateMax)/float64(time.Millisecond), ms(w.schedP99), ms(w.schedMax), ms(w.pauseMax),
		w.goroutines, w.liveMB, w.gcCycles, w.gcCPU, w.assistCPU, w.cpu, w.procCPU)
}

// histDelta returns the upper bounds of the bucket holding quantile q and of
// the highest non-empty bucket of the observations between two samples of
// the same histogram (0, 0 with none). An infinite upper bound is reported
// as the bucket's lower one.
func histDelta(prev, cur *metrics.Float64Histogram, q float64) (atQ, max float64) {
	if cur == nil {
		return 0, 0
	}
	counts := make([]uint64, len(cur.Counts))
	var total uint64
	for i, c := range cur.Counts {
		if prev != nil && i < len(prev.Counts) {
			c -= prev.Counts[i]
		}
		counts[i] = c
		total += c
	}
	if total == 0 {
		return 0, 0
	}
	bound := func(i int) float64 {
		if b := cur.Buckets[i+1]; !math.IsInf(b, 1) {
			return b
		}
		return cur.Buckets[i]
	}
	want := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	atQ = -1
	for i, c := range counts {
		seen += c
		if atQ < 0 && seen >= want {
			atQ = bound(i)
		}
		if c > 0 {
			max = bound(i)
		}
	}
	return atQ, max
}

// runtimeWatch samples the runtime until its context ends.
type runtimeWatch struct {
	o      *Options
	name   string   // mode-N, for file names
	out    *os.File // a row a second, written at once: readable during the run
	fr     *trace.FlightRecorder
	traces int // stall traces written
	last   time.Time
}

// startRuntimeWatch starts the watch of one run, writing
// OUT/runtime-MODE-N.csv; the returned stop ends it and closes the file.
func startRuntimeWatch(ctx context.Context, o *Options, mode string, n int) (stop func()) {
	w := &runtimeWatch{o: o, name: fmt.Sprintf("%s-%d", mode, n)}
	f, err := os.Create(filepath.Join(o.Out, "runtime-"+w.name+".csv"))
	if err != nil {
		o.logf("runtime watch: %v", err)
		return func() {}
	}
	w.out = f
	fmt.Fprintln(w.out, watchHeader)
	if o.FlightRecorder {
		w.fr = trace.NewFlightRecorder(trace.FlightRecorderConfig{MinAge: 10 * time.Second, MaxBytes: 512 << 20})
		if err := w.fr.Start(); err != nil {
			o.logf("runtime watch: flight recorder: %v", err)
			w.fr = nil
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.loop(ctx)
	}()
	return func() {
		cancel()
		wg.Wait()
		if w.fr != nil {
			w.fr.Stop()
		}
		if err := w.out.Close(); err != nil {
			o.logf("runtime watch: %v", err)
		}
	}
}

func (w *runtimeWatch) loop(ctx context.Context) {
	const tick = 50 * time.Millisecond
	samples := make([]metrics.Sample, len(watchMetrics))
	for i, name := range watchMetrics {
		samples[i].Name = name
	}
	// prev keeps the last second's values; histograms are copied, as a
	// later metrics.Read may reuse their memory.
	var prev struct {
		sched, pause          *metrics.Float64Histogram
		cycles                uint64
		gcCPU, assistCPU, cpu float64
		proc                  time.Duration
	}
	keep := func() {
		prev.sched, prev.pause = copyHist(hist(samples[mSched])), copyHist(hist(samples[mPause]))
		prev.cycles = samples[mCycles].Value.Uint64()
		prev.gcCPU, prev.assistCPU, prev.cpu = samples[mGCCPU].Value.Float64(), samples[mAssistCPU].Value.Float64(), samples[mUserCPU].Value.Float64()
		prev.proc = selfCPU()
	}
	metrics.Read(samples)
	keep()
	start := time.Now()
	t := time.NewTicker(tick)
	defer t.Stop()
	next, lastRow := start.Add(tick), start
	var lateMax time.Duration
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := time.Now() // the channel's time is when the tick was due, not when this ran
			late := max(now.Sub(next), 0)
			next = now.Add(tick)
			lateMax = max(lateMax, late)
			if w.fr != nil && late >= w.o.StallTrace && w.traces < 3 && now.Sub(w.last) > 30*time.Second {
				w.writeTrace(now.Sub(start), late)
				// Writing took this goroutine's time, not the process's:
				// not a stall to record (it took 40 s in a storm).
				next = time.Now().Add(tick)
			}
			if now.Sub(lastRow) < time.Second {
				continue
			}
			lastRow = now
			metrics.Read(samples)
			row := watchRow{at: now.Sub(start), lateMax: lateMax}
			lateMax = 0
			row.schedP99, row.schedMax = histDelta(prev.sched, hist(samples[mSched]), 0.99)
			_, row.pauseMax = histDelta(prev.pause, hist(samples[mPause]), 1)
			row.goroutines = samples[mGoroutines].Value.Uint64()
			row.liveMB = samples[mLive].Value.Uint64() >> 20
			row.gcCycles = samples[mCycles].Value.Uint64() - prev.cycles
			row.gcCPU = samples[mGCCPU].Value.Float64() - prev.gcCPU
			row.assistCPU = samples[mAssistCPU].Value.Float64() - prev.assistCPU
			row.cpu = samples[mUserCPU].Value.Float64() - prev.cpu
			row.procCPU = (selfCPU() - prev.proc).Seconds()
			fmt.Fprintln(w.out, row.csv())
			keep()
		}
	}
}

// writeTrace writes the flight recorder's window to OUT/stall-MODE-N-Ts.trace.
func (w *runtimeWatch) writeTrace(at, late time.Duration) {
	w.traces++
	w.last = time.Now()
	path := filepath.Join(w.o.Out, fmt.Sprintf("stall-%s-%.0fs.trace", w.name, at.Seconds()))
	f, err := os.Create(path)
	if err != nil {
		w.o.logf("runtime watch: %v", err)
		return
	}
	n, err := w.fr.WriteTo(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		w.o.logf("runtime watch: writing %s: %v", path, err)
		return
	}
	w.o.logf("runtime watch: the process stalled %s at %s; the last seconds of execution trace are in %s (%d MB)", late.Round(time.Millisecond), secs(at), path, n>>20)
}

func hist(s metrics.Sample) *metrics.Float64Histogram {
	if s.Value.Kind() != metrics.KindFloat64Histogram {
		return nil
	}
	return s.Value.Float64Histogram()
}

func copyHist(h *metrics.Float64Histogram) *metrics.Float64Histogram {
	if h == nil {
		return nil
	}
	return &metrics.Float64Histogram{Counts: append([]uint64(nil), h.Counts...), Buckets: h.Buckets}
}
