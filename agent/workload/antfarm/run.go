package antfarm

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MetricsFileEnv names the file Run writes its metrics to by default (set
// by Colony's workload runner).
const MetricsFileEnv = "COLONY_METRICS_FILE"

// Run is the `colony antfarm` command: args are its flags (without the
// command name). It generates an instance, solves it, prints progress to
// stdout and, every --report interval, atomically rewrites the metrics file
// (--metrics-file, default $COLONY_METRICS_FILE; none if empty) with
// iterations, best_cost, elapsed_seconds, heuristic_cost, jobs and ants.
// With --iterations 0 it runs until ctx ends (an optimal, zero-cost
// schedule found early is kept and reported until then). Ending ctx is a
// normal stop: Run returns nil.
func Run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("antfarm", flag.ContinueOnError)
	fs.SetOutput(stdout)
	def := DefaultConfig()
	jobs := fs.Int("jobs", 40, "number of jobs in the generated instance")
	tf := fs.Float64("tf", 0.6, "tardiness factor of the due dates (OR-Library: 0.2..1.0)")
	rdd := fs.Float64("rdd", 0.6, "relative range of the due dates (OR-Library: 0.2..1.0)")
	ants := fs.Int("ants", def.Ants, "ants per iteration")
	iterations := fs.Int("iterations", 0, "iterations to run; 0 runs until stopped")
	seed := fs.Uint64("seed", 1, "seed of the instance and of the colony")
	metricsFile := fs.String("metrics-file", os.Getenv(MetricsFileEnv), "JSON metrics file rewritten every --report (default $"+MetricsFileEnv+")")
	report := fs.Duration("report", time.Second, "how often to write metrics and a progress line")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("antfarm: unexpected arguments %q", fs.Args())
	}
	if *jobs < 1 || *jobs > MaxJobs {
		return fmt.Errorf("antfarm: --jobs %d must be 1..%d", *jobs, MaxJobs)
	}
	if *tf < 0 || *tf > 1 || *rdd < 0 || *rdd > 1 {
		return fmt.Errorf("antfarm: --tf and --rdd must be 0..1")
	}
	if *report <= 0 {
		return fmt.Errorf("antfarm: --report must be positive")
	}
	cfg := def
	cfg.Ants, cfg.Iterations, cfg.Seed = *ants, *iterations, *seed+1
	if err := cfg.Validate(); err != nil {
		return err
	}
	inst := Generate(*jobs, *tf, *rdd, *seed)

	out := &lockedWriter{w: stdout}
	p := &progress{jobs: *jobs, ants: *ants, path: *metricsFile, start: time.Now()}
	p.heuristic.Store(inst.Cost(inst.heuristicOrder()))
	fmt.Fprintf(out, "antfarm: %d jobs (tf %.2g, rdd %.2g, seed %d), %d ants, %s; heuristic (WMDD) cost %d\n",
		*jobs, *tf, *rdd, *seed, *ants, iterationsText(*iterations), p.heuristic.Load())

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // reporter: metrics file and a heartbeat line
		defer wg.Done()
		t := time.NewTicker(*report)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				p.writeMetrics(out)
				iter, best := p.iter.Load(), p.best.Load()
				fmt.Fprintf(out, "iteration %d: best cost %d (%.1f iterations/s)\n", iter, best, float64(iter)/time.Since(p.start).Seconds())
			}
		}
	}()

	var lastBest int64 = -1
	res, err := Solve(ctx, inst, cfg, func(iter int, best int64) {
		p.iter.Store(int64(iter))
		p.best.Store(best)
		if best != lastBest {
			lastBest = best
			fmt.Fprintf(out, "iteration %d: new best cost %d\n", iter, best)
		}
	})
	p.iter.Store(int64(res.Iterations))
	p.best.Store(res.Cost)
	if err == nil && *iterations == 0 {
		// Only a zero-cost schedule ends an unbounded run early: keep
		// reporting it until stopped, as a long-running workload should.
		fmt.Fprintf(out, "optimal schedule (cost 0) after %d iterations; idling until stopped\n", res.Iterations)
		<-ctx.Done()
	}
	close(stop)
	wg.Wait()
	p.writeMetrics(out)
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	fmt.Fprintf(out, "done: %d iterations in %s, best cost %d (heuristic %d), order %s\n",
		res.Iterations, time.Since(p.start).Round(time.Millisecond), res.Cost, res.HeuristicCost, orderText(res.Order))
	return nil
}

func iterationsText(n int) string {
	if n == 0 {
		return "until stopped"
	}
	return fmt.Sprintf("%d iterations", n)
}

func orderText(order []int) string {
	var b strings.Builder
	for i, j := range order {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprint(&b, j)
	}
	return b.String()
}

// progress is shared between the solver's callback and the reporter.
type progress struct {
	jobs, ants int
	path       string
	start      time.Time

	iter, best, heuristic atomic.Int64
	warned                bool // reporter only
}

// writeMetrics replaces the metrics file (temp file + rename, so the
// runner never reads half a file). A failure is reported once and the run
// goes on: metrics are a nicety, not the job.
func (p *progress) writeMetrics(out io.Writer) {
	if p.path == "" {
		return
	}
	m := map[string]float64{
		"iterations":      float64(p.iter.Load()),
		"best_cost":       float64(p.best.Load()),
		"elapsed_seconds": time.Since(p.start).Seconds(),
		"jobs":            float64(p.jobs),
		"ants":            float64(p.ants),
	}
	m["heuristic_cost"] = float64(p.heuristic.Load())
	b, _ := json.Marshal(m)
	if err := writeFileAtomic(p.path, b); err != nil && !p.warned {
		p.warned = true
		fmt.Fprintf(out, "antfarm: cannot write metrics: %v\n", err)
	}
}

func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
