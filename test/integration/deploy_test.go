package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"colony/test/harness"
	"colony/test/retry"
)

// TestDeployThroughCLI: deploy a spec file through the CLI against one
// node, watch the instances run with `colony ps` from another, read their
// output with `colony logs`, scale down and stop.
func TestDeployThroughCLI(t *testing.T) {
	root := t.TempDir()
	seed := harness.Start(t, "d1", ip(51), filepath.Join(root, "d1"))
	procs := []*harness.Proc{seed}
	for i := 2; i <= 3; i++ {
		procs = append(procs, harness.Start(t, fmt.Sprintf("d%d", i), ip(50+i), filepath.Join(root, fmt.Sprintf("d%d", i)), "--join", seed.GossipAddr()))
	}
	spec := filepath.Join(root, "echo.yaml")
	if err := os.WriteFile(spec, []byte(`name: echo
count: 3
command: {argv: ["/bin/sh", "-c", "echo started $COLONY_INSTANCE_ID; exec sleep 600"]}
resources: {cpu: 10m, memory: 8MiB}
distinct_hosts: true
`), 0o600); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 60*time.Second, func() error {
		out, code := harness.CLI(t, "deploy", spec, "--http-addr", procs[1].HTTPAddr())
		if code != 0 {
			return fmt.Errorf("deploy: %d %s", code, out)
		}
		return nil
	})
	var running string
	retry.Until(t, 60*time.Second, func() error {
		out, code := harness.CLI(t, "ps", "echo", "--http-addr", procs[2].HTTPAddr())
		if code != 0 || strings.Count(out, " running ") != 3 {
			return fmt.Errorf("ps: %d\n%s", code, out)
		}
		running = out
		return nil
	})
	t.Logf("colony ps:\n%s", running)
	retry.Until(t, 30*time.Second, func() error {
		out, code := harness.CLI(t, "logs", "echo.0.1", "--http-addr", seed.HTTPAddr())
		if code != 0 || !strings.Contains(out, "started echo.0.1") {
			return fmt.Errorf("logs: %d %q", code, out)
		}
		return nil
	})
	if out, code := harness.CLI(t, "scale", "echo", "1", "--http-addr", seed.HTTPAddr()); code != 0 {
		t.Fatalf("scale: %s", out)
	}
	retry.Until(t, 60*time.Second, func() error {
		out, code := harness.CLI(t, "ps", "--http-addr", procs[1].HTTPAddr())
		if code != 0 || strings.Count(out, " running ") != 1 {
			return fmt.Errorf("ps after scale: %d\n%s", code, out)
		}
		return nil
	})
	if out, code := harness.CLI(t, "stop", "echo", "--http-addr", seed.HTTPAddr()); code != 0 {
		t.Fatalf("stop: %s", out)
	}
	retry.Until(t, 60*time.Second, func() error {
		out, _ := harness.CLI(t, "deployments", "--http-addr", procs[2].HTTPAddr())
		if strings.Contains(out, "echo") {
			return fmt.Errorf("still listed:\n%s", out)
		}
		return nil
	})
}

// TestDeploy50Timing measures, on five processes, the time from
// `colony deploy` of 50 instances to all 50 running (logged, not asserted:
// the README's figure comes from here).
func TestDeploy50Timing(t *testing.T) {
	root := t.TempDir()
	seed := harness.Start(t, "e1", ip(61), filepath.Join(root, "e1"))
	procs := []*harness.Proc{seed}
	for i := 2; i <= 5; i++ {
		procs = append(procs, harness.Start(t, fmt.Sprintf("e%d", i), ip(60+i), filepath.Join(root, fmt.Sprintf("e%d", i)), "--join", seed.GossipAddr()))
	}
	// Wait for three voters, so the measurement is of placement, not of the cluster forming.
	retry.Until(t, 60*time.Second, func() error {
		out, code := harness.CLI(t, "raft", "peers", "--http-addr", seed.HTTPAddr())
		if code != 0 || strings.Count(out, "127.0.77.") != 3 {
			return fmt.Errorf("peers: %d\n%s", code, out)
		}
		return nil
	})
	spec := filepath.Join(root, "fifty.yaml")
	os.WriteFile(spec, []byte("name: fifty\ncount: 50\ncommand: {argv: [\"/bin/sleep\", \"600\"]}\nresources: {cpu: 10m, memory: 4MiB}\nspread: {attribute: node.name}\n"), 0o600)
	start := time.Now()
	if out, code := harness.CLI(t, "deploy", spec, "--http-addr", procs[3].HTTPAddr()); code != 0 {
		t.Fatalf("deploy: %s", out)
	}
	retry.Until(t, 60*time.Second, func() error {
		out, code := harness.CLI(t, "ps", "fifty", "--http-addr", procs[4].HTTPAddr())
		if n := strings.Count(out, " running "); code != 0 || n != 50 {
			return fmt.Errorf("%d running", n)
		}
		return nil
	})
	t.Logf("deploy of 50 instances on 5 nodes: all running after %s (measured through colony ps polling)", time.Since(start).Round(time.Millisecond))
}

// TestAntfarmDeployment: the demo workload runs as a deployment and its
// progress reaches the agent as instance metrics.
func TestAntfarmDeployment(t *testing.T) {
	root := t.TempDir()
	a := harness.Start(t, "a1", ip(71), filepath.Join(root, "a1"))
	spec := filepath.Join(root, "antfarm.yaml")
	os.WriteFile(spec, []byte(fmt.Sprintf(`name: antfarm
count: 1
command: {argv: [%q, antfarm, --jobs, "30", --iterations, "0", --report, 200ms]}
distinct_hosts: true
`, harness.Binary(t))), 0o600)
	retry.Until(t, 60*time.Second, func() error {
		out, code := harness.CLI(t, "deploy", spec, "--http-addr", a.HTTPAddr())
		if code != 0 {
			return fmt.Errorf("deploy: %d %s", code, out)
		}
		return nil
	})
	retry.Until(t, 60*time.Second, func() error {
		out, code := harness.CLI(t, "ps", "antfarm", "--format", "json", "--http-addr", a.HTTPAddr())
		if code != 0 || !strings.Contains(out, `"best_cost"`) || !strings.Contains(out, `"iterations"`) {
			return fmt.Errorf("no antfarm metrics yet: %d %s", code, out)
		}
		return nil
	})
	out, _ := harness.CLI(t, "logs", "antfarm.0.1", "--http-addr", a.HTTPAddr())
	if !strings.Contains(out, "best cost") {
		t.Fatalf("antfarm output: %q", out)
	}
}
