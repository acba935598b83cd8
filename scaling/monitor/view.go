package monitor

import (
	"strings"
	"time"
)

// StatView is one aggregate as the HTTP API shows it.
type StatView struct {
	Count uint64  `json:"count"`
	Sum   float64 `json:"sum"`
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
	// Quantiles are absent when the sketch was dropped to fit the size
	// limit.
	P50 *float64 `json:"p50,omitempty"`
	P90 *float64 `json:"p90,omitempty"`
	P99 *float64 `json:"p99,omitempty"`
}

// MetricsView is the JSON body of GET /v1/cluster/metrics: the root's (or
// any aggregator's) merged summary, broken down like the query asks.
type MetricsView struct {
	Time      time.Time         `json:"time"`
	Epoch     uint64            `json:"plan_version"`
	Truncated bool              `json:"truncated,omitempty"`
	Nodes     map[string]uint64 `json:"nodes,omitempty"`
	Workloads map[string]uint64 `json:"workloads,omitempty"`
	// Metrics maps metric name → dimension key ("all", "zone:eu-1",
	// "label:rack=r1", "deployment:web") → statistics.
	Metrics map[string]map[string]StatView `json:"metrics"`
	Alarms  []Alarm                        `json:"alarms,omitempty"`
	// Busiest lists the busiest nodes by CPU, busiest first.
	Busiest []NodeLoad `json:"busiest,omitempty"`
}

// View renders s for the API. dimPrefix filters dimensions: "" for all,
// DimAll for the whole cluster only, or a kind such as "zone:",
// "label:", "deployment:" (or a full key such as "zone:eu-1").
func (s *Summary) View(dimPrefix string) MetricsView {
	v := MetricsView{
		Time: time.UnixMilli(s.Time).UTC(), Epoch: s.Epoch, Truncated: s.Truncated,
		Nodes: s.Nodes, Workloads: s.Workloads, Alarms: s.Alarms, Busiest: s.Busiest,
		Metrics: make(map[string]map[string]StatView),
	}
	for name, dims := range s.Metrics {
		for d, a := range dims {
			if !strings.HasPrefix(d, dimPrefix) {
				continue
			}
			sv := StatView{Count: a.Count, Sum: a.Sum, Min: a.Min, Max: a.Max, Mean: a.Mean()}
			for q, dst := range map[float64]**float64{0.5: &sv.P50, 0.9: &sv.P90, 0.99: &sv.P99} {
				if x, ok := a.Quantile(q); ok {
					*dst = &x
				}
			}
			if v.Metrics[name] == nil {
				v.Metrics[name] = make(map[string]StatView)
			}
			v.Metrics[name][d] = sv
		}
	}
	return v
}
