package provider

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"colony/test/harness"
)

// dockerOrSkip skips unless a Docker engine answers.
func dockerOrSkip(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("docker tests skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("no Docker engine (docker info: %v: %s): docker provider tests skipped", err, strings.TrimSpace(string(out)))
	}
}

func randSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func docker(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// testImage builds a FROM-scratch image of the static binary under a
// unique tag, so the test depends on no other image.
func testImage(t *testing.T) string {
	t.Helper()
	ctxDir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(ctxDir, "colony"), "colony/cmd/colony")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	df := "FROM scratch\nCOPY colony /colony\nENTRYPOINT [\"/colony\"]\n"
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	tag := "colony-provider-test:" + randSuffix()
	docker(t, "build", "-q", "-t", tag, ctxDir)
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", tag).Run() })
	return tag
}

func TestDockerEndToEnd(t *testing.T) {
	dockerOrSkip(t)
	ctx := testCtx(t)
	image := testImage(t)
	network := "colony-ptest-" + randSuffix()
	docker(t, "network", "create", network)
	cfg := DefaultDockerConfig()
	cfg.Name = "dkr" + randSuffix()
	t.Cleanup(func() {
		if ids := strings.Fields(docker(t, "ps", "-a", "-q", "--filter", "label="+DockerLabelProvider+"="+cfg.Name)); len(ids) > 0 {
			docker(t, append([]string{"rm", "-f", "-v"}, ids...)...)
		}
		_ = exec.Command("docker", "network", "rm", network).Run()
	})
	cfg.Image, cfg.Pull, cfg.Network = image, "never", network
	cfg.Args = []string{"--gossip-profile", "local"}
	cfg.GracePeriod = 10 * time.Second
	cfg.Types = []InstanceType{
		{Name: "small", Profile: Profile{CPUs: 0.5, MemoryMiB: 128, Labels: map[string]string{"size": "small"}}, CostPerHour: 0.01},
		{Name: "gpu", Profile: Profile{CPUs: 1, MemoryMiB: 256, Labels: map[string]string{"gpu": "true"}}, CostPerHour: 0.5, Reserved: []string{"gpu"}},
	}
	p, err := NewDocker(cfg)
	if err != nil {
		t.Fatal(err)
	}

	// One seed alone, then the GPU type (chosen by the broker) joining it.
	seeds, err := p.Launch(ctx, LaunchRequest{IdempotencyKey: "seed", Type: "small", Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(seeds) != 1 || seeds[0].Addr == "" {
		t.Fatalf("seed: %+v", seeds)
	}
	seedIP, _, _ := net.SplitHostPort(seeds[0].Addr)
	seedHTTP := net.JoinHostPort(seedIP, "7070")

	typ, err := ChooseType(cfg.Types, Requirements{Labels: map[string]string{"gpu": "true"}})
	if err != nil || typ.Name != "gpu" {
		t.Fatalf("chose %q, %v", typ.Name, err)
	}
	req := LaunchRequest{IdempotencyKey: "intent-g", Type: typ.Name, Count: 2, JoinAddr: seeds[0].Addr, Labels: map[string]string{"pool": "ml"}}
	start := time.Now()
	insts, err := p.Launch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(insts) != 2 {
		t.Fatalf("launched %+v", insts)
	}
	names := ids(insts)
	waitMembers(t, seedHTTP, "alive", names...)
	t.Logf("launch of 2 containers until both are alive members of the seed: %s", time.Since(start).Round(time.Millisecond))
	ms, _ := members(t, seedHTTP)
	if l := ms[names[0]].Labels; l["gpu"] != "true" || l["pool"] != "ml" {
		t.Errorf("%s gossips labels %v", names[0], l)
	}
	if got := docker(t, "inspect", "-f", "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}", names[0]); got != fmt.Sprint(int64(1e9), " ", 256<<20) {
		t.Errorf("limits of %s: %q, want the gpu type's 1 cpu and 256 MiB", names[0], got)
	}

	// Same key again, from a new provider (a new leader): nothing new.
	p2, err := NewDocker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	again, err := p2.Launch(ctx, req)
	if err != nil || !slices.Equal(ids(again), names) {
		t.Fatalf("repeated launch: %v, %v; want %v", ids(again), err, names)
	}
	if n := len(strings.Fields(docker(t, "ps", "-a", "-q", "--filter", "label="+DockerLabelProvider+"="+cfg.Name))); n != 3 {
		t.Fatalf("%d containers, want 3", n)
	}
	all, err := p2.List(ctx)
	if err != nil || len(WithKey(all, "intent-g")) != 2 || WithKey(all, "intent-g")[1].Index != 1 || all[0].Type == "" {
		t.Fatalf("list: %+v, %v", all, err)
	}

	start = time.Now()
	if err := p2.Terminate(ctx, append(names, "not-ours")); err != nil {
		t.Fatal(err)
	}
	t.Logf("terminate of 2 containers (docker stop, graceful leave): %s", time.Since(start).Round(time.Millisecond))
	waitMembers(t, seedHTTP, "left", names...)
	if err := p.Terminate(ctx, names); err != nil {
		t.Fatalf("second terminate: %v", err)
	}
	all, _ = p.List(ctx)
	for _, in := range WithKey(all, "intent-g") {
		if in.State != StateTerminated {
			t.Errorf("%s is %s", in.ID, in.State)
		}
	}
	if _, err := p.Launch(ctx, LaunchRequest{IdempotencyKey: "x", Type: "huge", Count: 1}); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("unknown type: %v", err)
	}
}

func TestDockerMissingImageIsClear(t *testing.T) {
	dockerOrSkip(t)
	cfg := DefaultDockerConfig()
	cfg.Name = "dkr" + randSuffix()
	cfg.Image, cfg.Pull = "colony-provider-test:does-not-exist", "never"
	p, err := NewDocker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if ids := strings.Fields(docker(t, "ps", "-a", "-q", "--filter", "label="+DockerLabelProvider+"="+cfg.Name)); len(ids) > 0 {
			docker(t, append([]string{"rm", "-f", "-v"}, ids...)...)
		}
	})
	_, err = p.Launch(testCtx(t), LaunchRequest{IdempotencyKey: "k", Type: "small", Count: 1})
	if err == nil || errors.Is(err, ErrTransient) || !strings.Contains(err.Error(), "does-not-exist") {
		t.Fatalf("got %v", err)
	}
}

func TestDockerConfigValidate(t *testing.T) {
	if err := DefaultDockerConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultDockerConfig()
	cfg.Pull = "sometimes"
	if err := cfg.Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("pull: %v", err)
	}
	cfg = DefaultDockerConfig()
	cfg.Image = ""
	if err := cfg.Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("image: %v", err)
	}
	// Docker not running is transient, never a crash: a CLI that is not
	// there is a plain error.
	cfg = DefaultDockerConfig()
	cfg.Docker = "/nonexistent/docker"
	p, _ := NewDocker(cfg)
	if _, err := p.List(testCtx(t)); err == nil {
		t.Fatal("no error from a missing CLI")
	}
	_ = harness.Binary // the image is built with go build directly
}
