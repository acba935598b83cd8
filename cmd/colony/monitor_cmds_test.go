package main

import (
	"strings"
	"testing"
	"time"

	"colony/agent"
	"colony/scaling/monitor"
)

func TestRenderTopAndPlan(t *testing.T) {
	s := &monitor.Summary{Time: time.Now().UnixMilli(), Nodes: map[string]uint64{"alive": 2}, Workloads: map[string]uint64{"running": 3}}
	s.Observe("cpu_percent", 10, monitor.DimZone("eu-1"))
	s.Observe("cpu_percent", 95, monitor.DimZone("eu-2"))
	s.Alarms = []monitor.Alarm{{Kind: monitor.KindNodeDown, Subject: "n3", Since: time.Now().UnixMilli()}}
	s.Busiest = []monitor.NodeLoad{{Node: "web-7", CPU: 97.25, Mem: 41}, {Node: "db-1", CPU: 12.5, Mem: 88}}
	v := agent.ClusterMetrics{MetricsView: s.View(""), Root: "n1", AgeSeconds: 1.5, FreshnessBoundSeconds: 15}
	var b strings.Builder
	renderTop(&b, &v, "zone")
	for _, want := range []string{"root n1", "2 alive", "3 running", "zone:eu-2", "95.00", "node_down", "Busiest nodes", "web-7    97.2    41.0", "db-1     12.5    88.0"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("top lacks %q:\n%s", want, b.String())
		}
	}

	ms := []monitor.Member{}
	for _, id := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		ms = append(ms, monitor.Member{ID: id, Alive: true})
	}
	cfg := monitor.DefaultConfig()
	cfg.GroupSize, cfg.TargetGroupSize = 3, 2
	p, err := monitor.ComputePlan(ms, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.Reset()
	renderPlan(&b, p, map[string]string{"a": "node-a"})
	out := b.String()
	if !strings.Contains(out, "(root, level") || strings.Count(out, "\n") < 3 {
		t.Errorf("plan:\n%s", out)
	}
	for _, id := range []string{"b", "c", "d", "e", "f", "g"} {
		if !strings.Contains(out, " "+id) && !strings.HasPrefix(out, id) && !strings.Contains(out, "\n"+id) {
			t.Errorf("plan lacks %s:\n%s", id, out)
		}
	}
	t.Log("\n" + out)
}
