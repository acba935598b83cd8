// Package integration drives real colony processes on loopback addresses:
// the way an operator would, through the binary and its CLI.
package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"colony/agent"
	"colony/test/harness"
	"colony/test/retry"
)

// ip returns a loopback address reserved for this package's processes.
func ip(i int) string { return fmt.Sprintf("127.0.77.%d", i) }

func members(t *testing.T, p *harness.Proc) (map[string]agent.MemberInfo, error) {
	var ms []agent.MemberInfo
	if err := harness.CLIJSON(t, &ms, "members", "--format", "json", "--http-addr", p.HTTPAddr()); err != nil {
		return nil, err
	}
	out := map[string]agent.MemberInfo{}
	for _, m := range ms {
		out[m.Name] = m
	}
	return out, nil
}

func summary(ms map[string]agent.MemberInfo) string {
	var s []string
	for n, m := range ms {
		s = append(s, n+"="+m.Status.String())
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

// allSee waits until every given process reports exactly want.
func allSee(t *testing.T, procs []*harness.Proc, want string) {
	t.Helper()
	start := time.Now()
	defer func() {
		t.Logf("%d nodes agree on %q after %s", len(procs), want, time.Since(start).Round(time.Millisecond))
	}()
	for _, p := range procs {
		retry.Until(t, 45*time.Second, func() error {
			ms, err := members(t, p)
			if err != nil {
				return err
			}
			if got := summary(ms); got != want {
				return fmt.Errorf("%s sees %q, want %q", p.Name, got, want)
			}
			return nil
		})
	}
}

func selfID(t *testing.T, p *harness.Proc) string {
	var info struct {
		Self agent.SelfInfo `json:"self"`
	}
	retry.Until(t, 30*time.Second, func() error {
		return harness.CLIJSON(t, &info, "info", "--format", "json", "--http-addr", p.HTTPAddr())
	})
	return info.Self.Member.ID
}

// TestFiveProcesses is the operator's story: five agents join through one
// seed address; one is killed, one leaves, one restarts from its data dir
// with no --join, and a copy of a data dir is refused.
func TestFiveProcesses(t *testing.T) {
	root := t.TempDir()
	var procs []*harness.Proc
	seed := harness.Start(t, "n1", ip(1), filepath.Join(root, "n1"))
	procs = append(procs, seed)
	for i := 2; i <= 5; i++ {
		procs = append(procs, harness.Start(t, fmt.Sprintf("n%d", i), ip(i), filepath.Join(root, fmt.Sprintf("n%d", i)), "--join", seed.GossipAddr(), "--label", fmt.Sprintf("zone=z%d", i%2)))
	}
	allSee(t, procs, "n1=alive n2=alive n3=alive n4=alive n5=alive")

	// Every node gives the same answer, down to capabilities and labels.
	ref, _ := members(t, procs[0])
	for _, p := range procs[1:] {
		ms, err := members(t, p)
		if err != nil {
			t.Fatal(err)
		}
		for n, m := range ms {
			r := ref[n]
			if m.ID != r.ID || m.Address != r.Address || m.Labels["zone"] != r.Labels["zone"] || m.Capabilities != r.Capabilities {
				t.Errorf("%s and n1 disagree on %s: %+v vs %+v", p.Name, n, m, r)
			}
		}
	}

	// kill -9: the others see it dead.
	procs[4].Kill()
	allSee(t, procs[:4], "n1=alive n2=alive n3=alive n4=alive n5=dead")

	// SIGTERM: a graceful leave, exit 0, the others see it left.
	n4ID := selfID(t, procs[3])
	procs[3].Signal(syscall.SIGTERM)
	if code := procs[3].Wait(30 * time.Second); code != 0 {
		t.Fatalf("n4 exited with %d after SIGTERM:\n%s", code, procs[3].Output())
	}
	allSee(t, procs[:3], "n1=alive n2=alive n3=alive n4=left n5=dead")

	// Restart n4 from its data dir without --join: it rejoins its saved
	// peers and keeps its ID.
	n4 := harness.Start(t, "n4", ip(4), procs[3].DataDir)
	if id := selfID(t, n4); id != n4ID {
		t.Fatalf("n4's ID changed across restart: %s -> %s", n4ID, id)
	}
	allSee(t, []*harness.Proc{procs[0], procs[1], procs[2], n4}, "n1=alive n2=alive n3=alive n4=alive n5=dead")

	// A copy of n2's data dir (a cloned image) is refused with a remedy.
	clone := filepath.Join(root, "clone")
	if err := os.MkdirAll(clone, 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(procs[1].DataDir, "node-id"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(clone, "node-id"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	c := harness.Start(t, "n6", ip(6), clone, "--join", seed.GossipAddr())
	if code := c.Wait(30 * time.Second); code == 0 || code == -1 {
		t.Fatalf("clone exit code %d, want a refusal:\n%s", code, c.Output())
	}
	for _, want := range []string{"node ID already in use", "n2", filepath.Join(clone, "node-id")} {
		if !strings.Contains(c.Output(), want) {
			t.Errorf("clone's message lacks %q:\n%s", want, c.Output())
		}
	}
	allSee(t, procs[:3], "n1=alive n2=alive n3=alive n4=alive n5=dead")
}

// TestBadInputExitsClearly: every malformed input is a one-line error and a
// non-zero exit, never a panic or a hang.
func TestBadInputExitsClearly(t *testing.T) {
	dir := t.TempDir()
	cfgUnknown := filepath.Join(dir, "unknown.yaml")
	os.WriteFile(cfgUnknown, []byte("node-name: x\njoinn: [1.2.3.4]\n"), 0o600)
	cfgBad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(cfgBad, []byte("node-name: [unclosed\n"), 0o600)
	cfgType := filepath.Join(dir, "type.json")
	os.WriteFile(cfgType, []byte(`{"gossip-port": "many"}`), 0o600)
	longLabels := []string{}
	for i := 0; i < 12; i++ {
		longLabels = append(longLabels, "--label", fmt.Sprintf("k%02d%s=%s", i, strings.Repeat("k", 30), strings.Repeat("v", 30)))
	}
	base := func(name string) []string {
		return []string{"agent", "--node-name", name, "--bind", ip(20), "--data-dir", filepath.Join(dir, name), "--gossip-profile", "local"}
	}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"label", append(base("l"), "--label", "novalue"), `label "novalue": want key=value`},
		{"label key", append(base("k"), "--label", "bad key=v"), `label key "bad key"`},
		{"oversize labels", append(base("o"), longLabels...), "over the 512-byte gossip limit"},
		{"encrypt", append(base("e"), "--encrypt", "tooshort"), "encryption key"},
		{"unknown config key", append(base("u"), "--config", cfgUnknown), `unknown key(s) joinn`},
		{"broken config", append(base("b"), "--config", cfgBad), "not valid YAML"},
		{"config type", append(base("t"), "--config", cfgType), "gossip-port"},
		{"missing config", append(base("m"), "--config", filepath.Join(dir, "nope.yaml")), "no such file"},
		{"bind", append(base("i"), "--bind", "999.1.1.1"), "not an IP address"},
		{"unresolvable join", append(base("j"), "--join", "no-such-host.invalid", "--retry-max", "2", "--retry-interval", "50ms"), "could not join the cluster"},
		{"unreachable join", append(base("r"), "--join", "127.0.77.99:7946", "--retry-max", "2", "--retry-interval", "50ms"), "after 2 attempts"},
		{"log level", append(base("v"), "--log-level", "loud"), "--log-level"},
		{"stray argument", append(base("s"), "extra"), "unexpected argument"},
		{"members format", []string{"members", "--format", "xml", "--http-addr", "127.0.77.99:1"}, "--format"},
		{"no agent", []string{"members", "--http-addr", "127.0.77.99:1"}, "cannot reach the colony agent"},
		{"join no args", []string{"join", "--http-addr", "127.0.77.99:1"}, "at least one address"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, code := harness.CLI(t, c.args...)
			if code <= 0 {
				t.Fatalf("exit code %d, want a failure; output:\n%s", code, out)
			}
			if !strings.Contains(out, c.want) || strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
				t.Fatalf("want a clear error containing %q, got:\n%s", c.want, out)
			}
		})
	}
}

// TestEncryptionKeys: nodes with the same key form a cluster; a node with
// another key cannot join it.
func TestEncryptionKeys(t *testing.T) {
	key, code := harness.CLI(t, "keygen")
	other, _ := harness.CLI(t, "keygen")
	if code != 0 || key == other {
		t.Fatalf("keygen: %q %d", key, code)
	}
	key, other = strings.TrimSpace(key), strings.TrimSpace(other)
	root := t.TempDir()
	a := harness.Start(t, "k1", ip(31), filepath.Join(root, "a"), "--encrypt", key)
	b := harness.Start(t, "k2", ip(32), filepath.Join(root, "b"), "--encrypt", key, "--join", a.GossipAddr())
	allSee(t, []*harness.Proc{a, b}, "k1=alive k2=alive")
	c := harness.Start(t, "k3", ip(33), filepath.Join(root, "c"), "--encrypt", other, "--join", a.GossipAddr(), "--retry-max", "2", "--retry-interval", "100ms")
	if code := c.Wait(30 * time.Second); code <= 0 {
		t.Fatalf("node with the wrong key: exit %d\n%s", code, c.Output())
	}
	if !strings.Contains(c.Output(), "could not join") {
		t.Errorf("wrong-key node's message: %s", c.Output())
	}
	allSee(t, []*harness.Proc{a, b}, "k1=alive k2=alive")
}

// TestCLIFlagsAfterArguments: flags may follow a command's arguments.
func TestCLIFlagsAfterArguments(t *testing.T) {
	a := harness.Start(t, "f1", ip(40), filepath.Join(t.TempDir(), "f1"))
	retry.Until(t, 30*time.Second, func() error {
		out, code := harness.CLI(t, "settings", "set", "k", "v", "--http-addr", a.HTTPAddr())
		if code != 0 {
			return fmt.Errorf("exit %d: %s", code, out)
		}
		return nil
	})
	out, code := harness.CLI(t, "settings", "get", "k", "--consistency", "consistent", "--http-addr="+a.HTTPAddr())
	if code != 0 || strings.TrimSpace(out) != "v" {
		t.Fatalf("settings get with trailing flags: %d %q", code, out)
	}
}
