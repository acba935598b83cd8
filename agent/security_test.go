package agent

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"colony/agent/tlsutil"
	"colony/gossip"
	"colony/test/retry"
)

// Security tests use 127.0.120.0-127.0.129.255.

func newKey(t *testing.T, b byte) string {
	t.Helper()
	k := make([]byte, 32)
	for i := range k {
		k[i] = b + byte(i)
	}
	return base64.StdEncoding.EncodeToString(k)
}

// secConfig is a test agent on ip with the default ports.
func secConfig(t *testing.T, name, ip string) Config {
	cfg := testConfig(t, name, t.TempDir())
	cfg.BindAddr = ip
	cfg.GossipPort = DefaultGossipPort
	cfg.RaftPort = DefaultRaftPort
	cfg.HTTPAddr = ip + ":7070"
	cfg.RetryMax = 2
	return cfg
}

// joinFails starts an agent that must not be able to join seed.
func joinFails(t *testing.T, cfg Config, seed string) error {
	t.Helper()
	cfg.Join = []string{seed}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = a.Start(ctx)
	if err == nil {
		t.Fatalf("%s joined %s, want a refusal", cfg.NodeName, seed)
	}
	return err
}

// TestGossipKeyRequiredToJoin: a node without the cluster's key, or with
// another key, cannot join; the cluster never lists it.
func TestGossipKeyRequiredToJoin(t *testing.T) {
	cfg := secConfig(t, "k1", "127.0.120.1")
	cfg.EncryptKey = newKey(t, 1)
	seed := startAgent(t, cfg)

	err := joinFails(t, secConfig(t, "plain", "127.0.120.2"), seed.GossipAddr())
	t.Logf("without key: %v", err)
	if !strings.Contains(err.Error(), "--encrypt") {
		t.Fatalf("join error %v does not name --encrypt", err)
	}
	other := secConfig(t, "otherkey", "127.0.120.3")
	other.EncryptKey = newKey(t, 2)
	err = joinFails(t, other, seed.GossipAddr())
	t.Logf("other key: %v", err)
	if !errors.Is(err, gossip.ErrJoinFailed) {
		t.Fatalf("join error %v, want ErrJoinFailed", err)
	}
	if n := len(seed.Gossip().Members()); n != 1 {
		t.Fatalf("seed lists %d members, want only itself", n)
	}
	// The same key joins.
	good := secConfig(t, "k2", "127.0.120.4")
	good.EncryptKey = cfg.EncryptKey
	good.Join = []string{seed.GossipAddr()}
	startAgent(t, good)
	allSee(t, []*Agent{seed}, "k1=alive k2=alive")
}

// TestClusterLabelKeepsClustersApart: two clusters with different labels
// (and the same key) on one address range never merge, even when told to
// join each other; an unlabelled node joins neither.
func TestClusterLabelKeepsClustersApart(t *testing.T) {
	key := newKey(t, 3)
	start := func(name, ip, label string, join ...string) *Agent {
		cfg := secConfig(t, name, ip)
		cfg.EncryptKey = key
		cfg.ClusterLabel = label
		cfg.Join = join
		return startAgent(t, cfg)
	}
	a1 := start("a1", "127.0.121.1", "alpha")
	a2 := start("a2", "127.0.121.2", "alpha", a1.GossipAddr())
	b1 := start("b1", "127.0.121.3", "beta")
	b2 := start("b2", "127.0.121.4", "beta", b1.GossipAddr())

	// Told to join across: refused both ways.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client(t, b2).Join(ctx, []string{a1.GossipAddr(), a2.GossipAddr()}); err == nil {
		t.Fatal("beta node joined alpha")
	}
	if _, err := client(t, a2).Join(ctx, []string{b1.GossipAddr()}); err == nil {
		t.Fatal("alpha node joined beta")
	}
	nolabel := secConfig(t, "none", "127.0.121.5")
	nolabel.EncryptKey = key
	t.Logf("unlabelled: %v", joinFails(t, nolabel, a1.GossipAddr()))

	// Let every node probe and push-pull a few times, then check.
	gossipRounds(t, []*Agent{a1, a2, b1, b2}, 5, 1)
	allSee(t, []*Agent{a1, a2}, "a1=alive a2=alive")
	allSee(t, []*Agent{b1, b2}, "b1=alive b2=alive")
}

// gossipRounds waits until every agent has run probes more probes and
// pushPulls more full-state syncs: gossip had its chance to go wrong.
func gossipRounds(t *testing.T, agents []*Agent, probes, pushPulls uint64) {
	t.Helper()
	start := make([]gossip.Stats, len(agents))
	for i, a := range agents {
		start[i] = a.Gossip().Stats()
	}
	retry.Until(t, 30*time.Second, func() error {
		for i, a := range agents {
			st := a.Gossip().Stats()
			if st.Probes < start[i].Probes+probes || st.PushPulls < start[i].PushPulls+pushPulls {
				return fmt.Errorf("%s: %d probes, %d push-pulls since the start", a.Name(), st.Probes-start[i].Probes, st.PushPulls-start[i].PushPulls)
			}
		}
		return nil
	})
}

// keyringOf is a's keyring, primary first.
func keyringOf(t *testing.T, a *Agent) gossip.Keyring {
	t.Helper()
	kr, err := a.Gossip().Keys()
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// TestKeyRotationUnderTraffic: install a new key, use it, remove the old
// one while writes flow through every node: every write succeeds, the
// cluster stays converged, removing the primary key is refused, and a
// restarted node comes back with the rotated keyring from its data dir.
func TestKeyRotationUnderTraffic(t *testing.T) {
	c := newCluster(t, 122)
	old, next := newKey(t, 10), newKey(t, 50)
	withKey := func(cfg *Config) { cfg.EncryptKey = old }
	for i := 1; i <= 4; i++ {
		c.start(i, withKey)
	}
	c.agreeOnLeader(3, 30*time.Second)
	all := "n1=alive n2=alive n3=alive n4=alive"
	allSee(t, c.live(), all)

	// Traffic: writes through every node, and membership checks.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var writes, failures atomic.Int64
	var firstErr atomic.Value
	for _, a := range c.live() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				if _, err := set(t, a, "rot-"+a.Name(), fmt.Sprint(i)); err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Errorf("write through %s: %w", a.Name(), err))
				}
				writes.Add(1)
				time.Sleep(20 * time.Millisecond) // pacing, not synchronisation
			}
		}()
	}
	defer func() { stop(); wg.Wait() }()

	cl := client(t, c.agent("n2"))
	rctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := cl.Keyring(rctx, "list", "")
	if err != nil || resp.NumNodes != 4 || resp.Keys[old] != 4 || resp.PrimaryKeys[old] != 4 {
		t.Fatalf("list before: %+v %v", resp, err)
	}
	if resp, err = cl.Keyring(rctx, KeyringInstall, next); err != nil || resp.NumOK != 4 {
		t.Fatalf("install: %+v %v", resp, err)
	}
	gossipRounds(t, c.live(), 3, 0) // gossip runs with two keys
	if resp, err = cl.Keyring(rctx, KeyringUse, next); err != nil || resp.NumOK != 4 {
		t.Fatalf("use: %+v %v", resp, err)
	}
	_, err = cl.Keyring(rctx, KeyringRemove, next)
	if err == nil || !strings.Contains(err.Error(), "primary key") {
		t.Fatalf("removing the primary key: err %v, want a refusal naming the primary key", err)
	}
	gossipRounds(t, c.live(), 3, 0) // everyone encrypts with the new key
	if resp, err = cl.Keyring(rctx, KeyringRemove, old); err != nil || resp.NumOK != 4 {
		t.Fatalf("remove: %+v %v", resp, err)
	}
	resp, err = cl.Keyring(rctx, "list", "")
	if err != nil || len(resp.Keys) != 1 || resp.Keys[next] != 4 || resp.PrimaryKeys[next] != 4 {
		t.Fatalf("list after: %+v %v", resp, err)
	}
	// Still converged, with only the new key, through a few probe rounds.
	gossipRounds(t, c.live(), 5, 1)
	allSee(t, c.live(), all)
	before := writes.Load()
	retry.Until(t, 10*time.Second, func() error {
		if writes.Load() < before+20 {
			return errors.New("writes not flowing")
		}
		return nil
	})
	stop()
	wg.Wait()
	t.Logf("%d writes during the rotation, %d failed", writes.Load(), failures.Load())
	if failures.Load() > 0 {
		t.Fatalf("%d of %d writes failed during the rotation; first: %v", failures.Load(), writes.Load(), firstErr.Load())
	}

	// A restarted node keeps the rotated keyring (its --encrypt is the old key).
	n4 := c.agent("n4")
	_ = n4.Shutdown()
	b, err := os.ReadFile(filepath.Join(c.dirs["n4"], keyringFile))
	if err != nil || !strings.Contains(string(b), next) || strings.Contains(string(b), old) {
		t.Fatalf("saved keyring %q %v: want only the new key", b, err)
	}
	n4 = c.start(4, withKey)
	if kr := keyringOf(t, n4); kr.Primary != next || len(kr.Keys) != 1 {
		t.Fatalf("restarted node's keyring %+v, want only the new key", kr)
	}
	allSee(t, c.live(), all)
	// And a node with only the old key is now locked out.
	late := secConfig(t, "late", c.ip(9))
	late.EncryptKey = old
	t.Logf("old key after rotation: %v", joinFails(t, late, c.ip(1)+":7946"))
}

// TestKeyringErrors: bad keys, unknown keys and unencrypted nodes answer
// clear errors.
func TestKeyringErrors(t *testing.T) {
	a := startAgent(t, secConfig(t, "plain", "127.0.123.1"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl := client(t, a)
	if _, err := cl.Keyring(ctx, "list", ""); err == nil || !strings.Contains(err.Error(), "not enabled") {
		t.Fatalf("list without encryption: %v", err)
	}
	cfg := secConfig(t, "enc", "127.0.123.2")
	cfg.EncryptKey = newKey(t, 7)
	cl = client(t, startAgent(t, cfg))
	for _, tc := range []struct{ op, key, want string }{
		{KeyringInstall, "not base64!", "base64"},
		{KeyringInstall, base64.StdEncoding.EncodeToString([]byte("short")), "16, 24 or 32"},
		{KeyringUse, newKey(t, 99), "not installed"},
		{KeyringRemove, cfg.EncryptKey, "primary key"},
		{"rotate", cfg.EncryptKey, "unknown keyring operation"},
	} {
		if _, err := cl.Keyring(ctx, tc.op, tc.key); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %q: error %v, want one containing %q", tc.op, tc.key, err, tc.want)
		}
	}
	if err := cl.Do(ctx, "PUT", "/v1/keyring/install", map[string]string{"kee": "x"}, nil); err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Errorf("misspelt body: %v", err)
	}
}

// pki is a CA and certificates in a temp dir.
type pki struct {
	t   *testing.T
	dir string
	ca  string
	key string
	cc  *tls.Config // clientConfig's, made once
}

func newPKI(t *testing.T) *pki {
	dir := t.TempDir()
	ca, key, err := tlsutil.CreateCA(tlsutil.CAOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return &pki{t: t, dir: dir, ca: ca, key: key}
}

func (p *pki) cert(node string, mutate ...func(*tlsutil.CertOptions)) (string, string) {
	o := tlsutil.CertOptions{Dir: p.dir, CAFile: p.ca, CAKeyFile: p.key, Node: node}
	for _, m := range mutate {
		m(&o)
	}
	c, k, err := tlsutil.CreateCert(o)
	if err != nil {
		p.t.Fatal(err)
	}
	return c, k
}

// config is node's TLS configuration; its certificate is made on first use.
func (p *pki) config(node string) tlsutil.Config {
	c, k := tlsutil.CertFiles(node)
	c, k = filepath.Join(p.dir, c), filepath.Join(p.dir, k)
	if _, err := os.Stat(c); err != nil {
		c, k = p.cert(node)
	}
	return tlsutil.Config{CAFile: p.ca, CertFile: c, KeyFile: k, VerifyIncoming: true}
}

// tlsClient is an API client of a presenting node's certificate.
func (p *pki) client(a *Agent, node string) *Client {
	p.t.Helper()
	h, err := tlsutil.Load(p.config(node), false)
	if err != nil {
		p.t.Fatal(err)
	}
	c, err := NewTLSClient(a.HTTPAddr(), h.ClientConfig())
	if err != nil {
		p.t.Fatal(err)
	}
	return c
}

// TestMutualTLS: a cluster whose API, Raft and agent calls all run over
// mutual TLS elects a leader and forwards writes; a client or Raft peer
// with a certificate from another CA, or none, is refused with a clear
// error; plain HTTP is refused with a hint.
func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	c := newCluster(t, 124)
	for i := 1; i <= 3; i++ {
		c.start(i, func(cfg *Config) { cfg.TLS = p.config(cfg.NodeName) })
	}
	cli := map[string]*Client{}
	for _, a := range c.live() {
		cli[a.Name()] = p.client(a, "cli-"+a.Name())
		if !strings.HasPrefix(a.HTTPURL(), "https://") {
			t.Fatalf("%s API at %s", a.Name(), a.HTTPURL())
		}
	}
	// Raft over TLS: one leader, three voters (voter changes are API calls
	// between agents, so those run over TLS too).
	var leader string
	retry.Until(t, 40*time.Second, func() error {
		for _, a := range c.live() {
			st, _, err := cli[a.Name()].Status(context.Background())
			if err != nil {
				return err
			}
			n := 0
			for _, v := range st.Voters {
				if v.Voter {
					n++
				}
			}
			if st.Leader == nil || n != 3 {
				return fmt.Errorf("%s: leader %v, %d voters", a.Name(), st.Leader, n)
			}
			leader = st.Leader.Name
		}
		return nil
	})
	// Writes through followers are forwarded to the leader over TLS.
	for _, a := range c.live() {
		var res WriteResult
		if err := cli[a.Name()].Do(context.Background(), "PUT", "/v1/settings/tls-"+a.Name(), SettingRequest{Value: "x"}, &res); err != nil {
			t.Fatalf("write through %s (leader %s): %v", a.Name(), leader, err)
		}
	}

	target := c.agent(leader)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Plain HTTP: refused with a hint.
	if _, err := client(t, target).Members(ctx); err == nil || !strings.Contains(err.Error(), "serves TLS only") {
		t.Fatalf("plain HTTP: %v", err)
	}
	// The right CA but no client certificate: refused (mutual TLS).
	noCert, _ := tlsutil.ClientOnlyConfig(p.ca, "")
	nc, _ := NewTLSClient(target.HTTPAddr(), noCert)
	if _, err := nc.Members(ctx); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("no client certificate: %v", err)
	}
	// A certificate from another CA: refused by the API...
	rogue := newPKI(t)
	rc := rogue.client(target, "intruder")
	_, err := rc.Members(ctx)
	if err == nil || !strings.Contains(err.Error(), "TLS with the colony agent") || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("other CA against the API: %v", err)
	}
	t.Logf("other CA, API: %v", err)
	// ...even when it trusts our CA (only its own certificate is foreign).
	rh, err := tlsutil.Load(rogue.config("intruder2"), false)
	if err != nil {
		t.Fatal(err)
	}
	mixed := rh.ClientConfig()
	mixed.RootCAs = noCert.RootCAs
	mc, _ := NewTLSClient(target.HTTPAddr(), mixed)
	if _, err = mc.Members(ctx); err == nil || !strings.Contains(err.Error(), "TLS with the colony agent") {
		t.Fatalf("foreign client certificate against the API: %v", err)
	}
	t.Logf("foreign client cert, API: %v", err)
	// ...and by Raft, through the same stream layer the agents use.
	raftAddr := net.JoinHostPort(c.ip(slices.IndexFunc(c.live(), func(a *Agent) bool { return a.Name() == leader })+1), fmt.Sprint(DefaultRaftPort))
	sl := &streamLayer{tls: mixed}
	if conn, derr := sl.Dial(raft.ServerAddress(raftAddr), 5*time.Second); derr != nil {
		err = derr
	} else {
		// TLS 1.3 reports a refused client certificate on the first read.
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "tls") {
		t.Fatalf("foreign certificate against Raft: %v", err)
	}
	t.Logf("foreign client cert, Raft: %v", err)
	sl = &streamLayer{tls: rogue.clientConfig(t)}
	if _, err = sl.Dial(raft.ServerAddress(raftAddr), 5*time.Second); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("other CA against Raft: %v", err)
	}
	t.Logf("other CA, Raft: %v", err)
	// The cluster is unharmed.
	if err := cli[leader].Do(context.Background(), "PUT", "/v1/settings/after", SettingRequest{Value: "x"}, nil); err != nil {
		t.Fatal(err)
	}
}

func (p *pki) clientConfig(t *testing.T) *tls.Config {
	if p.cc == nil {
		h, err := tlsutil.Load(p.config("peer"), false)
		if err != nil {
			t.Fatal(err)
		}
		p.cc = h.ClientConfig()
	}
	return p.cc
}

// TestTLSCertificateChecks: an expired certificate, one from another CA and
// one without the server name stop the agent at start with a clear error;
// an expired client certificate is refused at the handshake; SIGHUP's
// reload swaps the certificate and keeps the old one when the new one is
// bad.
func TestTLSCertificateChecks(t *testing.T) {
	p := newPKI(t)
	expired := func(o *tlsutil.CertOptions) {
		o.NotBefore = time.Now().Add(-48 * time.Hour)
		o.TTL = 24 * time.Hour
	}
	ec, ek := p.cert("old", expired)
	cfg := secConfig(t, "old", "127.0.125.1")
	cfg.TLS = tlsutil.Config{CAFile: p.ca, CertFile: ec, KeyFile: ek}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "expired at") {
		t.Fatalf("expired certificate at start: %v", err)
	} else {
		t.Logf("expired: %v", err)
	}
	rogue := newPKI(t)
	rcert, rkey := rogue.cert("stranger")
	cfg.TLS = tlsutil.Config{CAFile: p.ca, CertFile: rcert, KeyFile: rkey}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "not usable with the CA") {
		t.Fatalf("certificate of another CA at start: %v", err)
	}
	cc, ck := p.cert("justclient", func(o *tlsutil.CertOptions) { o.Client = true })
	cfg.TLS = tlsutil.Config{CAFile: p.ca, CertFile: cc, KeyFile: ck}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "server.colony") && !strings.Contains(err.Error(), "not usable") {
		t.Fatalf("client-only certificate for an agent: %v", err)
	}
	cfg.TLS = tlsutil.Config{CAFile: p.ca, CertFile: ec}
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "--tls-key") {
		t.Fatalf("missing key: %v", err)
	}

	// A running agent; a client with an expired certificate is refused.
	cfg.TLS = p.config("n1")
	a := startAgent(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pair, err := tls.LoadX509KeyPair(ec, ek)
	if err != nil {
		t.Fatal(err)
	}
	ok, _ := tlsutil.ClientOnlyConfig(p.ca, "")
	ok.Certificates = []tls.Certificate{pair}
	xc, _ := NewTLSClient(a.HTTPAddr(), ok)
	if _, err := xc.Members(ctx); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired client certificate: %v", err)
	} else {
		t.Logf("expired client cert at handshake: %v", err)
	}

	// Reload: replace the files, SIGHUP's method serves the new one.
	serial := func() string {
		conn, err := tls.Dial("tcp", a.HTTPAddr(), p.clientConfig(t))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	first := serial()
	nc, nk := p.cert("n1-renewed")
	for src, dst := range map[string]string{nc: cfg.TLS.CertFile, nk: cfg.TLS.KeyFile} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if serial() != first {
		t.Fatal("certificate changed before the reload")
	}
	if err := a.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	second := serial()
	if second == first {
		t.Fatal("reload did not change the certificate")
	}
	// A bad (expired) new certificate is refused; the current one stays.
	for src, dst := range map[string]string{ec: cfg.TLS.CertFile, ek: cfg.TLS.KeyFile} {
		b, _ := os.ReadFile(src)
		_ = os.WriteFile(dst, b, 0o600)
	}
	if err := a.ReloadTLS(); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("reload of an expired certificate: %v", err)
	}
	if serial() != second {
		t.Fatal("a refused reload changed the certificate")
	}
}

// FuzzParseKeyringFile: any keyring file content is parsed or refused,
// never a panic, and what parses are valid keys.
func FuzzParseKeyringFile(f *testing.F) {
	f.Add([]byte(`["` + base64.StdEncoding.EncodeToString(make([]byte, 32)) + `"]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`["a","a"]`))
	f.Add([]byte(`{"k":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := parseKeyringFile(b)
		if err != nil {
			return
		}
		if len(keys) == 0 {
			t.Fatal("no keys without an error")
		}
		for _, k := range keys {
			if n := len(k); n != 16 && n != 24 && n != 32 {
				t.Fatalf("key of %d bytes accepted", n)
			}
		}
	})
}

// FuzzDecodeKey: any key string is decoded to a valid key or refused by
// the same function the flags, the API and the keyring file use.
func FuzzDecodeKey(f *testing.F) {
	f.Add(base64.StdEncoding.EncodeToString(make([]byte, 16)))
	f.Add("  " + base64.StdEncoding.EncodeToString(make([]byte, 24)) + "\n")
	f.Add("!!")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := DecodeKey(s)
		if err == nil && len(k) != 16 && len(k) != 24 && len(k) != 32 {
			t.Fatalf("%q decoded to %d bytes", s, len(k))
		}
	})
}

// TestLocalPoolInheritsSecurity: agents a local pool launches get the
// launching agent's TLS flags, cluster label and gossip key, so they join
// the secured cluster and serve their API over TLS.
func TestLocalPoolInheritsSecurity(t *testing.T) {
	if testing.Short() {
		t.Skip("launches agent processes")
	}
	p := newPKI(t)
	cfg := secConfig(t, "n1", "127.0.127.1")
	cfg.EncryptKey = newKey(t, 20)
	cfg.ClusterLabel = "pooled"
	cfg.TLS = p.config("n1")
	n1 := startAgent(t, cfg)
	cl := p.client(n1, "ops")
	ctx := context.Background()
	retry.Until(t, 30*time.Second, func() error {
		st, _, err := cl.Status(ctx)
		if err != nil {
			return err
		}
		if st.Leader == nil {
			return errors.New("no leader yet")
		}
		return nil
	})
	ps := localPool(t, t.TempDir(), 128, 1, "1h")
	ps.Min = 1
	cleanupInstances(t, ps)
	if err := cl.Do(ctx, "PUT", "/v1/pools/p1", ps, nil); err != nil {
		t.Fatal(err)
	}
	var child MemberInfo
	retry.Until(t, 60*time.Second, func() error {
		ms, err := cl.Members(ctx)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.Name != "n1" && m.Status == gossip.StatusAlive {
				child = m
				return nil
			}
		}
		return fmt.Errorf("no launched member yet: %+v", ms)
	})
	// Its API speaks mutual TLS with the cluster's CA.
	h, err := tlsutil.Load(p.config("ops2"), false)
	if err != nil {
		t.Fatal(err)
	}
	cc, _ := NewTLSClient(child.APIAddress, h.ClientConfig())
	retry.Until(t, 20*time.Second, func() error {
		self, err := cc.Self(ctx)
		if err != nil {
			return err
		}
		if !self.Encrypted {
			return errors.New("launched agent's gossip is not encrypted")
		}
		return nil
	})
	plain, _ := NewClient(child.APIAddress)
	if _, err := plain.Members(ctx); err == nil || !strings.Contains(err.Error(), "TLS only") {
		t.Fatalf("launched agent over plain HTTP: %v", err)
	}
}

// BenchmarkAPISelf measures one API call on a kept-alive connection and on
// a new connection (with TLS: a full handshake), plain and with mutual TLS.
func BenchmarkAPISelf(b *testing.B) {
	dir := b.TempDir()
	ca, cakey, err := tlsutil.CreateCA(tlsutil.CAOptions{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	mk := func(node string) tlsutil.Config {
		c, k, err := tlsutil.CreateCert(tlsutil.CertOptions{Dir: dir, CAFile: ca, CAKeyFile: cakey, Node: node})
		if err != nil {
			b.Fatal(err)
		}
		return tlsutil.Config{CAFile: ca, CertFile: c, KeyFile: k, VerifyIncoming: true}
	}
	start := func(name, ip string, tc tlsutil.Config) *Agent {
		cfg := DefaultConfig()
		cfg.NodeName, cfg.DataDir, cfg.BindAddr, cfg.HTTPAddr = name, b.TempDir(), ip, ip+":7070"
		cfg.GossipProfile = gossip.ProfileLocal
		cfg.TLS = tc
		a, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = a.Shutdown() })
		if err := a.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		return a
	}
	plain := start("plain", "127.0.129.1", tlsutil.Config{})
	secure := start("secure", "127.0.129.2", mk("secure"))
	h, err := tlsutil.Load(mk("ops"), false)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		a    *Agent
		tls  *tls.Config
	}{{"plain", plain, nil}, {"mtls", secure, h.ClientConfig()}} {
		for _, keepAlive := range []bool{true, false} {
			name := tc.name + "/keepalive"
			if !keepAlive {
				name = tc.name + "/newconn"
			}
			b.Run(name, func(b *testing.B) {
				c, err := NewTLSClient(tc.a.HTTPAddr(), tc.tls)
				if err != nil {
					b.Fatal(err)
				}
				c.http.Transport = &http.Transport{TLSClientConfig: tc.tls, DisableKeepAlives: !keepAlive}
				ctx := context.Background()
				for b.Loop() {
					if _, err := c.Self(ctx); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestKeyringWithACLAndTLS: with ACLs and mutual TLS together, the keyring
// fan-out runs on behalf of the caller's token over TLS: an operator token
// rotates the key on every node, a read-only token may not even list keys.
func TestKeyringWithACLAndTLS(t *testing.T) {
	p := newPKI(t)
	key := newKey(t, 30)
	var agents []*Agent
	for i := 1; i <= 3; i++ {
		cfg := secConfig(t, fmt.Sprintf("s%d", i), fmt.Sprintf("127.0.123.%d", 10+i))
		cfg.EncryptKey = key
		cfg.TLS = p.config(cfg.NodeName)
		withACL(ACLDeny)(&cfg)
		if i > 1 {
			cfg.Join = []string{agents[0].GossipAddr()}
		}
		agents = append(agents, startAgent(t, cfg))
	}
	ctx := context.Background()
	anon := p.client(agents[1], "ops")
	var mgmt ACLTokenInfo
	retry.Until(t, 40*time.Second, func() error {
		return anon.Do(ctx, "POST", "/v1/acl/bootstrap", nil, &mgmt)
	})
	token := func(policy string) *Client {
		var ti ACLTokenInfo
		c := p.client(agents[1], "ops")
		c.SetToken(mgmt.SecretID)
		retry.Until(t, 20*time.Second, func() error {
			return c.Do(ctx, "PUT", "/v1/acl/token", ACLTokenRequest{Policy: policy}, &ti)
		})
		out := p.client(agents[2], "ops")
		out.SetToken(ti.SecretID)
		return out
	}
	op, ro := token("operator"), token("read-only")
	retry.Until(t, 20*time.Second, func() error { // until the token has reached that node
		if _, err := ro.Keyring(ctx, "list", ""); err == nil || !strings.Contains(err.Error(), "403") {
			return fmt.Errorf("keyring list with a read-only token: %v", err)
		}
		return nil
	})
	if _, err := anon.Keyring(ctx, "list", ""); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("keyring list without a token: %v", err)
	}
	next := newKey(t, 60)
	retry.Until(t, 20*time.Second, func() error { // every node must know the new tokens
		resp, err := op.Keyring(ctx, KeyringInstall, next)
		if err != nil {
			return err
		}
		if resp.NumOK != 3 {
			return fmt.Errorf("install on %d of %d", resp.NumOK, resp.NumNodes)
		}
		return nil
	})
	resp, err := op.Keyring(ctx, "list", "")
	if err != nil || resp.Keys[next] != 3 || resp.PrimaryKeys[key] != 3 {
		t.Fatalf("list: %+v %v", resp, err)
	}
}
