package provider

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"colony/test/retry"
)

// fakeCloud returns an exec provider running examples/exec-provider/
// fake-cloud.sh with its state in a fresh temp dir, plus that state path.
func fakeCloud(t *testing.T, mod func(*ExecConfig), env ...string) (*Exec, string) {
	t.Helper()
	for _, tool := range []string{"jq", "flock"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("fake-cloud.sh needs %s, which is not installed", tool)
		}
	}
	script, err := filepath.Abs("../../examples/exec-provider/fake-cloud.sh")
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "cloud.json")
	cfg := DefaultExecConfig()
	cfg.Name = "fake"
	cfg.Command = script
	cfg.Timeout = 30 * time.Second // generous: jq under a loaded 2-core machine
	cfg.Env = append([]string{"FAKE_CLOUD_STATE=" + state}, env...)
	if mod != nil {
		mod(&cfg)
	}
	p, err := NewExec(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p, state
}

// scriptProvider writes body as an executable sh script and wraps it.
func scriptProvider(t *testing.T, body string, mod func(*ExecConfig)) *Exec {
	t.Helper()
	path := filepath.Join(t.TempDir(), "provider.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultExecConfig()
	cfg.Command = path
	cfg.Timeout = 30 * time.Second
	if mod != nil {
		mod(&cfg)
	}
	p, err := NewExec(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func ids(insts []Instance) []string {
	out := make([]string, len(insts))
	for i, in := range insts {
		out[i] = in.ID
	}
	return out
}

func TestExecFakeCloudLifecycle(t *testing.T) {
	ctx := testCtx(t)
	p, _ := fakeCloud(t, nil)

	types, err := p.InstanceTypes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gpu, err := ChooseType(types, Requirements{Labels: map[string]string{"gpu": "true"}})
	if err != nil || gpu.Name != "gpu" {
		t.Fatalf("gpu type: %v, %v", gpu, err)
	}
	if plain, _ := ChooseType(types, Requirements{CPUMillis: 1000}); plain.Name != "small" {
		t.Fatalf("plain work chose %q", plain.Name)
	}

	req := LaunchRequest{IdempotencyKey: "intent-1", Type: "small", Count: 2, JoinAddr: "10.0.0.100:7946", Labels: map[string]string{"pool": "web"}}
	first, err := p.Launch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 2 || first[0].Index != 0 || first[1].Index != 1 || first[0].Labels["pool"] != "web" {
		t.Fatalf("first launch: %+v", first)
	}
	again, err := p.Launch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(ids(again), ",") != strings.Join(ids(first), ",") {
		t.Fatalf("repeated launch returned %v, want the same %v", ids(again), ids(first))
	}
	all, err := p.List(ctx)
	if err != nil || len(all) != 2 {
		t.Fatalf("list after two launches with one key: %d instances, %v", len(all), err)
	}

	// Terminating twice, and an ID the cloud never had, is fine.
	for range 2 {
		if err := p.Terminate(ctx, []string{first[0].ID, "fake-404"}); err != nil {
			t.Fatal(err)
		}
	}
	all, _ = p.List(ctx)
	if got := WithKey(all, "intent-1"); got[0].State != StateTerminated || got[1].State != StateRunning {
		t.Fatalf("after terminate: %+v", got)
	}
	// A terminated slot stays used: the launch was done and then scaled down.
	if got, err := p.Launch(ctx, req); err != nil || len(got) != 2 {
		t.Fatalf("launch after terminate: %d, %v", len(got), err)
	}
	if all, _ := p.List(ctx); len(all) != 2 {
		t.Fatalf("launch after terminate created instances: %d", len(all))
	}
}

// A leader died after the cloud made slot 0 of 3: the repeat makes only
// slots 1 and 2.
func TestExecLaunchCompletesPartialLaunch(t *testing.T) {
	ctx := testCtx(t)
	p, _ := fakeCloud(t, nil)
	var resp execInstancesResponse
	if err := p.run(ctx, "launch", execLaunchRequest{Version: 1, IdempotencyKey: "k", Type: "large", Count: 3, Indexes: []int{0}}, &resp); err != nil {
		t.Fatal(err)
	}
	got, err := p.Launch(ctx, LaunchRequest{IdempotencyKey: "k", Type: "large", Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].ID != resp.Instances[0].ID {
		t.Fatalf("completed launch: %+v (slot 0 was %s)", got, resp.Instances[0].ID)
	}
	if all, _ := p.List(ctx); len(all) != 3 {
		t.Fatalf("%d instances, want 3", len(all))
	}
}

func TestExecErrorsMapToSentinels(t *testing.T) {
	ctx := testCtx(t)
	p, _ := fakeCloud(t, nil, "FAKE_CLOUD_CAPACITY=2")
	_, err := p.Launch(ctx, LaunchRequest{IdempotencyKey: "k1", Type: "huge", Count: 1})
	if !errors.Is(err, ErrUnknownType) || !strings.Contains(err.Error(), `unknown instance type "huge"`) {
		t.Fatalf("unknown type: %v", err)
	}
	_, err = p.Launch(ctx, LaunchRequest{IdempotencyKey: "k2", Type: "small", Count: 3})
	if !errors.Is(err, ErrCapacity) || !strings.Contains(err.Error(), "capacity 2 reached") {
		t.Fatalf("capacity: %v", err)
	}
	if _, err := p.Launch(ctx, LaunchRequest{Type: "small", Count: 1}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no key: %v", err)
	}

	p, _ = fakeCloud(t, nil, "FAKE_CLOUD_FAIL=1")
	if _, err := p.List(ctx); !errors.Is(err, ErrTransient) || !strings.Contains(err.Error(), "exit 75") {
		t.Fatalf("exit 75: %v", err)
	}
	if _, err := p.List(ctx); err != nil {
		t.Fatalf("second call: %v", err)
	}
}

func TestExecRefusesBadScripts(t *testing.T) {
	ctx := testCtx(t)
	for _, tc := range []struct{ name, body, want string }{
		{"exit 1 with stderr", `echo "aws: AuthFailure: credentials expired" >&2; exit 1`, "credentials expired"},
		{"not JSON", `echo "hello"`, "bad JSON"},
		{"unknown field", `echo '{"instances": [], "extra": 1}'`, `unknown field "extra"`},
		{"unknown instance field", `echo '{"instances": [{"id": "a", "state": "running", "colour": "red"}]}'`, `unknown field "colour"`},
		{"trailing data", `echo '{"instances": []} {}'`, "trailing data"},
		{"bad state", `echo '{"instances": [{"id": "a", "state": "booting"}]}'`, `state "booting"`},
		{"no id", `echo '{"instances": [{"state": "running"}]}'`, "no id"},
		{"duplicate id", `echo '{"instances": [{"id": "a", "state": "running"}, {"id": "a", "state": "running"}]}'`, "duplicate id"},
		{"huge output", `yes '{"instances": []}' | head -c 100000`, "output exceeds 4096 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := scriptProvider(t, `cat >/dev/null; `+tc.body, func(c *ExecConfig) { c.MaxOutput = 4096 })
			_, err := p.List(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if errors.Is(err, ErrTransient) {
				t.Fatalf("%v must not be retried", err)
			}
		})
	}
	// A launch answer for another key or slot is refused too.
	p := scriptProvider(t, `cat >/dev/null; case $1 in
	list) echo '{"instances": []}';;
	launch) echo '{"instances": [{"id": "x", "idempotency_key": "other", "index": 0, "state": "pending"}]}';;
	esac`, nil)
	if _, err := p.Launch(ctx, LaunchRequest{IdempotencyKey: "mine", Type: "t", Count: 1}); err == nil || !strings.Contains(err.Error(), `key "other"`) {
		t.Fatalf("wrong key accepted: %v", err)
	}
}

func TestExecTimeoutKillsScript(t *testing.T) {
	ctx := testCtx(t)
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	// The script's child (like a cloud CLI) must die with it.
	p := scriptProvider(t, `cat >/dev/null; sh -c 'echo $$ >`+pidFile+`; exec sleep 3600' & wait`, func(c *ExecConfig) { c.Timeout = 300 * time.Millisecond })
	_, err := p.List(ctx)
	if !errors.Is(err, ErrTransient) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no answer within 300ms") {
		t.Fatalf("hung script: %v", err)
	}
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return // killed before it could even start (a loaded machine): nothing left
	}
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 30*time.Second, func() error {
		if procAlive(pid, 0) {
			return fmt.Errorf("the script's child (pid %d) survived the timeout", pid)
		}
		return nil
	})
}

func TestExecConfigValidate(t *testing.T) {
	if _, err := NewExec(DefaultExecConfig()); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "no command") {
		t.Fatalf("no command: %v", err)
	}
	cfg := DefaultExecConfig()
	cfg.Command = "/nonexistent/provider.sh"
	if _, err := NewExec(cfg); !errors.Is(err, ErrInvalid) {
		t.Fatalf("missing script: %v", err)
	}
	cfg = DefaultExecConfig()
	cfg.Command = "/bin/true"
	cfg.Env = []string{"NOEQUALS"}
	if _, err := NewExec(cfg); err == nil {
		t.Fatal("bad env accepted")
	}
}
