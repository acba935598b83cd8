package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"colony/test/retry"
)

// composeCommand is how Compose is spelled here: the v2 plugin
// (`docker compose`) or the standalone v1 tool (`docker-compose`).
func composeCommand() ([]string, error) {
	if _, err := docker(30*time.Second, "compose", "version"); err == nil {
		return []string{"docker", "compose"}, nil
	}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		out, err := exec.Command("docker-compose", "version").CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("docker-compose version: %w: %s", err, out)
		}
		return []string{"docker-compose"}, nil
	}
	return nil, fmt.Errorf("neither `docker compose` nor `docker-compose` is installed")
}

// TestCompose runs examples/compose as documented: a seed and scaled
// agents from the image, the seed's API published on 127.0.0.1. Every node
// must list every other alive, through the published port and inside each
// container.
func TestCompose(t *testing.T) {
	img := needImage(t)
	compose, err := composeCommand()
	if err != nil {
		t.Skipf("SKIPPED: %v", err)
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	const agents = 3
	port := freePort(t)
	project := runID + "-compose"
	// The example stays label-free; this override marks the run's objects
	// so a crashed run's leftovers are found and removed.
	override := filepath.Join(t.TempDir(), "labels.yml")
	labels := fmt.Sprintf("{%s: \"1\", %s: %q}", label, ownerLabel, owner)
	y := fmt.Sprintf("services:\n  seed:\n    labels: %[1]s\n  agent:\n    labels: %[1]s\nvolumes:\n  seed-data:\n    labels: %[1]s\nnetworks:\n  default:\n    labels: %[1]s\n", labels)
	if err := os.WriteFile(override, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(timeout time.Duration, args ...string) (string, error) {
		full := append(append([]string{}, compose[1:]...), "-p", project, "-f", filepath.Join(root, "examples", "compose", "docker-compose.yml"), "-f", override)
		cmd := exec.Command(compose[0], append(full, args...)...)
		cmd.Env = append(os.Environ(), "COLONY_IMAGE="+img, "COLONY_API_PORT="+strconv.Itoa(port), "COLONY_GOSSIP_PROFILE=local")
		done := make(chan struct{})
		var out []byte
		var err error
		go func() { out, err = cmd.CombinedOutput(); close(done) }()
		select {
		case <-done:
		case <-time.After(timeout):
			_ = cmd.Process.Kill()
			<-done
			return string(out), fmt.Errorf("%s %s: timed out after %s", strings.Join(compose, " "), strings.Join(args, " "), timeout)
		}
		if err != nil {
			return string(out), fmt.Errorf("%s %s: %w: %s", strings.Join(compose, " "), strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := run(time.Minute, "logs", "--tail", "40")
			t.Logf("--- compose logs ---\n%s", out)
		}
		if out, err := run(3*time.Minute, "down", "-v", "--remove-orphans"); err != nil {
			t.Logf("cleanup: %v\n%s", err, out)
		}
	})
	start := time.Now()
	if _, err := run(3*time.Minute, "up", "-d", "--scale", fmt.Sprintf("agent=%d", agents)); err != nil {
		t.Fatal(err)
	}

	// Through the published port, with the host's CLI.
	want := agents + 1
	aliveFrom := func(out string, err error) error {
		if err != nil {
			return err
		}
		var ms []member
		if err := json.Unmarshal([]byte(out), &ms); err != nil {
			return fmt.Errorf("bad JSON %q: %w", out, err)
		}
		alive := 0
		for _, m := range ms {
			if m.Status == "alive" {
				alive++
			}
		}
		if alive != want || len(ms) != want {
			return fmt.Errorf("%d members, %d alive, want %d alive", len(ms), alive, want)
		}
		return nil
	}
	api := "127.0.0.1:" + strconv.Itoa(port)
	retry.Until(t, convergeTimeout, func() error {
		return aliveFrom(colonyCLI(t, "members", "--format", "json", "--http-addr", api))
	})
	t.Logf("compose up --scale agent=%d: %d nodes alive on the published API %s after %s", agents, want, api, time.Since(start).Round(10*time.Millisecond))

	// As the README promises: one leader and 3 voters, and the cluster
	// commits a setting.
	retry.Until(t, convergeTimeout, func() error {
		st, err := parseStatus(colonyCLI(t, "status", "--format", "json", "--http-addr", api))
		if err != nil {
			return err
		}
		if st.Leader == nil || len(st.voterNames()) != 3 {
			return fmt.Errorf("leader %+v, voters %v: want a leader and 3 voters", st.Leader, st.voterNames())
		}
		return nil
	})
	t.Logf("compose: one leader and 3 voters after %s", time.Since(start).Round(10*time.Millisecond))
	if _, err := colonyCLI(t, "settings", "set", "compose-e2e", runID, "--http-addr", api); err != nil {
		t.Fatal(err)
	}
	if out, err := colonyCLI(t, "settings", "get", "compose-e2e", "--consistency", "consistent", "--http-addr", api); err != nil || strings.TrimSpace(out) != runID {
		t.Fatalf("settings get compose-e2e = %q, %v; want %q", out, err, runID)
	}

	// Inside every container, with the image's own CLI.
	out, err := run(time.Minute, "ps", "-q")
	if err != nil {
		t.Fatal(err)
	}
	ids := strings.Fields(out)
	if len(ids) != want {
		t.Fatalf("compose ps lists %d containers, want %d: %q", len(ids), want, out)
	}
	for _, id := range ids {
		retry.Until(t, convergeTimeout, func() error {
			return aliveFrom(docker(cliTimeout, "exec", id, "/colony", "members", "--format", "json"))
		})
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
