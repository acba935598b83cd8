package workload

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"colony/agent/workload/antfarm"
	"colony/test/retry"
)

// helperEnv makes the test binary act as a crashing agent: it starts a
// runner on the given data dir, runs one workload with a child, prints the
// workload's process group and then waits to be killed with SIGKILL (so
// Shutdown never runs).
const helperEnv = "COLONY_WORKLOAD_TEST_AGENT"

// antfarmEnv makes the test binary run `colony antfarm` with the arguments
// after "--", as the lead's command will.
const antfarmEnv = "COLONY_WORKLOAD_TEST_ANTFARM"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		os.Exit(fakeAgent(dir))
	}
	if os.Getenv(antfarmEnv) != "" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		args := os.Args[1:]
		for i, a := range args {
			if a == "--" {
				args = args[i+1:]
				break
			}
		}
		if err := antfarm.Run(ctx, args, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "antfarm:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func fakeAgent(dir string) int {
	cfg := DefaultConfig()
	cfg.DataDir = dir
	r, err := New(cfg)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	a := sh("left.0.1", `sleep 1000 & wait`)
	if err := r.Reconcile([]Assignment{a}); err != nil {
		fmt.Println("error:", err)
		return 1
	}
	var pgid int
	err = retry.Wait(waitLong, func() error {
		st := r.Status()
		if len(st) != 1 || st[0].State != StateRunning || len(groupMembers(st[0].PID)) != 2 {
			return fmt.Errorf("workload not running with its child: %+v", st)
		}
		pgid = st[0].PID
		return nil
	})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("ready", pgid)
	// Wait for the SIGKILL; bounded, so a lost parent does not leave us around.
	time.Sleep(2 * waitLong)
	return 1
}

func TestNewKillsWorkloadsOfACrashedAgent(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	agent := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	agent.Env = append(os.Environ(), helperEnv+"="+dir)
	out, err := agent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	pgidText, ok := strings.CutPrefix(strings.TrimSpace(line), "ready ")
	if err != nil || !ok {
		agent.Process.Kill()
		agent.Wait()
		t.Fatalf("fake agent said %q, %v", line, err)
	}
	pgid, _ := strconv.Atoi(pgidText)
	// The agent crashes: its workloads are orphaned but keep running.
	if err := agent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	agent.Wait()
	orphans := groupMembers(pgid)
	if len(orphans) != 2 {
		t.Fatalf("expected the orphaned workload and its child, got %v", orphans)
	}
	t.Cleanup(func() { killGroup(pgid, syscall.SIGKILL) }) // only if the test fails

	cfg := DefaultConfig()
	cfg.DataDir = dir
	r := newRunner(t, cfg)
	if left := groupMembers(pgid); len(left) > 0 {
		t.Fatalf("New did not kill the previous run's workloads: %v alive", left)
	}
	if s := r.Stats(); s.StraysKilled != 1 {
		t.Fatalf("stats %+v", s)
	}
	// The old instance's logs are still readable.
	if _, err := r.Logs("left.0.1", Stdout, 0); err != nil {
		t.Fatalf("logs of the previous run: %v", err)
	}
}

func TestStrayCheckSparesUnrelatedProcesses(t *testing.T) {
	// A process group recorded in the pid file whose processes do not
	// carry the instance's ID (a PID reused by someone else) is left alone.
	dir := t.TempDir()
	other := exec.Command("sleep", "1000")
	other.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	if err := os.MkdirAll(dir+"/workloads", 0o750); err != nil {
		t.Fatal(err)
	}
	pf := fmt.Sprintf(`{"boot_id": %q, "groups": {"x.0.1": %d}}`, bootID(), other.Process.Pid)
	if err := os.WriteFile(dir+"/workloads/"+pidFileName, []byte(pf), 0o640); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.DataDir = dir
	r := newRunner(t, cfg)
	if !alive(other.Process.Pid) || r.Stats().StraysKilled != 0 {
		t.Fatalf("an unrelated process group was killed")
	}
}
