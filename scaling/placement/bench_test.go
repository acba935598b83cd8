package placement

import "testing"

// BenchmarkPlace100kOn10k places 100,000 instances of four deployments
// (constraints, preferences, spread over 10 zones, distinct_hosts) on
// 10,000 synthetic nodes from scratch.
func BenchmarkPlace100kOn10k(b *testing.B) {
	in := Input{Nodes: synthNodes(10000, 10, 1), Deployments: benchSpecs()}
	placed := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res := Plan(in)
		placed = len(res.Place)
		if len(res.Pending) > 0 {
			b.Fatalf("pending: %+v", res.Pending)
		}
	}
	b.ReportMetric(float64(placed)*float64(b.N)/b.Elapsed().Seconds(), "placements/s")
	b.ReportMetric(float64(placed), "placements/op")
}

// BenchmarkReplanSteady re-plans the same 100,000 placements when nothing
// changed: the leader does this on every reconcile tick.
func BenchmarkReplanSteady(b *testing.B) {
	in := Input{Nodes: synthNodes(10000, 10, 1), Deployments: benchSpecs()}
	in.Placements = Plan(in).Place
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res := Plan(in)
		if !res.Empty() {
			b.Fatalf("steady re-plan changed %d/%d", len(res.Place), len(res.Stop))
		}
	}
}

// BenchmarkReplaceOneNodeDown re-plans after one node of 10,000 went down.
func BenchmarkReplaceOneNodeDown(b *testing.B) {
	in := Input{Nodes: synthNodes(10000, 10, 1), Deployments: benchSpecs()}
	in.Placements = Plan(in).Place
	in.Nodes[1234].Status = StatusDown
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res := Plan(in)
		if len(res.Stop) == 0 || len(res.Place) != len(res.Stop) {
			b.Fatalf("stop %d place %d", len(res.Stop), len(res.Place))
		}
	}
}

// BenchmarkPlaceSpreadRacks spreads 20,000 instances over 200 rack values
// on 10,000 nodes: the per-instance bucket bounds cost O(values).
func BenchmarkPlaceSpreadRacks(b *testing.B) {
	in := Input{Nodes: synthNodes(10000, 10, 1), Deployments: []*Spec{{
		Name: "racked", Count: 20000, Command: Command{Argv: []string{"/bin/true"}},
		Resources: ResourceAsk{CPU: "250m", Memory: "256MiB"},
		Spread:    &Spread{Attribute: "label.rack"},
	}}}
	placed := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res := Plan(in)
		placed = len(res.Place)
	}
	b.ReportMetric(float64(placed)*float64(b.N)/b.Elapsed().Seconds(), "placements/s")
}
