package monitor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestSketchAccuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	dists := map[string]func() float64{
		"uniform 0-100":   func() float64 { return rng.Float64() * 100 },
		"exponential":     func() float64 { return rng.ExpFloat64() * 1e6 },
		"lognormal":       func() float64 { return math.Exp(rng.NormFloat64()*2 + 10) },
		"normal signed":   func() float64 { return rng.NormFloat64() * 50 },
		"constant 42":     func() float64 { return 42 },
		"bimodal 1 / 1e9": func() float64 { return []float64{1, 1e9}[rng.IntN(2)] },
	}
	for name, gen := range dists {
		t.Run(name, func(t *testing.T) {
			vals := make([]float64, 20000)
			// Spread the values over 50 "nodes" and merge, as the tree does.
			parts := make([]Agg, 50)
			for i := range vals {
				vals[i] = gen()
				parts[i%50].Add(vals[i])
			}
			var all Agg
			for i := range parts {
				all.Merge(&parts[i])
			}
			slices.Sort(vals)
			for _, q := range []float64{0.5, 0.9, 0.99} {
				want := vals[int(q*float64(len(vals)-1))]
				got, ok := all.Quantile(q)
				if !ok {
					t.Fatal("no quantile")
				}
				// Relative accuracy, plus a hair for values near zero
				// that fall in the zero bucket.
				if math.Abs(got-want) > SketchRelativeAccuracy*math.Abs(want)+1e-6 {
					t.Errorf("p%v = %v, exact %v (error %.3f%%)", q*100, got, want, 100*math.Abs(got-want)/math.Abs(want))
				}
			}
			if all.Count != uint64(len(vals)) || all.Sketch.Len() > MaxSketchBuckets {
				t.Fatalf("count %d buckets %d", all.Count, all.Sketch.Len())
			}
		})
	}
}

func TestSketchCollapseKeepsHighQuantiles(t *testing.T) {
	// Values spanning 1e-6..1e12 overflow the bucket budget; the low end
	// folds together but p90/p99 stay within accuracy.
	var a Agg
	var vals []float64
	for i := range 100000 {
		v := math.Pow(10, -6+18*float64(i)/100000)
		vals = append(vals, v)
		a.Add(v)
	}
	if a.Sketch.Len() != MaxSketchBuckets {
		t.Fatalf("%d buckets", a.Sketch.Len())
	}
	for _, q := range []float64{0.9, 0.99} {
		want := vals[int(q*float64(len(vals)-1))]
		got, _ := a.Quantile(q)
		if math.Abs(got-want) > SketchRelativeAccuracy*want {
			t.Errorf("p%v = %v, exact %v", q*100, got, want)
		}
	}
}

// randomSummary makes summaries that overlap in names and dimensions and
// sometimes exceed the limits once merged.
func randomSummary(rng *rand.Rand) *Summary {
	s := &Summary{
		Epoch: rng.Uint64N(5), Time: rng.Int64N(1e12),
		Nodes:     map[string]uint64{"alive": rng.Uint64N(100), fmt.Sprintf("s%d", rng.IntN(12)): 1},
		Workloads: map[string]uint64{fmt.Sprintf("w%d", rng.IntN(12)): rng.Uint64N(5)},
	}
	for range rng.IntN(6) {
		metric := fmt.Sprintf("m%d", rng.IntN(40))
		for range rng.IntN(30) + 1 {
			dim := DimZone(fmt.Sprintf("z%d", rng.IntN(40)))
			if rng.IntN(3) == 0 {
				dim = DimLabel("k", fmt.Sprint(rng.IntN(50)))
			}
			v := rng.NormFloat64() * math.Pow(10, float64(rng.IntN(8)))
			s.Observe(metric, v, dim)
		}
	}
	if rng.IntN(4) == 0 {
		// Summaries that lost their sketches still merge.
		for _, dims := range s.Metrics {
			for _, a := range dims {
				a.Sketch = Sketch{}
			}
		}
	}
	for range rng.IntN(20) {
		s.Alarms = mergeAlarms(s.Alarms, []Alarm{{Kind: KindNodeDown, Subject: fmt.Sprintf("n%d", rng.IntN(40)), Since: rng.Int64N(1000)}})
	}
	for range rng.IntN(8) {
		// Node names unique across summaries, as the plan makes them.
		l := NodeLoad{Node: fmt.Sprintf("n%x", rng.Uint64()), CPU: float64(rng.IntN(10001)) / 100, Mem: float64(rng.IntN(4)) * 25}
		s.Busiest = mergeBusiest(s.Busiest, []NodeLoad{l})
	}
	return s
}

// sameSummary compares exactly except sums, which floating point only
// makes associative up to rounding.
func sameSummary(a, b *Summary) error {
	if a.Epoch != b.Epoch || a.Time != b.Time || a.Truncated != b.Truncated {
		return fmt.Errorf("header differs: %+v vs %+v", a, b)
	}
	if !mapsEqual(a.Nodes, b.Nodes) || !mapsEqual(a.Workloads, b.Workloads) {
		return fmt.Errorf("counts differ")
	}
	if !slices.Equal(a.Alarms, b.Alarms) {
		return fmt.Errorf("alarms differ")
	}
	if !slices.Equal(a.Busiest, b.Busiest) {
		return fmt.Errorf("busiest nodes differ: %v vs %v", a.Busiest, b.Busiest)
	}
	if len(a.Metrics) != len(b.Metrics) {
		return fmt.Errorf("metric sets differ")
	}
	for name, dims := range a.Metrics {
		if len(dims) != len(b.Metrics[name]) {
			return fmt.Errorf("dimensions of %s differ", name)
		}
		for d, x := range dims {
			y := b.Metrics[name][d]
			if y == nil || x.Count != y.Count || x.Min != y.Min || x.Max != y.Max || !x.Sketch.equal(&y.Sketch) {
				return fmt.Errorf("%s %s differs", name, d)
			}
			if math.Abs(x.Sum-y.Sum) > 1e-9*max(1, math.Abs(x.Sum)) {
				return fmt.Errorf("%s %s sum %v vs %v", name, d, x.Sum, y.Sum)
			}
		}
	}
	return nil
}

func mapsEqual(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestMergeProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	n := 300
	truncated := 0
	for i := range n {
		a, b, c := randomSummary(rng), randomSummary(rng), randomSummary(rng)
		if err := sameSummary(Merge(a, b), Merge(b, a)); err != nil {
			t.Fatalf("case %d: not commutative: %v", i, err)
		}
		l, r := Merge(Merge(a, b), c), Merge(a, Merge(b, c))
		if err := sameSummary(l, r); err != nil {
			t.Fatalf("case %d: not associative: %v", i, err)
		}
		if err := l.Validate(); err != nil {
			t.Fatalf("case %d: merged summary invalid: %v", i, err)
		}
		if l.Truncated {
			truncated++
		}
	}
	if truncated == 0 {
		t.Fatal("no case exercised the limits")
	}
	// Merge must not alias its inputs.
	a, b := randomSummary(rng), randomSummary(rng)
	before, _ := EncodeSummary(a, 1<<20)
	m := Merge(a, b)
	for _, dims := range m.Metrics {
		for _, x := range dims {
			x.Add(1e6)
		}
	}
	if after, _ := EncodeSummary(a, 1<<20); string(before) != string(after) {
		t.Fatal("Merge result aliases its input")
	}
}

func TestObserveAndStats(t *testing.T) {
	var s Summary
	for i := 1; i <= 100; i++ {
		s.Observe("cpu_percent", float64(i), DimZone("eu-1"), DimDeployment("web"))
	}
	if s.Observe("cpu_percent", math.NaN()) || s.Observe("Bad-Name", 1) || s.Observe("x", 1, "nope") {
		t.Fatal("bad sample accepted")
	}
	a, ok := s.Metric("cpu_percent", DimZone("eu-1"))
	if !ok || a.Count != 100 || a.Min != 1 || a.Max != 100 || a.Mean() != 50.5 {
		t.Fatalf("agg %+v", a)
	}
	for stat, want := range map[string]float64{"count": 100, "sum": 5050, "min": 1, "max": 100, "mean": 50.5, "p50": 50, "p99": 99} {
		got, ok := a.Stat(stat)
		if !ok || math.Abs(got-want) > 0.02*want+1e-9 {
			t.Errorf("%s = %v want %v", stat, got, want)
		}
	}
}
