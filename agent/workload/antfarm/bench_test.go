package antfarm

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkIteration measures colony iterations (10 ants, each schedule
// polished by local search) on OR-Library-style instances.
func BenchmarkIteration(b *testing.B) {
	for _, n := range []int{40, 100} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			in := Generate(n, 0.6, 0.6, 1)
			cfg := DefaultConfig()
			cfg.Iterations = b.N
			b.ReportAllocs()
			b.ResetTimer()
			res, err := Solve(context.Background(), in, cfg, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(res.Iterations)/b.Elapsed().Seconds(), "iter/s")
			b.ReportMetric(float64(res.Cost), "best_cost")
		})
	}
}

// BenchmarkSolveQuality runs 1000 iterations on a 40-job instance and
// reports the best cost against the WMDD heuristic's (lower is better).
func BenchmarkSolveQuality(b *testing.B) {
	in := Generate(40, 0.6, 0.6, 1)
	cfg := DefaultConfig()
	cfg.Iterations = 1000
	for b.Loop() {
		res, err := Solve(context.Background(), in, cfg, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(res.Cost), "best_cost")
		b.ReportMetric(float64(res.HeuristicCost), "wmdd_cost")
	}
}
