package antfarm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"colony/test/retry"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestCost(t *testing.T) {
	in := &Instance{P: []int64{3, 2, 4}, W: []int64{1, 5, 2}, D: []int64{2, 3, 10}}
	cases := []struct {
		order []int
		want  int64
	}{
		// C = 3, 5, 9: job0 late 1 (×1), job1 late 2 (×5), job2 on time.
		{[]int{0, 1, 2}, 1 + 10},
		// C = 2, 5, 9: job1 on time, job0 late 3, job2 on time.
		{[]int{1, 0, 2}, 3},
		// C = 4, 7, 9: job2 on time, job0 late 5, job1 late 6 (×5).
		{[]int{2, 0, 1}, 5 + 30},
	}
	for _, c := range cases {
		if got := in.Cost(c.order); got != c.want {
			t.Errorf("Cost(%v) = %d, want %d", c.order, got, c.want)
		}
	}
	if got := (&Instance{P: []int64{5}, W: []int64{9}, D: []int64{5}}).Cost([]int{0}); got != 0 {
		t.Errorf("a job finishing exactly on time costs %d", got)
	}
}

func TestGenerate(t *testing.T) {
	a, b := Generate(50, 0.6, 0.4, 7), Generate(50, 0.6, 0.4, 7)
	if !slices.Equal(a.P, b.P) || !slices.Equal(a.W, b.W) || !slices.Equal(a.D, b.D) {
		t.Fatal("same seed, different instances")
	}
	if c := Generate(50, 0.6, 0.4, 8); slices.Equal(a.P, c.P) {
		t.Fatal("different seeds, same instance")
	}
	var total int64
	for j := range a.N() {
		if a.P[j] < 1 || a.P[j] > 100 || a.W[j] < 1 || a.W[j] > 10 {
			t.Fatalf("job %d: p=%d w=%d out of the OR-Library ranges", j, a.P[j], a.W[j])
		}
		total += a.P[j]
	}
	lo, hi := int64(float64(total)*(1-0.6-0.2)), int64(float64(total)*(1-0.6+0.2))
	for j, d := range a.D {
		if d < lo || d > hi {
			t.Fatalf("due date %d of job %d outside [%d, %d]", d, j, lo, hi)
		}
	}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	if z := Generate(20, 1, 1, 1); slices.Min(z.D) < 0 {
		t.Fatal("negative due date")
	}
}

// bruteForce returns the optimal cost by trying every permutation.
func bruteForce(in *Instance) int64 {
	order := make([]int, in.N())
	for i := range order {
		order[i] = i
	}
	best := in.Cost(order)
	var permute func(k int)
	permute = func(k int) {
		if k == len(order) {
			best = min(best, in.Cost(order))
			return
		}
		for i := k; i < len(order); i++ {
			order[k], order[i] = order[i], order[k]
			permute(k + 1)
			order[k], order[i] = order[i], order[k]
		}
	}
	permute(0)
	return best
}

func TestSolveFindsTheOptimumOnSmallInstances(t *testing.T) {
	ctx := testCtx(t)
	cfg := DefaultConfig()
	cfg.Iterations = 200
	found := 0
	for _, n := range []int{5, 7, 8} {
		for _, tf := range []float64{0.2, 0.6, 1.0} {
			for _, rdd := range []float64{0.2, 0.6, 1.0} {
				for seed := uint64(1); seed <= 2; seed++ {
					in := Generate(n, tf, rdd, seed)
					want := bruteForce(in)
					res, err := Solve(ctx, in, cfg, nil)
					if err != nil {
						t.Fatal(err)
					}
					if res.Cost != want || in.Cost(res.Order) != res.Cost || !isPermutation(res.Order, n) {
						t.Errorf("n=%d tf=%v rdd=%v seed=%d: cost %d (order %v), optimum %d", n, tf, rdd, seed, res.Cost, res.Order, want)
					}
					if res.Cost > res.HeuristicCost {
						t.Errorf("worse than the heuristic it starts from")
					}
					if want > 0 {
						found++
					}
				}
			}
		}
	}
	if found < 20 {
		t.Fatalf("only %d instances with a non-zero optimum: the test is too easy", found)
	}
}

func isPermutation(order []int, n int) bool {
	s := slices.Sorted(slices.Values(order))
	for i, v := range s {
		if v != i {
			return false
		}
	}
	return len(s) == n
}

func TestSolveIsDeterministic(t *testing.T) {
	ctx := testCtx(t)
	in := Generate(40, 0.6, 0.6, 3)
	cfg := DefaultConfig()
	cfg.Iterations, cfg.Seed = 30, 99
	var trace1, trace2 []int64
	r1, err1 := Solve(ctx, in, cfg, func(_ int, b int64) { trace1 = append(trace1, b) })
	r2, err2 := Solve(ctx, in, cfg, func(_ int, b int64) { trace2 = append(trace2, b) })
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if r1.Cost != r2.Cost || !slices.Equal(r1.Order, r2.Order) || !slices.Equal(trace1, trace2) || len(trace1) != 30 {
		t.Fatalf("two runs with one seed differ: %d vs %d", r1.Cost, r2.Cost)
	}
	for i := 1; i < len(trace1); i++ {
		if trace1[i] > trace1[i-1] {
			t.Fatalf("best cost went up: %v", trace1)
		}
	}
	if r1.Cost >= r1.HeuristicCost {
		t.Logf("no gain over the heuristic on this instance (%d)", r1.Cost)
	}
}

func TestLocalSearchMatchesFullEvaluation(t *testing.T) {
	in := Generate(30, 0.8, 0.4, 5)
	s := newSolver(in, DefaultConfig())
	order := make([]int, in.N())
	for i := range order {
		order[i] = i
	}
	before := in.Cost(order)
	got := s.localSearch(order)
	if got != in.Cost(order) || got > before || !isPermutation(order, in.N()) {
		t.Fatalf("local search returned %d, order costs %d (was %d)", got, in.Cost(order), before)
	}
	// A local optimum: no single interchange improves it.
	for a := range order {
		for b := a + 1; b < len(order); b++ {
			order[a], order[b] = order[b], order[a]
			if c := in.Cost(order); c < got {
				t.Fatalf("swap %d,%d improves %d to %d", a, b, got, c)
			}
			order[a], order[b] = order[b], order[a]
		}
	}
}

func TestSolveStopsWithTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(testCtx(t))
	in := Generate(60, 0.6, 0.6, 1)
	res, err := Solve(ctx, in, DefaultConfig(), func(iter int, _ int64) {
		if iter == 3 {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || res.Iterations != 3 || in.Cost(res.Order) != res.Cost {
		t.Fatalf("Solve = %d iterations, %v", res.Iterations, err)
	}
}

func TestValidation(t *testing.T) {
	bad := []*Instance{
		{},
		{P: []int64{1}, W: []int64{1}},
		{P: []int64{0}, W: []int64{1}, D: []int64{1}},
		{P: []int64{1}, W: []int64{-1}, D: []int64{1}},
	}
	for _, in := range bad {
		if _, err := Solve(testCtx(t), in, DefaultConfig(), nil); err == nil {
			t.Errorf("instance %+v accepted", in)
		}
	}
	cfg := DefaultConfig()
	cfg.Ants, cfg.Q0 = 0, 2
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "ants") || !strings.Contains(err.Error(), "q0") {
		t.Fatalf("Validate = %v", err)
	}
}

func TestRunWritesProgressAndMetrics(t *testing.T) {
	dir := t.TempDir()
	metrics := filepath.Join(dir, "metrics.json")
	var out bytes.Buffer
	err := Run(testCtx(t), []string{"--jobs", "20", "--iterations", "50", "--seed", "4", "--metrics-file", metrics}, &out)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "antfarm: 20 jobs") || !strings.Contains(out.String(), "done: 50 iterations") {
		t.Fatalf("output:\n%s", out.String())
	}
	b, err := os.ReadFile(metrics)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]float64
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("metrics %s: %v", b, err)
	}
	if m["iterations"] != 50 || m["jobs"] != 20 || m["best_cost"] > m["heuristic_cost"] || m["elapsed_seconds"] <= 0 {
		t.Fatalf("metrics %v", m)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
}

func TestRunForeverReportsUntilStopped(t *testing.T) {
	metrics := filepath.Join(t.TempDir(), "metrics.json")
	t.Setenv(MetricsFileEnv, metrics) // the default of --metrics-file
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- Run(ctx, []string{"--jobs", "60", "--report", "20ms"}, &out) }()
	retry.Until(t, 30*time.Second, func() error {
		b, err := os.ReadFile(metrics)
		if err != nil {
			return err
		}
		var m map[string]float64
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		if m["iterations"] < 2 {
			return fmt.Errorf("metrics %v", m)
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if err != nil || !strings.Contains(out.String(), "done: ") {
			t.Fatalf("Run after stop: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--jobs", "0"}, {"--ants", "0"}, {"--tf", "2"}, {"--nope"}, {"extra"}} {
		if err := Run(testCtx(t), args, &bytes.Buffer{}); err == nil {
			t.Errorf("Run(%v) accepted", args)
		}
	}
}
