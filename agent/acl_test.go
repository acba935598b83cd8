package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"colony/consensus"
	"colony/test/retry"
)

// ACL tests use 127.0.130.0-127.0.139.255.

const testAgentToken = "agent-secret-for-tests-0123456789"

func withACL(defaultRead string) func(*Config) {
	return func(c *Config) {
		c.ACLEnabled = true
		c.ACLAgentToken = testAgentToken
		c.ACLDefaultRead = defaultRead
	}
}

// call sends one request with an optional token and returns the status
// and body.
func call(addr, method, path, token string, body any) (int, string, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, rd)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set(HeaderToken, token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func tokenClient(a *Agent, tok string) *Client {
	c, _ := NewClient(a.HTTPAddr())
	c.SetToken(tok)
	return c
}

func createToken(t *testing.T, a *Agent, mgmt, policy string) ACLTokenInfo {
	t.Helper()
	var ti ACLTokenInfo
	retry.Until(t, 20*time.Second, func() error {
		return tokenClient(a, mgmt).Do(context.Background(), "PUT", "/v1/acl/token", ACLTokenRequest{Policy: policy, Description: "test " + policy}, &ti)
	})
	if ti.SecretID == "" || ti.AccessorID == "" || ti.Policy != policy {
		t.Fatalf("created token %+v", ti)
	}
	return ti
}

func bootstrap(t *testing.T, a *Agent) ACLTokenInfo {
	t.Helper()
	var ti ACLTokenInfo
	retry.Until(t, 30*time.Second, func() error {
		return tokenClient(a, "").Do(context.Background(), "POST", "/v1/acl/bootstrap", nil, &ti)
	})
	if ti.Policy != consensus.PolicyManagement || ti.SecretID == "" {
		t.Fatalf("bootstrap token %+v", ti)
	}
	return ti
}

// concretePath fills a route pattern's wildcards with plausible values.
func concretePath(p string) string {
	r := strings.NewReplacer("{name}", "web", "{key}", "k", "{node}", "n1", "{id}", "i-1",
		"{accessor}", "00000000-0000-4000-8000-000000000000")
	return r.Replace(p)
}

// publicWrites are the only mutating routes callable without a token.
var publicWrites = map[string]bool{"POST /v1/acl/bootstrap": true}

// TestACLEveryRoute walks every route the router registered: with ACLs on
// and anonymous reads denied, every route but the public ones refuses a
// request without a token (401); every mutating route also refuses a
// read-only token (403) with a message naming the policy needed. A new
// endpoint registered with too weak an access fails here.
func TestACLEveryRoute(t *testing.T) {
	c := newCluster(t, 130)
	a := c.start(1, withACL(ACLDeny), func(cfg *Config) { cfg.MetricsAddr = c.ip(1) + ":9100" })
	retry.Until(t, 30*time.Second, func() error {
		if n := a.raftNode(); n == nil || !n.IsLeader() {
			return fmt.Errorf("no leader yet")
		}
		return nil
	})
	mgmt := bootstrap(t, a)
	// Bootstrap works once: the second is refused, and says why.
	code, body, err := call(a.HTTPAddr(), "POST", "/v1/acl/bootstrap", "", nil)
	if err != nil || code != http.StatusForbidden || !strings.Contains(body, "no longer allowed") {
		t.Fatalf("second bootstrap: %d %s %v", code, body, err)
	}
	ro := createToken(t, a, mgmt.SecretID, consensus.PolicyReadOnly)

	routes := a.Routes()
	if len(routes) < 40 {
		t.Fatalf("only %d routes listed", len(routes))
	}
	for _, rt := range routes {
		name := rt.Method + " " + rt.Path
		path := concretePath(rt.Path)
		mutating := rt.Method != http.MethodGet && rt.Method != http.MethodHead
		if rt.Access == AccessPublic {
			if mutating && !publicWrites[name] {
				t.Errorf("%s: a mutating route is public", name)
			}
			continue
		}
		if mutating && (rt.Access == AccessRead || rt.Access == AccessMetrics) {
			t.Errorf("%s: a mutating route declares %s access", name, rt.Access)
			continue
		}
		code, body, err := call(a.HTTPAddr(), rt.Method, path, "", nil)
		if err != nil || code != http.StatusUnauthorized || !strings.Contains(body, "needs a token with policy") {
			t.Errorf("%s without a token: %d %s %v", name, code, body, err)
		}
		code, body, err = call(a.HTTPAddr(), rt.Method, path, "not-a-known-token", nil)
		if err != nil || code != http.StatusUnauthorized || !strings.Contains(body, "token not found") {
			t.Errorf("%s with an unknown token: %d %s %v", name, code, body, err)
		}
		if rt.Access == AccessRead || rt.Access == AccessMetrics {
			continue // a read token may read: the handler answers
		}
		code, body, err = call(a.HTTPAddr(), rt.Method, path, ro.SecretID, nil)
		if err != nil || code != http.StatusForbidden || !strings.Contains(body, "needs policy") {
			t.Errorf("%s with a read-only token: %d %s %v", name, code, body, err)
		}
	}

	// Reads with the read token are served; the agent token reaches the
	// internal endpoints but may not deploy.
	if code, body, _ := call(a.HTTPAddr(), "GET", "/v1/members", ro.SecretID, nil); code != http.StatusOK {
		t.Errorf("read with a read token: %d %s", code, body)
	}
	if code, body, _ := call(a.HTTPAddr(), "GET", "/v1/acl/replica", testAgentToken, nil); code != http.StatusOK || !strings.Contains(body, mgmt.AccessorID) || strings.Contains(body, mgmt.SecretID) {
		t.Errorf("replica with the agent token: %d %s", code, body)
	}
	if code, body, _ := call(a.HTTPAddr(), "PUT", "/v1/deployments", testAgentToken, nil); code != http.StatusForbidden || !strings.Contains(body, "deploy or management") {
		t.Errorf("deploy with the agent token: %d %s", code, body)
	}
	// Token list shows accessors, never secrets or hashes.
	code, body, _ = call(a.HTTPAddr(), "GET", "/v1/acl/tokens", mgmt.SecretID, nil)
	if code != http.StatusOK || !strings.Contains(body, ro.AccessorID) || strings.Contains(body, ro.SecretID) || strings.Contains(body, consensus.HashSecret(ro.SecretID)) {
		t.Errorf("token list: %d %s", code, body)
	}
	// --metrics-addr serves metrics without a token; the API's /metrics needs one.
	if code, body, err := httpGet("http://" + c.ip(1) + ":9100/metrics"); err != nil || code != http.StatusOK || !strings.Contains(body, "colony_agent_info") {
		t.Errorf("metrics address: %d %v", code, err)
	}
	if code, _, _ := call(a.HTTPAddr(), "PUT", "/metrics", "", nil); code != http.StatusMethodNotAllowed {
		t.Errorf("PUT /metrics: %d", code)
	}
	// A malformed header is refused, not guessed at.
	req, _ := http.NewRequest("GET", "http://"+a.HTTPAddr()+"/v1/members", nil)
	req.Header.Add(HeaderToken, ro.SecretID)
	req.Header.Add(HeaderToken, mgmt.SecretID)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("two tokens: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

// TestACLMetricsRequireToken: reads open to anonymous callers, but
// --metrics-require-token closes /metrics.
func TestACLMetricsRequireToken(t *testing.T) {
	c := newCluster(t, 131)
	a := c.start(1, withACL(ACLAllow), func(cfg *Config) { cfg.MetricsRequireToken = true })
	if code, body, _ := call(a.HTTPAddr(), "GET", "/v1/members", "", nil); code != http.StatusOK {
		t.Fatalf("anonymous read: %d %s", code, body)
	}
	if code, body, _ := call(a.HTTPAddr(), "PUT", "/v1/settings/k", "", SettingRequest{Value: "v"}); code != http.StatusUnauthorized || !strings.Contains(body, "operator or management") {
		t.Fatalf("anonymous write: %d %s", code, body)
	}
	if code, body, _ := call(a.HTTPAddr(), "GET", "/metrics", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("anonymous scrape: %d %s", code, body)
	}
	retry.Until(t, 30*time.Second, func() error {
		if n := a.raftNode(); n == nil || !n.IsLeader() {
			return fmt.Errorf("no leader yet")
		}
		return nil
	})
	mgmt := bootstrap(t, a)
	ro := createToken(t, a, mgmt.SecretID, consensus.PolicyReadOnly)
	if code, _, _ := call(a.HTTPAddr(), "GET", "/metrics", ro.SecretID, nil); code != http.StatusOK {
		t.Fatalf("scrape with a read token: %d", code)
	}
}

func TestACLConfigErrors(t *testing.T) {
	for name, mut := range map[string]func(*Config){
		"no agent token":       func(c *Config) { c.ACLEnabled = true },
		"short agent token":    func(c *Config) { c.ACLEnabled, c.ACLAgentToken = true, "short" },
		"agent token spaces":   func(c *Config) { c.ACLEnabled, c.ACLAgentToken = true, "a token with spaces in it" },
		"bad default read":     func(c *Config) { c.ACLDefaultRead = "maybe" },
		"metrics without acls": func(c *Config) { c.MetricsRequireToken = true },
		"bad metrics addr":     func(c *Config) { c.MetricsAddr = "nowhere" },
	} {
		cfg := testConfig(t, "x", t.TempDir())
		mut(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRouteWithoutAccessPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("a route without an access policy was registered")
		}
	}()
	r := newRouter(func(_ Route, h http.HandlerFunc) http.HandlerFunc { return h })
	r.handle("PUT", "/v1/new", Access(0), func(http.ResponseWriter, *http.Request) {})
}

// TestACLCluster: four agents with ACLs on and anonymous reads denied.
// Cluster formation (voter promotion over the internal API), assignment
// and monitoring long polls work with the agent token; bootstrap and token
// writes sent to a non-leader are forwarded with the client's token; the
// non-voter learns new tokens and deletions through its replica.
func TestACLCluster(t *testing.T) {
	c := newCluster(t, 132)
	for i := 1; i <= 4; i++ {
		c.start(i, withACL(ACLDeny))
	}
	// Voters are promoted through /v1/internal/raft/enable (agent token).
	var leader *Agent
	retry.Until(t, 60*time.Second, func() error {
		leader = nil
		voters := 0
		for _, a := range c.live() {
			if n := a.raftNode(); n != nil {
				voters++
				if n.IsLeader() {
					leader = a
				}
			}
		}
		if leader == nil || voters != 3 {
			return fmt.Errorf("leader %v, %d voters", leader != nil, voters)
		}
		return nil
	})
	var nonVoter, follower *Agent
	for _, a := range c.live() {
		if a.raftNode() == nil {
			nonVoter = a
		} else if a != leader {
			follower = a
		}
	}
	// Bootstrap through a follower: forwarded to the leader.
	mgmt := bootstrap(t, follower)
	if code, body, _ := call(nonVoter.HTTPAddr(), "POST", "/v1/acl/bootstrap", "", nil); code != http.StatusForbidden {
		t.Fatalf("second bootstrap through the non-voter: %d %s", code, body)
	}
	// Token writes from a non-voter, forwarded with the client's token.
	op := createToken(t, nonVoter, mgmt.SecretID, consensus.PolicyOperator)
	dep := createToken(t, follower, mgmt.SecretID, consensus.PolicyDeploy)

	// Every node learns the new tokens (voters from their state, the
	// non-voter from its replica) and applies their policy.
	for _, a := range c.live() {
		retry.Until(t, 20*time.Second, func() error {
			code, body, err := call(a.HTTPAddr(), "PUT", "/v1/settings/who", op.SecretID, SettingRequest{Value: a.Name()})
			if err != nil || code != http.StatusOK {
				return fmt.Errorf("%s: operator write: %d %s %v", a.Name(), code, body, err)
			}
			code, body, err = call(a.HTTPAddr(), "PUT", "/v1/settings/who", dep.SecretID, SettingRequest{Value: "x"})
			if err != nil || code != http.StatusForbidden {
				return fmt.Errorf("%s: deploy token writing a setting: %d %s %v", a.Name(), code, body, err)
			}
			code, body, err = call(a.HTTPAddr(), "GET", "/v1/settings/who", dep.SecretID, nil)
			if err != nil || code != http.StatusOK {
				return fmt.Errorf("%s: read with the deploy token: %d %s %v", a.Name(), code, body, err)
			}
			return nil
		})
		if code, body, _ := call(a.HTTPAddr(), "GET", "/v1/settings/who", "", nil); code != http.StatusUnauthorized {
			t.Fatalf("%s: anonymous read with default-read deny: %d %s", a.Name(), code, body)
		}
	}
	// A stale read from a non-voter is served by a voter, with the client's token.
	if code, body, _ := call(nonVoter.HTTPAddr(), "GET", "/v1/settings/who?consistency=stale", op.SecretID, nil); code != http.StatusOK {
		t.Fatalf("stale read through the non-voter: %d %s", code, body)
	}
	// Monitoring reports and plan long polls use the agent token.
	cv := func() error {
		var v ClusterMetrics
		if err := tokenClient(nonVoter, op.SecretID).Do(context.Background(), "GET", "/v1/cluster/metrics?by=all", nil, &v); err != nil {
			return err
		}
		if v.Nodes["alive"] != 4 {
			return fmt.Errorf("cluster view has %v", v.Nodes)
		}
		return nil
	}
	retry.Until(t, 60*time.Second, cv)

	// A deployment committed with the deploy token runs on every node, the
	// non-voter included (its assignment long poll uses the agent token);
	// the instance status fan-out carries the client's token.
	req, _ := http.NewRequest("PUT", "http://"+nonVoter.HTTPAddr()+"/v1/deployments", strings.NewReader(`name: sleeper
count: 4
command: {argv: ["/bin/sh", "-c", "exec sleep 600"]}
distinct_hosts: true
`))
	req.Header.Set(HeaderToken, dep.SecretID)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("deploy with the deploy token: %d %s", resp.StatusCode, b)
	}
	retry.Until(t, 60*time.Second, func() error {
		var is []InstanceInfo
		if err := tokenClient(nonVoter, dep.SecretID).Do(context.Background(), "GET", "/v1/deployments/sleeper/instances", nil, &is); err != nil {
			return err
		}
		if len(is) != 4 {
			return fmt.Errorf("%d instances", len(is))
		}
		for _, i := range is {
			if i.Status == nil || i.Status.State != "running" {
				return fmt.Errorf("%s on %s: %+v %s", i.ID, i.NodeName, i.Status, i.Error)
			}
		}
		return nil
	})

	// Deleting a token takes effect on every node, the non-voter included.
	var ts []ACLTokenInfo
	if err := tokenClient(nonVoter, mgmt.SecretID).Do(context.Background(), "GET", "/v1/acl/tokens", nil, &ts); err != nil || len(ts) != 3 {
		t.Fatalf("token list: %v %v", ts, err)
	}
	if code, body, _ := call(nonVoter.HTTPAddr(), "DELETE", "/v1/acl/token/"+op.AccessorID, mgmt.SecretID, nil); code != http.StatusOK {
		t.Fatalf("delete: %d %s", code, body)
	}
	for _, a := range c.live() {
		retry.Until(t, 20*time.Second, func() error {
			code, body, err := call(a.HTTPAddr(), "GET", "/v1/settings/who", op.SecretID, nil)
			if err != nil || code != http.StatusUnauthorized {
				return fmt.Errorf("%s: deleted token: %d %s %v", a.Name(), code, body, err)
			}
			return nil
		})
	}
	if code, body, _ := call(leader.HTTPAddr(), "DELETE", "/v1/acl/token/"+op.AccessorID, mgmt.SecretID, nil); code != http.StatusNotFound {
		t.Fatalf("deleting twice: %d %s", code, body)
	}
	if code, body, _ := call(leader.HTTPAddr(), "DELETE", "/v1/acl/token/"+mgmt.AccessorID, mgmt.SecretID, nil); code != http.StatusConflict || !strings.Contains(body, "last management") {
		t.Fatalf("deleting the last management token: %d %s", code, body)
	}
}

// FuzzParseToken: no header makes parsing panic; what it accepts is a
// valid token that parses back to itself.
func FuzzParseToken(f *testing.F) {
	for _, s := range [][2]string{
		{"", ""},
		{"0b2f1b1e-5c5e-4a86-9b0c-7b7e3d0e9a11", ""},
		{"", "Bearer 0b2f1b1e-5c5e-4a86-9b0c-7b7e3d0e9a11"},
		{"abc", "Bearer abc"},
		{"abc", "Bearer abd"},
		{"", "Basic dXNlcjpwYXNz"},
		{"", "bearer"},
		{"", "Bearer    "},
		{" spaced ", ""},
		{"tab\tinside", ""},
		{"\x00\xff", ""},
		{strings.Repeat("x", 300), ""},
		{"ünïcode", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, tokenHeader, authHeader string) {
		h := http.Header{}
		if tokenHeader != "" {
			h.Set(HeaderToken, tokenHeader)
		}
		if authHeader != "" {
			h.Set("Authorization", authHeader)
		}
		tok, err := ParseToken(h)
		if err != nil {
			if tok != "" {
				t.Fatal("a token returned with an error")
			}
			return
		}
		if tok == "" {
			return
		}
		if err := ValidateToken(tok); err != nil {
			t.Fatalf("accepted an invalid token %q: %v", tok, err)
		}
		again, err := ParseToken(http.Header{HeaderToken: {tok}})
		if err != nil || again != tok {
			t.Fatalf("%q parses back as %q, %v", tok, again, err)
		}
		if HashSecret := consensus.HashSecret(tok); len(HashSecret) != 64 {
			t.Fatalf("hash %q", HashSecret)
		}
	})
}

// BenchmarkTokenCheck is the per-request cost of the ACL check outside the
// handler: parse the header, hash the secret, look the hash up.
func BenchmarkTokenCheck(b *testing.B) {
	st := consensus.NewState()
	h := http.Header{HeaderToken: {"0b2f1b1e-5c5e-4a86-9b0c-7b7e3d0e9a11"}}
	for b.Loop() {
		tok, err := ParseToken(h)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = st.ACLTokenBySecretHash(consensus.HashSecret(tok))
	}
}

// TestChildSecurityCarriesACL: agents a local pool launches get the ACL
// switch on their command line and the agent token in their environment
// (never on a command line), before the pool's own entries.
func TestChildSecurityCarriesACL(t *testing.T) {
	cfg := testConfig(t, "acl-child", t.TempDir())
	cfg.BindAddr = "127.0.135.1"
	cfg.HTTPAddr = "127.0.135.1:0"
	withACL(ACLDeny)(&cfg)
	a := startAgent(t, cfg)
	pool := map[string]any{"args": []any{"--label", "x=y"}, "env": []any{"A=B"}}
	a.childSecurity(pool)
	args := fmt.Sprint(pool["args"])
	if !strings.Contains(args, "--acl-enabled --acl-default-read deny") || !strings.HasSuffix(args, "--label x=y]") || strings.Contains(args, testAgentToken) {
		t.Errorf("args %s", args)
	}
	env := fmt.Sprint(pool["env"])
	if !strings.Contains(env, "COLONY_ACL_AGENT_TOKEN="+testAgentToken) || !strings.HasSuffix(env, "A=B]") {
		t.Errorf("env %s", env)
	}
}
