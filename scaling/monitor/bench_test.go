package monitor

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
)

// groupSummaries makes one summary per node of a 32-node group, each with
// the per-node metric set the agent samples.
func groupSummaries(n int) []*Summary {
	rng := rand.New(rand.NewPCG(1, 1))
	metrics := []string{"cpu_percent", "mem_used_bytes", "load1", "disk_used_percent", "net_rx_bytes", "net_tx_bytes", "gossip_health", "members_seen"}
	out := make([]*Summary, n)
	for i := range out {
		s := &Summary{Origin: fmt.Sprintf("node-%d", i), Seq: 1, Time: 1_700_000_000_000, Nodes: map[string]uint64{"alive": 1}}
		for _, m := range metrics {
			s.Observe(m, rng.Float64()*100, DimZone(fmt.Sprint(i%3)), DimDeployment("web"))
		}
		out[i] = s
	}
	return out
}

func BenchmarkMergeGroup32(b *testing.B) {
	sums := groupSummaries(32)
	b.ReportAllocs()
	for b.Loop() {
		acc := &Summary{}
		for _, s := range sums {
			acc = Merge(acc, s)
		}
	}
}

func BenchmarkDecodeSummary(b *testing.B) {
	sums := groupSummaries(32)
	acc := &Summary{}
	for _, s := range sums {
		acc = Merge(acc, s)
	}
	acc.Origin = "agg"
	data, err := EncodeSummary(acc, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(data)), "bytes/summary")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeSummary(data, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func TestView(t *testing.T) {
	acc := &Summary{}
	for _, s := range groupSummaries(32) {
		acc = Merge(acc, s)
	}
	v := acc.View("zone:")
	if len(v.Metrics["cpu_percent"]) != 3 || v.Metrics["cpu_percent"]["zone:1"].P99 == nil {
		t.Fatalf("view %+v", v.Metrics["cpu_percent"])
	}
	if _, err := json.Marshal(acc.View("")); err != nil {
		t.Fatal(err)
	}
	if all := acc.View(DimAll); len(all.Metrics["load1"]) != 1 || all.Nodes["alive"] != 32 {
		t.Fatalf("whole-cluster view %+v", all)
	}
}

// BenchmarkFollowPlan1000 is what every node does with each committed
// plan of a 1,000-node cluster: decode it, check it, and index it.
func BenchmarkFollowPlan1000(b *testing.B) {
	p := mustPlan(b, synthetic(1000, 3, 5), DefaultConfig())
	data, err := json.Marshal(p)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(data)), "bytes/plan")
	b.ReportAllocs()
	for b.Loop() {
		var q Plan
		if err := json.Unmarshal(data, &q); err != nil {
			b.Fatal(err)
		}
		if err := q.Check(); err != nil {
			b.Fatal(err)
		}
		q.Parent("x")
	}
}
