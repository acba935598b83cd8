// Package harness runs real colony processes for multi-process tests: it
// builds the binary once, starts agents on distinct loopback addresses,
// kills them, signals them and runs CLI commands against them.
package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// Binary builds the colony binary once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		dir, err := os.MkdirTemp("", "colony-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildBin = filepath.Join(dir, "colony")
		cmd := exec.Command("go", "build", "-o", buildBin, "./cmd/colony")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, b)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers (a process, an
// agent's goroutines) and the test reading it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Proc is one running colony agent process.
type Proc struct {
	Name    string
	IP      string
	DataDir string
	cmd     *exec.Cmd
	out     *SyncBuffer
	done    chan struct{}
	err     error
}

// Start runs `colony agent` as name on ip (default ports) with dataDir and
// extra args. The process is killed when the test ends.
func Start(t testing.TB, name, ip, dataDir string, args ...string) *Proc {
	t.Helper()
	full := append([]string{"agent", "--node-name", name, "--bind", ip, "--data-dir", dataDir, "--gossip-profile", "local", "--log-level", "debug"}, args...)
	p := &Proc{Name: name, IP: ip, DataDir: dataDir, out: &SyncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(Binary(t), full...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("--- output of %s ---\n%s", name, p.Output())
		}
	})
	return p
}

// HTTPAddr is the agent's API address.
func (p *Proc) HTTPAddr() string { return p.IP + ":7070" }

// GossipAddr is the agent's gossip address.
func (p *Proc) GossipAddr() string { return p.IP + ":7946" }

// Output is everything the process printed so far.
func (p *Proc) Output() string { return p.out.String() }

// Kill sends SIGKILL and waits for the process to end.
func (p *Proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) { _ = p.cmd.Process.Signal(sig) }

// Wait waits up to timeout for the process to exit and returns its exit
// code (-1 if it did not exit in time).
func (p *Proc) Wait(timeout time.Duration) int {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		return -1
	}
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// CLI runs a colony client command and returns its combined output and exit code.
func CLI(t testing.TB, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, Binary(t), args...)
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return string(out), code
}

// CLIJSON runs a client command that prints JSON and decodes it into v.
func CLIJSON(t testing.TB, v any, args ...string) error {
	out, code := CLI(t, args...)
	if code != 0 {
		return fmt.Errorf("colony %s: exit %d: %s", strings.Join(args, " "), code, out)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("colony %s: bad JSON %q: %w", strings.Join(args, " "), out, err)
	}
	return nil
}
