package scale

import (
	"bytes"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"sync"
	"testing"
	"time"
)

// spin keeps a CPU busy until stop closes.
func spin(stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	x := 0
	for {
		select {
		case <-stop:
			return
		default:
			for i := range 100000 {
				x += i
			}
		}
	}
}

// TestTraceWindows: a trace of this process, busy for a while with a CPU
// profile running, reads back as windows whose cores add up to the busy
// time, with a GC mark where one was forced, CPU samples naming the busy
// function, and a breakdown that names it too.
func TestTraceWindows(t *testing.T) {
	var tr, prof bytes.Buffer
	if err := pprof.StartCPUProfile(&prof); err != nil {
		t.Skipf("a CPU profile is already running: %v", err)
	}
	if err := trace.Start(&tr); err != nil {
		pprof.StopCPUProfile()
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go spin(stop, &wg)
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) { // busy on this goroutine too
		_ = strings.Repeat("x", 1<<10)
	}
	var garbage [][]byte
	for range 64 {
		garbage = append(garbage, make([]byte, 1<<20))
	}
	_ = garbage
	runtime.GC()
	close(stop)
	wg.Wait()
	trace.Stop()
	pprof.StopCPUProfile()

	ws, err := ReadTraceWindows(&tr, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	var cores float64
	mark, samples := false, 0
	for _, w := range ws {
		cores += w.Cores
		mark = mark || w.GCMark
		samples += w.Samples["colony/test/scale.spin"]
	}
	// 300 ms of at least one busy goroutine: at least 6 windows' worth of one core.
	if len(ws) < 6 || cores < 5 {
		t.Errorf("%d windows holding %.1f window-cores of running time, want at least 6 and 5", len(ws), cores)
	}
	if !mark {
		t.Error("no window saw the forced GC's mark phase")
	}
	if samples == 0 {
		t.Error("no CPU sample in spin")
	}
	var out bytes.Buffer
	WriteTraceWindows(&out, ws, 0, len(ws)-1, 50)
	if !strings.Contains(out.String(), "colony/test/scale.spin") || !strings.Contains(out.String(), "window_s") {
		t.Errorf("breakdown does not name spin:\n%s", out.String())
	}
}
