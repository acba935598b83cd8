// Package e2e runs Colony the way users ship it: the container image that
// `make image` builds, several containers on a private Docker network, and
// chaos across them (kill -9, a paused container, a network partition,
// restarts). It drives only the docker CLI (os/exec, no SDK) and the colony
// CLI, like an operator would.
//
// The suite needs a Docker engine. Where `docker info` fails every test is
// skipped with the reason; run `go test -v ./test/e2e` (or `make e2e`) to
// see it. Every container, network, volume and image a run creates carries
// the label colony-e2e=1 and an owner label (host:pid); a run removes what
// it created in t.Cleanup, and at start removes what a crashed run on this
// host left behind.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// label marks every Docker object the suite creates.
	label = "colony-e2e"
	// ownerLabel says which process on which host created the object, so
	// a run only removes leftovers whose creator is gone.
	ownerLabel = "colony-e2e.owner"
	// dockerTimeout bounds one docker CLI call; under load on 2 cores a
	// `docker run` can take several seconds, never minutes.
	dockerTimeout = 2 * time.Minute
)

var (
	// dockerErr is why the engine cannot be used; nil when `docker info`
	// answered.
	dockerErr error
	// runID prefixes every name this run creates: ce2e-<pid>-<random>.
	runID string
	// owner is this run's ownerLabel value.
	owner string

	imageOnce sync.Once
	imageTag  string
	imageErr  error
)

func TestMain(m *testing.M) {
	host, _ := os.Hostname()
	owner = fmt.Sprintf("%s:%d", host, os.Getpid())
	var b [3]byte
	_, _ = rand.Read(b[:])
	runID = fmt.Sprintf("ce2e-%d-%s", os.Getpid(), hex.EncodeToString(b[:]))

	if _, err := exec.LookPath("docker"); err != nil {
		dockerErr = fmt.Errorf("no docker CLI on PATH: %w", err)
	} else if out, err := docker(20*time.Second, "info", "--format", "{{.ServerVersion}}"); err != nil {
		dockerErr = fmt.Errorf("docker info: %w", err)
	} else {
		fmt.Fprintf(os.Stderr, "e2e: Docker engine %s answers; run %s\n", strings.TrimSpace(out), runID)
		removeStale()
	}
	if dockerErr != nil {
		fmt.Fprintf(os.Stderr, "e2e: SKIPPING the container end-to-end suite: no Docker engine answers (%v)\n", dockerErr)
	}
	code := m.Run()
	if imageTag != "" {
		// Untag only: the image goes away with the tag unless a leftover
		// container still uses it, in which case the next run removes both.
		_, _ = docker(dockerTimeout, "rmi", imageTag)
	}
	os.Exit(code)
}

// needDocker skips t, saying why, when no Docker engine answers.
func needDocker(t *testing.T) {
	t.Helper()
	if dockerErr != nil {
		t.Skipf("SKIPPED: the container end-to-end tests need a Docker engine and none answers here: %v", dockerErr)
	}
}

// docker runs the docker CLI and returns its standard output; on failure
// the error carries standard error too.
func docker(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		return stdout.String(), fmt.Errorf("docker %s: timed out after %s", strings.Join(args, " "), timeout)
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()+" "+stdout.String()))
	}
	return stdout.String(), nil
}

// mustDocker is docker that fails t on error.
func mustDocker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := docker(dockerTimeout, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// labelArgs are the flags that mark an object as this run's.
func labelArgs() []string {
	return []string{"--label", label + "=1", "--label", ownerLabel + "=" + owner}
}

// repoRoot is the module's root directory (where the Makefile is).
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// needImage builds the image once per run with `make image`, the very
// target users run, into a private build context so concurrent runs in
// one checkout do not clobber each other, and returns its tag.
func needImage(t *testing.T) string {
	t.Helper()
	needDocker(t)
	imageOnce.Do(func() {
		root, err := repoRoot()
		if err != nil {
			imageErr = err
			return
		}
		ctxDir, err := os.MkdirTemp("", "colony-image-")
		if err != nil {
			imageErr = err
			return
		}
		defer os.RemoveAll(ctxDir)
		tag := "colony-e2e:" + runID
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "make", "--no-print-directory", "image",
			"IMAGE="+tag, "IMAGE_CTX="+filepath.Join(ctxDir, "ctx"),
			"DOCKER_BUILD_FLAGS="+strings.Join(labelArgs(), " "))
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			imageErr = fmt.Errorf("make image: %w\n%s", err, out)
			return
		}
		imageTag = tag
		size, _ := docker(dockerTimeout, "image", "inspect", "--format", "{{.Size}}", tag)
		n, _ := strconv.ParseInt(strings.TrimSpace(size), 10, 64)
		fmt.Fprintf(os.Stderr, "e2e: built %s with `make image` in %s (%.1f MB)\n", tag, time.Since(start).Round(100*time.Millisecond), float64(n)/1e6)
	})
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return imageTag
}

// removeStale deletes objects left by earlier runs on this host whose
// process is gone (a run killed before its cleanups ran). Objects of live
// runs, and of other hosts sharing the engine, are left alone.
func removeStale() {
	stale := func(kind string, args ...string) []string {
		out, err := docker(dockerTimeout, args...)
		if err != nil {
			return nil
		}
		var ids []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			id, own, ok := strings.Cut(line, "\t")
			if ok && ownerGone(own) {
				ids = append(ids, id)
			}
		}
		if len(ids) > 0 {
			fmt.Fprintf(os.Stderr, "e2e: removing %d %s(s) left by a crashed run\n", len(ids), kind)
		}
		return ids
	}
	filter := "label=" + label + "=1"
	if ids := stale("container", "ps", "-a", "--filter", filter, "--format", `{{.ID}}	{{.Label "`+ownerLabel+`"}}`); len(ids) > 0 {
		_, _ = docker(dockerTimeout, append([]string{"rm", "-f", "-v"}, ids...)...)
	}
	if ids := stale("network", "network", "ls", "--filter", filter, "--format", `{{.ID}}	{{.Label "`+ownerLabel+`"}}`); len(ids) > 0 {
		_, _ = docker(dockerTimeout, append([]string{"network", "rm"}, ids...)...)
	}
	if ids := stale("volume", "volume", "ls", "--filter", filter, "--format", `{{.Name}}	{{.Label "`+ownerLabel+`"}}`); len(ids) > 0 {
		_, _ = docker(dockerTimeout, append([]string{"volume", "rm", "-f"}, ids...)...)
	}
	// `image ls` cannot print labels: ask each image.
	if out, err := docker(dockerTimeout, "image", "ls", "-q", "--filter", filter); err == nil {
		for _, id := range strings.Fields(out) {
			own, err := docker(dockerTimeout, "image", "inspect", "--format", `{{index .Config.Labels "`+ownerLabel+`"}}`, id)
			if err == nil && ownerGone(own) {
				_, _ = docker(dockerTimeout, "rmi", "-f", id)
			}
		}
	}
	// Untagged layers of earlier builds of the e2e image.
	_, _ = docker(dockerTimeout, "image", "prune", "-f", "--filter", filter)
}

// ownerGone reports whether an owner label names a process on this host
// that no longer runs.
func ownerGone(own string) bool {
	host, pidStr, ok := strings.Cut(strings.TrimSpace(own), ":")
	if !ok {
		return false
	}
	me, _ := os.Hostname()
	pid, err := strconv.Atoi(pidStr)
	if host != me || err != nil || pid <= 0 {
		return false
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}
