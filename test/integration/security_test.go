package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"colony/test/harness"
	"colony/test/retry"
)

// TestSecurityThroughCLI: an operator creates a CA and certificates with
// `colony tls`, runs a cluster with gossip encryption, a cluster label and
// mutual TLS, rotates the gossip key with `colony keyring`, renews a
// certificate with SIGHUP, and restarts a node that rejoins with its saved
// keyring. Addresses 127.0.126.x.
func TestSecurityThroughCLI(t *testing.T) {
	dir := t.TempDir()
	run := func(want int, args ...string) string {
		t.Helper()
		out, code := harness.CLI(t, args...)
		if code != want {
			t.Fatalf("colony %s: exit %d, want %d: %s", strings.Join(args, " "), code, want, out)
		}
		return out
	}
	out := run(0, "tls", "ca", "create", "--dir", dir)
	if !strings.Contains(out, filepath.Join(dir, "colony-agent-ca.pem")) {
		t.Fatalf("ca create printed %q", out)
	}
	ca, cakey := filepath.Join(dir, "colony-agent-ca.pem"), filepath.Join(dir, "colony-agent-ca-key.pem")
	for _, n := range []string{"s1", "s2"} {
		run(0, "tls", "cert", "create", "--node", n, "--dir", dir, "--ca", ca, "--ca-key", cakey)
	}
	run(0, "tls", "cert", "create", "--node", "ops", "--client", "--dir", dir, "--ca", ca, "--ca-key", cakey)
	run(1, "tls", "cert", "create", "--node", "s1", "--dir", dir, "--ca", ca, "--ca-key", cakey) // never overwrites
	key := strings.TrimSpace(run(0, "keygen"))

	ipOf := func(i int) string { return fmt.Sprintf("127.0.126.%d", i) }
	start := func(i int, data string, extra ...string) *harness.Proc {
		name := fmt.Sprintf("s%d", i)
		args := append([]string{
			"--tls-verify-incoming", // a bool flag first: the flags after it keep their values
			"--http-addr", ipOf(i) + ":7070", "--cluster-label", "prod",
			"--tls-ca", ca, "--tls-cert", filepath.Join(dir, "colony-"+name+".pem"), "--tls-key", filepath.Join(dir, "colony-"+name+"-key.pem"),
		}, extra...)
		return harness.Start(t, name, ipOf(i), data, args...)
	}
	d1, d2 := t.TempDir(), t.TempDir()
	s1 := start(1, d1, "--encrypt", key)
	s2 := start(2, d2, "--encrypt", key, "--join", ipOf(1)+":7946")

	tlsFlags := []string{"--tls-ca", ca, "--tls-cert", filepath.Join(dir, "colony-ops.pem"), "--tls-key", filepath.Join(dir, "colony-ops-key.pem")}
	cli := func(want int, addr string, args ...string) string {
		t.Helper()
		return run(want, append(append(args, "--http-addr", addr), tlsFlags...)...)
	}
	seeBoth := func() {
		t.Helper()
		for _, p := range []*harness.Proc{s1, s2} {
			retry.Until(t, 30*time.Second, func() error {
				out, code := harness.CLI(t, append([]string{"members", "--http-addr", p.HTTPAddr()}, tlsFlags...)...)
				if code != 0 || strings.Count(out, "alive") != 2 {
					return fmt.Errorf("%s: exit %d: %s", p.Name, code, out)
				}
				return nil
			})
		}
	}
	seeBoth()
	if out := run(1, "members", "--http-addr", s1.HTTPAddr()); !strings.Contains(out, "serves TLS only") {
		t.Fatalf("plain client: %s", out)
	}
	if out := run(1, "members", "--http-addr", s1.HTTPAddr(), "--tls-ca", ca); !strings.Contains(out, "certificate required") {
		t.Fatalf("client without certificate under mutual TLS: %s", out)
	}

	// Rotate the gossip key.
	next := strings.TrimSpace(run(0, "keygen"))
	if out := cli(0, s2.HTTPAddr(), "keyring", "install", next); !strings.Contains(out, "2 of 2") {
		t.Fatalf("install: %s", out)
	}
	cli(0, s1.HTTPAddr(), "keyring", "use", next)
	if out := cli(1, s1.HTTPAddr(), "keyring", "remove", next); !strings.Contains(out, "primary key") {
		t.Fatalf("removing the primary key: %s", out)
	}
	cli(0, s1.HTTPAddr(), "keyring", "remove", key)
	out = cli(0, s2.HTTPAddr(), "keyring", "list")
	if !strings.Contains(out, next+" [2/2]  primary on 2") || strings.Contains(out, key) {
		t.Fatalf("list after rotation: %s", out)
	}
	seeBoth()

	// Renew s1's certificate: SIGHUP reloads it.
	for _, f := range []string{"colony-s1.pem", "colony-s1-key.pem"} {
		if err := os.Rename(filepath.Join(dir, f), filepath.Join(dir, "old-"+f)); err != nil {
			t.Fatal(err)
		}
	}
	run(0, "tls", "cert", "create", "--node", "s1", "--dir", dir, "--ca", ca, "--ca-key", cakey)
	s1.Signal(syscall.SIGHUP)
	retry.Until(t, 10*time.Second, func() error {
		if !strings.Contains(s1.Output(), "reloaded TLS certificate") {
			return fmt.Errorf("s1 did not log the reload")
		}
		return nil
	})
	seeBoth()

	// s2 restarts without --encrypt: its saved keyring (the new key) lets
	// it rejoin.
	s2.Kill()
	s2 = start(2, d2, "--join", ipOf(1)+":7946")
	seeBoth()
}
