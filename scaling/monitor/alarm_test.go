package monitor

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseRule(t *testing.T) {
	r, err := ParseRule("cpu_percent  p99 > 90 for 2m")
	if err != nil {
		t.Fatal(err)
	}
	want := Rule{Text: "cpu_percent p99 > 90 for 2m", Metric: "cpu_percent", Stat: "p99", Op: OpGT, Threshold: 90, For: 2 * time.Minute, Scope: DimAll}
	if r != want {
		t.Fatalf("got %+v", r)
	}
	r, err = ParseRule("mem_used_percent max >= 95.5 in zone:* for 30s")
	if err != nil || r.Scope != "zone:*" || r.For != 30*time.Second || r.Op != OpGE || r.Threshold != 95.5 {
		t.Fatalf("got %+v, %v", r, err)
	}
	if _, err := ParseRule("disk_free_bytes p99.9 < 1e9 in deployment:web"); err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{
		"cpu_percent p99 >":         "want",
		"CPU p99 > 1":               "metric",
		"cpu p101 > 1":              "stat",
		"cpu avg > 1":               "stat",
		"cpu p99 => 1":              "operator",
		"cpu p99 > ninety":          "threshold",
		"cpu p99 > NaN":             "threshold",
		"cpu p99 > 1 for":           "needs a value",
		"cpu p99 > 1 for soon":      "duration",
		"cpu p99 > 1 for -1m":       "duration",
		"cpu p99 > 1 in colour:red": "scope",
		"cpu p99 > 1 during 2m":     "unexpected",
		"cpu p99 > 1 " + strings.Repeat("for 1m ", 20): "characters",
	}
	for text, frag := range bad {
		_, err := ParseRule(text)
		if !errors.Is(err, ErrBadRule) || !strings.Contains(err.Error(), frag) {
			t.Errorf("%q: error %v, want mention of %q", text, err, frag)
		}
	}
}

func snapshot(metric string, perDim map[string][]float64) *Summary {
	s := &Summary{}
	for d, vals := range perDim {
		for _, v := range vals {
			if d == DimAll {
				s.Observe(metric, v)
			} else {
				s.Observe(metric, v, d)
			}
		}
	}
	return s
}

func TestEvaluatorFor(t *testing.T) {
	r, _ := ParseRule("cpu_percent p99 > 90 for 2m")
	e := NewEvaluator([]Rule{r})
	t0 := time.Unix(1_700_000_000, 0)
	hot := snapshot("cpu_percent", map[string][]float64{DimAll: {50, 95, 99}})
	cool := snapshot("cpu_percent", map[string][]float64{DimAll: {50, 60, 70}})
	steps := []struct {
		at     time.Duration
		snap   *Summary
		raised int
		clear  int
	}{
		{0, hot, 0, 0},                             // pending starts
		{time.Minute, hot, 0, 0},                   // still pending
		{time.Minute + 30*time.Second, cool, 0, 0}, // resets pending
		{2 * time.Minute, hot, 0, 0},               // pending again from 2m
		{4 * time.Minute, hot, 1, 0},               // held 2m: raised
		{5 * time.Minute, hot, 0, 0},               // raised once only
		{6 * time.Minute, &Summary{}, 0, 1},        // metric gone: cleared
		{7 * time.Minute, hot, 0, 0},
	}
	for i, st := range steps {
		tr := e.Evaluate(st.snap, t0.Add(st.at))
		raised, cleared := 0, 0
		for _, x := range tr {
			if x.Raised {
				raised++
				if x.Alarm.Since != t0.Add(2*time.Minute).UnixMilli() || x.Value < 90 {
					t.Fatalf("step %d: raised %+v", i, x)
				}
			} else {
				cleared++
			}
		}
		if raised != st.raised || cleared != st.clear {
			t.Fatalf("step %d at %v: raised %d cleared %d, want %d %d", i, st.at, raised, cleared, st.raised, st.clear)
		}
	}
}

func TestEvaluatorWildcardScope(t *testing.T) {
	r, _ := ParseRule("mem_used_percent max >= 95 in zone:*")
	e := NewEvaluator([]Rule{r})
	now := time.Unix(1_700_000_000, 0)
	s := snapshot("mem_used_percent", map[string][]float64{DimZone("a"): {10, 96}, DimZone("b"): {50}})
	tr := e.Evaluate(s, now)
	if len(tr) != 1 || !tr[0].Raised || tr[0].Alarm.Subject != "mem_used_percent max >= 95 in zone:* [zone:a]" {
		t.Fatalf("got %+v", tr)
	}
	if len(e.Active()) != 1 {
		t.Fatal("active list")
	}
	// The alarm travels in a summary.
	sum := &Summary{Origin: "n", Alarms: e.Active()}
	if _, err := EncodeSummary(sum, 0); err != nil {
		t.Fatal(err)
	}
}

func TestHealth(t *testing.T) {
	cfg := DefaultConfig() // grace 30s, lost after 3×5s, crash loop 5 in 10m
	h, err := NewHealth(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_700_000_000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	kinds := func(tr []Transition) (up, down []string) {
		for _, x := range tr {
			if x.Raised {
				up = append(up, x.Alarm.Kind+":"+x.Alarm.Subject)
			} else {
				down = append(down, x.Alarm.Kind+":"+x.Alarm.Subject)
			}
		}
		return
	}
	h.ExpectAggregators([]string{"agg-1", "agg-2"}, at(0))
	h.NodeStatus("n1", false, at(0))
	h.NodeStatus("n2", false, at(0))
	h.Restart("web-1", at(0))
	h.NodeStatus("n2", true, at(10*time.Second)) // back within grace
	h.Heard("agg-1", at(10*time.Second))
	h.Restart("web-1", at(10*time.Second))
	if up, down := kinds(h.Evaluate(at(12 * time.Second))); len(up)+len(down) != 0 {
		t.Fatalf("at 12s: up %v down %v", up, down)
	}
	// agg-2 silent for more than 3 intervals (15s).
	if up, _ := kinds(h.Evaluate(at(16 * time.Second))); strings.Join(up, ",") != "aggregator_lost:agg-2" {
		t.Fatalf("at 16s: up %v", up)
	}
	for m := 1; m <= 3; m++ {
		h.Restart("web-1", at(time.Duration(m)*time.Minute))
		h.Heard("agg-1", at(time.Duration(m)*time.Minute))
	}
	// Five restarts within 10m; n1 down for more than 30s.
	up, down := kinds(h.Evaluate(at(3 * time.Minute)))
	if strings.Join(up, ",") != "crash_loop:web-1,node_down:n1" || len(down) != 0 {
		t.Fatalf("at 3m: up %v down %v", up, down)
	}
	// agg-1 goes silent too.
	up, _ = kinds(h.Evaluate(at(5 * time.Minute)))
	if strings.Join(up, ",") != "aggregator_lost:agg-1" {
		t.Fatalf("at 5m: up %v", up)
	}
	h.Heard("agg-1", at(5*time.Minute+time.Second))
	h.NodeStatus("n1", true, at(5*time.Minute+time.Second))
	h.ExpectAggregators([]string{"agg-1"}, at(5*time.Minute+time.Second)) // agg-2 left the plan
	up, down = kinds(h.Evaluate(at(5*time.Minute + 2*time.Second)))
	wantDown := []string{"aggregator_lost:agg-1", "aggregator_lost:agg-2", "node_down:n1"}
	if len(up) != 0 || strings.Join(down, ",") != strings.Join(wantDown, ",") {
		t.Fatalf("at 5m2s: up %v down %v", up, down)
	}
	// Restarts age out of the window: 4 left after 10m10s.
	h.Heard("agg-1", at(10*time.Minute+10*time.Second))
	up, down = kinds(h.Evaluate(at(10*time.Minute + 11*time.Second)))
	if len(up) != 0 || len(down) != 1 || down[0] != "crash_loop:web-1" {
		t.Fatalf("at 10m11s: up %v down %v", up, down)
	}
	if len(h.Active()) != 0 {
		t.Fatalf("still active: %v", h.Active())
	}
}

// TestHealthForgetNodes: a node that stops being the root drops its
// node_down alarms at once instead of pushing them up for ever.
func TestHealthForgetNodes(t *testing.T) {
	cfg := DefaultConfig()
	h, _ := NewHealth(cfg)
	t0 := time.Unix(1_700_000_000, 0)
	h.NodeStatus("n1", false, t0)
	h.Restart("web-1", t0)
	if tr := h.Evaluate(t0.Add(time.Minute)); len(tr) != 1 || tr[0].Alarm.Kind != KindNodeDown {
		t.Fatalf("raised %+v", tr)
	}
	h.ForgetNodes()
	tr := h.Evaluate(t0.Add(time.Minute + time.Second))
	if len(tr) != 1 || tr[0].Raised || tr[0].Alarm.Subject != "n1" || len(h.Active()) != 0 {
		t.Fatalf("after ForgetNodes: %+v, active %v", tr, h.Active())
	}
}
