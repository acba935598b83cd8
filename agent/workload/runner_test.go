package workload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStartAndStopKillsTheWholeGroup(t *testing.T) {
	r := newRunner(t, testConfig(t))
	// The workload forks a child that would outlive a plain kill of sh.
	a := sh("web.0.1", `sleep 1000 & echo $! > child.pid; wait`)
	reconcile(t, r, a)
	st := waitState(t, r, a.InstanceID, StateRunning)
	if st.PID <= 0 || st.Deployment != "web" || st.StartedAt.IsZero() {
		t.Fatalf("running status incomplete: %+v", st)
	}
	child := readPIDFile(t, filepath.Join(workDir(r, a.InstanceID), "child.pid"))
	if ps, ok := readStat(child); !ok || ps.pgid != st.PID {
		t.Fatalf("child %d not in the instance's group %d: %+v", child, st.PID, ps)
	}

	reconcile(t, r) // no longer desired
	waitState(t, r, a.InstanceID, StateStopped)
	for _, pid := range []int{st.PID, child} {
		if alive(pid) {
			t.Errorf("process %d survived the stop", pid)
		}
	}
	if m := groupMembers(st.PID); len(m) > 0 {
		t.Errorf("group %d still has %v", st.PID, m)
	}
}

func TestStopEscalatesToSIGKILL(t *testing.T) {
	cfg := testConfig(t)
	cfg.StopTimeout = 200 * time.Millisecond
	r := newRunner(t, cfg)
	// Ignored signals stay ignored across exec: neither sh nor sleep dies of SIGTERM.
	a := sh("stubborn.0.1", `trap "" TERM; sleep 1000 & echo $! > child.pid; wait`)
	reconcile(t, r, a)
	st := waitState(t, r, a.InstanceID, StateRunning)
	child := readPIDFile(t, filepath.Join(workDir(r, a.InstanceID), "child.pid"))
	reconcile(t, r)
	waitState(t, r, a.InstanceID, StateStopped)
	if alive(st.PID) || alive(child) {
		t.Fatalf("SIGTERM-immune processes survived: %d %v, %d %v", st.PID, alive(st.PID), child, alive(child))
	}
}

func TestLeftoverChildrenAreKilledWhenTheMainProcessExits(t *testing.T) {
	r := newRunner(t, testConfig(t))
	a := sh("orphan.0.1", `sleep 1000 & echo $! > child.pid; exit 0`)
	a.Restart.Mode = RestartNever
	reconcile(t, r, a)
	waitState(t, r, a.InstanceID, StateExited)
	child := readPIDFile(t, filepath.Join(workDir(r, a.InstanceID), "child.pid"))
	waitFor(t, waitShort, func() error {
		if alive(child) {
			return fmt.Errorf("child %d of an exited instance still alive", child)
		}
		return nil
	})
}

func TestLogsWrittenAndReadable(t *testing.T) {
	r := newRunner(t, testConfig(t))
	a := sh("logs.0.1", `echo hello out; echo hello err >&2`)
	a.Restart.Mode = RestartNever
	reconcile(t, r, a)
	waitState(t, r, a.InstanceID, StateExited)
	for stream, want := range map[string]string{Stdout: "hello out\n", Stderr: "hello err\n"} {
		got, err := r.Logs(a.InstanceID, stream, 0)
		if err != nil || string(got) != want {
			t.Errorf("Logs(%s) = %q, %v; want %q", stream, got, err, want)
		}
		if _, err := os.Stat(filepath.Join(r.root, a.InstanceID, stream+".log")); err != nil {
			t.Errorf("log file: %v", err)
		}
	}
	if got, _ := r.Logs(a.InstanceID, Stdout, 4); string(got) != "out\n" {
		t.Errorf("tail 4 = %q", got)
	}
	if _, err := r.Logs("nope.0.1", Stdout, 0); !errors.Is(err, ErrUnknownInstance) {
		t.Errorf("unknown instance: %v", err)
	}
	if _, err := r.Logs("../../etc", Stdout, 0); !errors.Is(err, ErrUnknownInstance) {
		t.Errorf("path traversal: %v", err)
	}
	if _, err := r.Logs(a.InstanceID, "stdin", 0); !errors.Is(err, ErrBadStream) {
		t.Errorf("bad stream: %v", err)
	}
}

func TestLogsRotateAtTheCap(t *testing.T) {
	cfg := testConfig(t)
	cfg.LogMaxBytes = 1024
	r := newRunner(t, cfg)
	// 400 numbered lines of 10 bytes: about 4 KiB through a 1 KiB cap.
	a := sh("chatty.0.1", `i=0; while [ $i -lt 400 ]; do printf 'line %04d\n' $i; i=$((i+1)); done`)
	a.Restart.Mode = RestartNever
	reconcile(t, r, a)
	waitState(t, r, a.InstanceID, StateExited)
	dir := filepath.Join(r.root, a.InstanceID)
	for _, name := range []string{"stdout.log", "stdout.log.1"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Size() > cfg.LogMaxBytes {
			t.Fatalf("%s: %v, size over the cap %d", name, err, cfg.LogMaxBytes)
		}
	}
	got, err := r.Logs(a.InstanceID, Stdout, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < int(cfg.LogMaxBytes) || len(got) > 2*int(cfg.LogMaxBytes) || !bytes.HasSuffix(got, []byte("line 0399\n")) {
		t.Fatalf("kept %d bytes ending %q", len(got), got[max(0, len(got)-20):])
	}
	if tail, _ := r.Logs(a.InstanceID, Stdout, 20); string(tail) != "line 0398\nline 0399\n" {
		t.Fatalf("tail across files = %q", tail)
	}
}

func TestCrashLoopBacksOffThenFails(t *testing.T) {
	r := newRunner(t, testConfig(t))
	a := sh("crash.0.1", `echo run >> runs.txt; exit 3`)
	a.Restart.MaxRestarts = 3
	reconcile(t, r, a)
	st := waitState(t, r, a.InstanceID, StateFailed)
	if st.Restarts != 3 || st.ExitCode != 3 || !strings.Contains(st.LastError, "gave up after 3 restarts") || st.PID != 0 {
		t.Fatalf("failed status: %+v", st)
	}
	if n := countLines(filepath.Join(workDir(r, a.InstanceID), "runs.txt")); n != 4 {
		t.Fatalf("ran %d times, want 1 + 3 restarts", n)
	}
	if s := r.Stats(); s.Starts != 4 || s.Restarts != 3 {
		t.Fatalf("stats %+v", s)
	}
	// A failed instance is reported, not retried: reconciling the same
	// assignment again leaves it failed.
	reconcile(t, r, a)
	if st, _ := status(r, a.InstanceID); st.State != StateFailed || r.Stats().Starts != 4 {
		t.Fatalf("failed instance retried: %+v", st)
	}
	// A new assignment for it is a fresh start.
	a.Argv = []string{"/bin/sh", "-c", "exec sleep 1000"}
	reconcile(t, r, a)
	if st := waitState(t, r, a.InstanceID, StateRunning); st.Restarts != 0 || st.LastError != "" {
		t.Fatalf("reassigned instance kept old counters: %+v", st)
	}
}

func TestBackoffIsVisibleAndGrows(t *testing.T) {
	a := Assignment{Restart: RestartPolicy{BackoffInitial: 100 * time.Millisecond, BackoffMax: time.Second}}
	for n, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 60: time.Second} {
		if got := a.backoff(n); got != want {
			t.Errorf("backoff(%d) = %s, want %s", n, got, want)
		}
	}
	if got := (&Assignment{}).backoff(1); got != time.Second {
		t.Errorf("default initial backoff = %s", got)
	}

	r := newRunner(t, testConfig(t))
	b := sh("slow.0.1", `exit 1`)
	b.Restart.BackoffInitial, b.Restart.BackoffMax = time.Hour, time.Hour
	reconcile(t, r, b)
	st := waitState(t, r, b.InstanceID, StateBackoff)
	if st.NextRestartAt.Before(time.Now().Add(30*time.Minute)) || st.ExitCode != 1 || st.LastError != "exit status 1" {
		t.Fatalf("backoff status: %+v", st)
	}
	reconcile(t, r) // removal cuts the backoff short
	waitState(t, r, b.InstanceID, StateStopped)
}

func TestRestartModes(t *testing.T) {
	r := newRunner(t, testConfig(t))
	cases := []struct {
		id, mode, script string
		max              int
		state            State
		runs, restarts   int
	}{
		{"never-ok.0.1", RestartNever, "exit 0", 0, StateExited, 1, 0},
		{"never-bad.0.1", RestartNever, "exit 2", 0, StateFailed, 1, 0},
		{"onfail-ok.0.1", RestartOnFailure, "exit 0", 5, StateExited, 1, 0},
		{"onfail-bad.0.1", RestartOnFailure, "exit 2", 2, StateFailed, 3, 2},
		{"always-ok.0.1", RestartAlways, "exit 0", 2, StateFailed, 3, 2},
		{"default-ok.0.1", "", "exit 0", 2, StateExited, 1, 0},
	}
	var as []Assignment
	for _, c := range cases {
		a := sh(c.id, "echo run >> runs.txt; "+c.script)
		a.Restart.Mode, a.Restart.MaxRestarts = c.mode, c.max
		as = append(as, a)
	}
	reconcile(t, r, as...)
	for _, c := range cases {
		st := waitState(t, r, c.id, c.state)
		if n := countLines(filepath.Join(workDir(r, c.id), "runs.txt")); n != c.runs || st.Restarts != c.restarts {
			t.Errorf("%s: ran %d times with %d restarts, want %d and %d (%+v)", c.id, n, st.Restarts, c.runs, c.restarts, st)
		}
	}
}

func TestUnlimitedRestartsUnderAlways(t *testing.T) {
	r := newRunner(t, testConfig(t))
	a := sh("forever.0.1", "exit 0")
	a.Restart.Mode = RestartAlways
	reconcile(t, r, a)
	waitFor(t, waitLong, func() error {
		st, err := status(r, a.InstanceID)
		if err == nil && st.Restarts < 5 {
			err = fmt.Errorf("%d restarts so far (%s)", st.Restarts, st.State)
		}
		return err
	})
}

func TestReconcileIsIdempotent(t *testing.T) {
	r := newRunner(t, testConfig(t))
	a := sh("idem.0.1", "exec sleep 1000")
	a.Env = map[string]string{"A": "1"}
	reconcile(t, r, a)
	first := waitState(t, r, a.InstanceID, StateRunning)
	for range 5 {
		same := a.clone() // equal content, different maps and slices
		reconcile(t, r, same)
	}
	st := waitState(t, r, a.InstanceID, StateRunning)
	if st.PID != first.PID || st.Restarts != 0 || r.Stats().Starts != 1 {
		t.Fatalf("an unchanged assignment disturbed the instance: before %+v after %+v stats %+v", first, st, r.Stats())
	}
}

func TestSpecChangeRestartsWithTheNewSpec(t *testing.T) {
	r := newRunner(t, testConfig(t))
	a := sh("change.0.1", `echo "v=$V"; exec sleep 1000`)
	a.Env = map[string]string{"V": "one"}
	other := sh("other.0.1", "exec sleep 1000")
	reconcile(t, r, a, other)
	first := waitState(t, r, a.InstanceID, StateRunning)
	otherFirst := waitState(t, r, other.InstanceID, StateRunning)

	a.Env = map[string]string{"V": "two"}
	reconcile(t, r, a, other)
	waitFor(t, waitLong, func() error {
		st, err := status(r, a.InstanceID)
		if err != nil {
			return err
		}
		if st.State != StateRunning || st.PID == first.PID {
			return fmt.Errorf("still the old process (%s, pid %d)", st.State, st.PID)
		}
		out, _ := r.Logs(a.InstanceID, Stdout, 0)
		if string(out) != "v=one\nv=two\n" {
			return fmt.Errorf("stdout %q", out)
		}
		return nil
	})
	if alive(first.PID) {
		t.Fatalf("old process %d still alive", first.PID)
	}
	if st, _ := status(r, other.InstanceID); st.PID != otherFirst.PID {
		t.Fatalf("an unrelated instance was restarted")
	}
}

func TestEnvironment(t *testing.T) {
	cfg := testConfig(t)
	cfg.BaseEnv = append(cfg.BaseEnv, "BASE=b")
	r := newRunner(t, cfg)
	t.Setenv("AGENT_SECRET", "must-not-leak")
	a := sh("env.0.1", `env | sort`)
	a.Deployment = "envdep"
	a.Env = map[string]string{"X": "y", EnvInstanceID: "spoofed"}
	a.Restart.Mode = RestartNever
	reconcile(t, r, a)
	waitState(t, r, a.InstanceID, StateExited)
	out, _ := r.Logs(a.InstanceID, Stdout, 0)
	for _, want := range []string{"BASE=b\n", "X=y\n", "COLONY_INSTANCE_ID=env.0.1\n", "COLONY_DEPLOYMENT=envdep\n",
		"COLONY_METRICS_FILE=" + filepath.Join(r.root, a.InstanceID, "metrics.json") + "\n", "PATH=" + DefaultPath + "\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("env lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "AGENT_SECRET") {
		t.Errorf("the agent's environment leaked into the workload:\n%s", out)
	}
}

func TestStartErrorsAndInvalidAssignments(t *testing.T) {
	r := newRunner(t, testConfig(t))
	missing := Assignment{InstanceID: "missing.0.1", Argv: []string{"no-such-program-colony"},
		Restart: RestartPolicy{MaxRestarts: 1, BackoffInitial: time.Millisecond}}
	bad := Assignment{InstanceID: "bad.0.1", Argv: []string{"/bin/true"}, Restart: RestartPolicy{Mode: "sometimes"}}
	dup := sh("dup.0.1", "exec sleep 1000")
	err := r.Reconcile([]Assignment{missing, bad, dup, dup, {InstanceID: "../x", Argv: []string{"/bin/true"}}})
	if !errors.Is(err, ErrInvalidAssignment) || !strings.Contains(err.Error(), "sometimes") ||
		!strings.Contains(err.Error(), "listed twice") || !strings.Contains(err.Error(), `"../x"`) {
		t.Fatalf("Reconcile error = %v", err)
	}
	st := waitState(t, r, "missing.0.1", StateFailed)
	if !strings.Contains(st.LastError, "program not found") || st.Restarts != 1 {
		t.Fatalf("missing program: %+v", st)
	}
	if st := waitState(t, r, "bad.0.1", StateFailed); !strings.Contains(st.LastError, "restart mode") {
		t.Fatalf("invalid assignment: %+v", st)
	}
	waitState(t, r, "dup.0.1", StateRunning)
	if _, err := status(r, "../x"); err == nil {
		t.Fatalf("an invalid instance ID got an instance")
	}
}

func TestShutdownLeavesNoProcessBehind(t *testing.T) {
	cfg := testConfig(t)
	cfg.StopTimeout = 300 * time.Millisecond
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	as := []Assignment{
		sh("a.0.1", `sleep 1000 & sleep 1000 & wait`),
		sh("b.0.1", `trap "" TERM; sleep 1000 & wait`),
		sh("c.0.1", `exit 1`), // in backoff or restarting when Shutdown comes
	}
	as[2].Restart.BackoffInitial = time.Hour
	reconcile(t, r, as...)
	waitState(t, r, "a.0.1", StateRunning)
	waitState(t, r, "b.0.1", StateRunning)
	waitFor(t, waitShort, func() error {
		if n := len(processesOf(r.root)); n < 5 {
			return fmt.Errorf("%d workload processes so far", n)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := r.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if pids := processesOf(r.root); len(pids) > 0 {
		t.Fatalf("left behind: %v", pids)
	}
	for _, st := range r.Status() {
		if st.State != StateStopped {
			t.Errorf("%s is %s after Shutdown", st.InstanceID, st.State)
		}
	}
	if err := r.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := r.Reconcile(as); !errors.Is(err, ErrShutdown) {
		t.Fatalf("Reconcile after Shutdown: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(r.root, pidFileName)); err != nil || strings.Contains(string(b), "pgid") || !strings.Contains(string(b), `"groups":{}`) {
		t.Fatalf("pid file after Shutdown: %s %v", b, err)
	}
}

func TestShutdownContextCutsTheGraceShort(t *testing.T) {
	cfg := testConfig(t)
	cfg.StopTimeout = time.Hour
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reconcile(t, r, sh("stubborn.0.1", `trap "" TERM; sleep 1000 & wait`))
	waitState(t, r, "stubborn.0.1", StateRunning)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := r.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the deadline", err)
	}
	if pids := processesOf(r.root); len(pids) > 0 {
		t.Fatalf("left behind: %v", pids)
	}
}

func TestRemovedInstancesAreRetainedThenPruned(t *testing.T) {
	cfg := testConfig(t)
	cfg.RetainStopped = 1
	r := newRunner(t, cfg)
	for i := range 3 {
		a := sh(fmt.Sprintf("gen.0.%d", i+1), "echo hi; exec sleep 1000")
		reconcile(t, r, a)
		waitState(t, r, a.InstanceID, StateRunning)
	}
	reconcile(t, r)
	waitState(t, r, "gen.0.3", StateStopped)
	reconcile(t, r) // prunes now that every supervisor is done
	var ids []string
	for _, st := range r.Status() {
		ids = append(ids, st.InstanceID)
	}
	if len(ids) != 1 || ids[0] != "gen.0.3" {
		t.Fatalf("retained %v, want only the last one removed", ids)
	}
	if _, err := os.Stat(filepath.Join(r.root, "gen.0.1")); !os.IsNotExist(err) {
		t.Fatalf("pruned dir still there: %v", err)
	}
	if out, err := r.Logs("gen.0.3", Stdout, 0); err != nil || string(out) != "hi\n" {
		t.Fatalf("logs of a stopped instance: %q %v", out, err)
	}
}

func TestReaddedWhileStoppingWaitsForTheOldProcess(t *testing.T) {
	cfg := testConfig(t)
	cfg.StopTimeout = 300 * time.Millisecond
	r := newRunner(t, cfg)
	a := sh("again.0.1", `trap "" TERM; echo start >> runs.txt; sleep 1000 & wait`)
	reconcile(t, r, a)
	first := waitState(t, r, a.InstanceID, StateRunning)
	runs := filepath.Join(workDir(r, a.InstanceID), "runs.txt")
	// Running means started, not that the shell has written its line yet.
	waitLines := func(want int) {
		t.Helper()
		waitFor(t, waitLong, func() error {
			if n := countLines(runs); n != want {
				return fmt.Errorf("ran %d times, want %d", n, want)
			}
			return nil
		})
	}
	waitLines(1)
	reconcile(t, r)    // stopping: takes the grace period
	reconcile(t, r, a) // back before the old one is gone
	waitFor(t, waitLong, func() error {
		st, err := status(r, a.InstanceID)
		if err == nil && (st.State != StateRunning || st.PID == first.PID) {
			err = fmt.Errorf("%s pid %d", st.State, st.PID)
		}
		return err
	})
	if alive(first.PID) {
		t.Fatalf("two copies of the instance ran at once")
	}
	waitLines(2)
}

func TestConfigValidate(t *testing.T) {
	if err := (&Config{}).Validate(); err == nil || !strings.Contains(err.Error(), "data dir") {
		t.Fatalf("empty config: %v", err)
	}
	c := DefaultConfig()
	c.DataDir = t.TempDir()
	if err := c.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	c.LogMaxBytes, c.StopTimeout, c.BaseEnv = 10, 0, []string{"NOEQUALS"}
	err := c.Validate()
	for _, want := range []string{"log max bytes", "stop timeout", "NOEQUALS"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want %q", err, want)
		}
	}
}
