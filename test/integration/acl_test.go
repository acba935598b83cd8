package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"colony/agent"
	"colony/test/harness"
	"colony/test/retry"
)

// aclIP is a loopback address reserved for the ACL tests (127.0.134.x).
func aclIP(i int) string { return fmt.Sprintf("127.0.134.%d", i) }

// TestACLThroughCLI: two processes with ACLs on, one configured by file
// and one by flags, driven through the CLI: bootstrap once (through the
// node that does not lead), tokens created, listed and used, refusals
// that say which policy is needed, and bad ACL flags refused at start.
func TestACLThroughCLI(t *testing.T) {
	dir := t.TempDir()
	const agentTok = "integration-agent-token-0123"
	cfg := filepath.Join(dir, "acl.yaml")
	if err := os.WriteFile(cfg, []byte("acl-enabled: true\nacl-default-read: deny\nacl-agent-token: "+agentTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p1 := harness.Start(t, "a1", aclIP(1), filepath.Join(dir, "a1"), "--config", cfg)
	p2 := harness.Start(t, "a2", aclIP(2), filepath.Join(dir, "a2"), "--join", p1.GossipAddr(),
		"--acl-enabled", "--acl-default-read", "deny", "--acl-agent-token", agentTok)

	var mgmt agent.ACLTokenInfo
	retry.Until(t, 45*time.Second, func() error {
		return harness.CLIJSON(t, &mgmt, "acl", "bootstrap", "--format", "json", "--http-addr", p2.HTTPAddr())
	})
	if mgmt.Policy != "management" || mgmt.SecretID == "" {
		t.Fatalf("bootstrap: %+v", mgmt)
	}
	if out, code := harness.CLI(t, "acl", "bootstrap", "--http-addr", p1.HTTPAddr()); code != 1 || !strings.Contains(out, "ACL bootstrap no longer allowed") {
		t.Fatalf("second bootstrap: exit %d: %s", code, out)
	}
	var ro agent.ACLTokenInfo
	if err := harness.CLIJSON(t, &ro, "acl", "token", "create", "--policy", "read-only", "--description", "dashboards", "--format", "json", "--token", mgmt.SecretID, "--http-addr", p2.HTTPAddr()); err != nil {
		t.Fatal(err)
	}
	var list []agent.ACLTokenInfo
	if err := harness.CLIJSON(t, &list, "acl", "token", "list", "--format", "json", "--token", mgmt.SecretID, "--http-addr", p1.HTTPAddr()); err != nil || len(list) != 2 {
		t.Fatalf("token list: %v %v", list, err)
	}
	if out, code := harness.CLI(t, "members", "--http-addr", p1.HTTPAddr()); code != 1 || !strings.Contains(out, "(401)") || !strings.Contains(out, "--token") {
		t.Fatalf("members without a token: exit %d: %s", code, out)
	}
	retry.Until(t, 20*time.Second, func() error {
		out, code := harness.CLI(t, "members", "--token", ro.SecretID, "--http-addr", p2.HTTPAddr())
		if code != 0 || !strings.Contains(out, "a1") {
			return fmt.Errorf("members with a read token: exit %d: %s", code, out)
		}
		return nil
	})
	if out, code := harness.CLI(t, "settings", "set", "k", "v", "--token", ro.SecretID, "--http-addr", p2.HTTPAddr()); code != 1 || !strings.Contains(out, "(403)") || !strings.Contains(out, "operator or management") {
		t.Fatalf("write with a read token: exit %d: %s", code, out)
	}
	if out, code := harness.CLI(t, "settings", "set", "k", "v", "--token", mgmt.SecretID, "--http-addr", p2.HTTPAddr()); code != 0 {
		t.Fatalf("write with the management token: exit %d: %s", code, out)
	}
	if out, code := harness.CLI(t, "acl", "token", "delete", ro.AccessorID, "--token", mgmt.SecretID, "--http-addr", p2.HTTPAddr()); code != 0 {
		t.Fatalf("delete: exit %d: %s", code, out)
	}
	retry.Until(t, 20*time.Second, func() error {
		out, code := harness.CLI(t, "members", "--token", ro.SecretID, "--http-addr", p2.HTTPAddr())
		if code != 1 || !strings.Contains(out, "token not found") {
			return fmt.Errorf("members with a deleted token: exit %d: %s", code, out)
		}
		return nil
	})

	base := func(name string) []string {
		return []string{"agent", "--node-name", name, "--bind", aclIP(20), "--data-dir", filepath.Join(dir, name), "--gossip-profile", "local"}
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"acl without agent token", append(base("x1"), "--acl-enabled"), "--acl-enabled needs --acl-agent-token"},
		{"short agent token", append(base("x2"), "--acl-enabled", "--acl-agent-token", "short"), "at least 16 characters"},
		{"default read", append(base("x3"), "--acl-default-read", "sometimes"), "want allow or deny"},
		{"metrics token without acl", append(base("x4"), "--metrics-require-token"), "needs --acl-enabled"},
		{"bad token", []string{"members", "--token", "has space", "--http-addr", "127.0.134.99:1"}, "--token"},
		{"bad policy", []string{"acl", "token", "create", "--policy", "root", "--http-addr", "127.0.134.99:1"}, "want one of read-only"},
	} {
		out, code := harness.CLI(t, c.args...)
		if code <= 0 || !strings.Contains(out, c.want) || strings.Contains(out, "panic") {
			t.Errorf("%s: exit %d, want a clear error containing %q, got:\n%s", c.name, code, c.want, out)
		}
	}
}
