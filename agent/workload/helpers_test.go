package workload

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"colony/test/retry"
)

// Generous deadlines: the test machine has 2 cores shared with other builds.
const (
	waitLong  = 20 * time.Second
	waitShort = 10 * time.Second
)

func waitFor(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	retry.Until(t, timeout, cond)
}

func testConfig(t *testing.T) Config {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.StopTimeout = 5 * time.Second
	cfg.ResetAfter = time.Hour // every exit in a test counts as consecutive
	return cfg
}

// newRunner builds a runner that the test's cleanup shuts down, checking
// that nothing it started survives.
func newRunner(t *testing.T, cfg Config) *Runner {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		defer cancel()
		if err := r.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if pids := processesOf(r.root); len(pids) > 0 {
			t.Errorf("processes left behind after Shutdown: %v", pids)
		}
	})
	return r
}

// processesOf lists live processes whose COLONY_METRICS_FILE points under
// root: every workload of that runner (and whatever they forked) has it.
func processesOf(root string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, ok := readStat(pid)
		if !ok || st.state == 'Z' || st.state == 'X' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		for _, kv := range strings.Split(string(b), "\x00") {
			if v, ok := strings.CutPrefix(kv, EnvMetricsFile+"="); ok && strings.HasPrefix(v, root+"/") {
				out = append(out, pid)
			}
		}
	}
	return out
}

func alive(pid int) bool {
	st, ok := readStat(pid)
	return ok && st.state != 'Z' && st.state != 'X'
}

func sh(id, script string) Assignment {
	return Assignment{
		InstanceID: id,
		Deployment: strings.SplitN(id, ".", 2)[0],
		Argv:       []string{"/bin/sh", "-c", script},
		Restart:    RestartPolicy{Mode: RestartOnFailure, BackoffInitial: 10 * time.Millisecond, BackoffMax: 40 * time.Millisecond},
	}
}

func status(r *Runner, id string) (InstanceStatus, error) {
	for _, s := range r.Status() {
		if s.InstanceID == id {
			return s, nil
		}
	}
	return InstanceStatus{}, fmt.Errorf("no status for %s", id)
}

// waitState waits until id is in state s and returns its status.
func waitState(t *testing.T, r *Runner, id string, s State) InstanceStatus {
	t.Helper()
	var got InstanceStatus
	waitFor(t, waitLong, func() error {
		var err error
		if got, err = status(r, id); err != nil {
			return err
		}
		if got.State != s {
			return fmt.Errorf("%s is %s (restarts %d, last error %q), want %s", id, got.State, got.Restarts, got.LastError, s)
		}
		return nil
	})
	return got
}

func reconcile(t *testing.T, r *Runner, as ...Assignment) {
	t.Helper()
	if err := r.Reconcile(as); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
}

// readPIDFile waits for a workload to write a PID into path and returns it.
func readPIDFile(t *testing.T, path string) int {
	t.Helper()
	var pid int
	waitFor(t, waitShort, func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !strings.HasSuffix(string(b), "\n") {
			return errors.New("pid file not complete yet")
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err
	})
	return pid
}

func workDir(r *Runner, id string) string { return filepath.Join(r.root, id, "work") }

func countLines(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	for s := bufio.NewScanner(f); s.Scan(); {
		n++
	}
	return n
}
