package scale

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"runtime/metrics"
	"strings"
	"testing"
	"time"
)

func TestHistDelta(t *testing.T) {
	b := []float64{0, 0.001, 0.01, 0.1, 1, math.Inf(1)}
	prev := &metrics.Float64Histogram{Buckets: b, Counts: []uint64{10, 5, 0, 0, 0}}
	cur := &metrics.Float64Histogram{Buckets: b, Counts: []uint64{108, 5, 1, 0, 1}}
	// New this interval: 98 under 1 ms, 1 in [10 ms, 100 ms), 1 at 1 s or more.
	q, m := histDelta(prev, cur, 0.99)
	if q != 0.1 || m != 1 {
		t.Errorf("p99, max = %v, %v; want 0.1, 1 (the open bucket reported by its lower bound)", q, m)
	}
	if q, m := histDelta(cur, cur, 0.99); q != 0 || m != 0 {
		t.Errorf("nothing new: %v, %v; want 0, 0", q, m)
	}
	if q, m := histDelta(nil, cur, 0.5); q != 0.001 || m != 1 {
		t.Errorf("from nothing: %v, %v; want 0.001, 1", q, m)
	}
}

// TestRuntimeWatch: the watch writes a row a second, and a stall trace
// when the ticker wakes late by StallTrace (here: at once, as 0 makes
// any lateness a stall).
func TestRuntimeWatch(t *testing.T) {
	dir := t.TempDir()
	o := &Options{Out: dir, FlightRecorder: true, StallTrace: 0}
	stop := startRuntimeWatch(context.Background(), o, "test", 1)
	csv := filepath.Join(dir, "runtime-test-1.csv")
	deadline := time.Now().Add(30 * time.Second)
	var lines []string
	for {
		traces, _ := filepath.Glob(filepath.Join(dir, "stall-test-1-*.trace"))
		b, _ := os.ReadFile(csv)
		lines = strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(traces) > 0 && len(lines) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: stall traces %v, runtime csv:\n%s", traces, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	if lines[0] != watchHeader {
		t.Fatalf("runtime csv header %q, want %q", lines[0], watchHeader)
	}
	if got, want := len(strings.Split(lines[1], ",")), len(strings.Split(watchHeader, ",")); got != want {
		t.Errorf("row %q has %d fields, want %d", lines[1], got, want)
	}
}
