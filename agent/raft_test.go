package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"colony/consensus"
	"colony/test/retry"
)

// cluster is a set of in-process agents, each on its own loopback address
// with the default ports, so a restarted agent comes back at the same
// addresses (as a real host would).
type cluster struct {
	t      *testing.T
	net    string // "127.0.78." etc.
	cut    *cutSet
	agents map[string]*Agent
	dirs   map[string]string
	mu     sync.Mutex
}

// cutSet is the partition: pairs of IPs that cannot talk.
type cutSet struct {
	mu  sync.Mutex
	cut map[[2]string]bool
}

func (c *cutSet) dropFrom(self string) func(string) bool {
	return func(addr string) bool {
		host := addr
		if i := strings.LastIndex(addr, ":"); i >= 0 {
			host = addr[:i]
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.cut[[2]string{self, host}]
	}
}

func (c *cutSet) split(left, right []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = map[[2]string]bool{}
	for _, l := range left {
		for _, r := range right {
			c.cut[[2]string{l, r}], c.cut[[2]string{r, l}] = true, true
		}
	}
}

func (c *cutSet) heal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = nil
}

// newCluster reserves 127.0.<subnet>.0/24 for one test. The agent package
// uses 178 and up; test/integration uses lower ones, so both packages can
// run at the same time.
func newCluster(t *testing.T, subnet int) *cluster {
	return &cluster{t: t, net: fmt.Sprintf("127.0.%d.", subnet), cut: &cutSet{}, agents: map[string]*Agent{}, dirs: map[string]string{}}
}

func (c *cluster) ip(i int) string { return fmt.Sprintf("%s%d", c.net, i) }

// start boots node i (name "n<i>"), joining node 1 unless it is node 1 or
// restarts from a data dir.
func (c *cluster) start(i int, mutate ...func(*Config)) *Agent {
	c.t.Helper()
	name := fmt.Sprintf("n%d", i)
	dir, ok := c.dirs[name]
	if !ok {
		dir = c.t.TempDir()
		c.dirs[name] = dir
	}
	cfg := testConfig(c.t, name, dir)
	cfg.BindAddr = c.ip(i)
	cfg.GossipPort = DefaultGossipPort
	cfg.RaftPort = DefaultRaftPort
	cfg.HTTPAddr = c.ip(i) + ":7070"
	cfg.DropTo = c.cut.dropFrom(c.ip(i))
	if i != 1 && !ok {
		cfg.Join = []string{c.ip(1) + ":7946"}
	}
	for _, m := range mutate {
		m(&cfg)
	}
	a := startAgent(c.t, cfg)
	c.mu.Lock()
	c.agents[name] = a
	c.mu.Unlock()
	return a
}

func (c *cluster) live() []*Agent {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Agent
	for _, a := range c.agents {
		select {
		case <-a.Done():
		default:
			out = append(out, a)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

func status(a *Agent) (ClusterStatus, error) {
	var st ClusterStatus
	c, _ := NewClient(a.HTTPAddr())
	err := c.Do(context.Background(), "GET", "/v1/status", nil, &st)
	return st, err
}

// agreeOnLeader waits until every live agent names the same leader and
// reports `voters` voters, none of them in gone, and returns the leader.
func (c *cluster) agreeOnLeader(voters int, timeout time.Duration, gone ...string) string {
	c.t.Helper()
	var leader string
	retry.Until(c.t, timeout, func() error {
		leader = ""
		for _, a := range c.live() {
			st, err := status(a)
			if err != nil {
				return fmt.Errorf("%s: %w", a.Name(), err)
			}
			if st.Leader == nil {
				return fmt.Errorf("%s knows no leader", a.Name())
			}
			if leader != "" && st.Leader.Name != leader {
				return fmt.Errorf("%s says the leader is %s, others %s", a.Name(), st.Leader.Name, leader)
			}
			leader = st.Leader.Name
			n := 0
			for _, v := range st.Voters {
				if v.Voter {
					n++
				}
				for _, x := range gone {
					if v.Name == x {
						return fmt.Errorf("%s still lists %s as a voter", a.Name(), x)
					}
				}
			}
			if n != voters {
				return fmt.Errorf("%s reports %d voters, want %d: %+v", a.Name(), n, voters, st.Voters)
			}
		}
		return nil
	})
	return leader
}

func (c *cluster) agent(name string) *Agent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.agents[name]
}

func set(t *testing.T, a *Agent, key, value string) (uint64, error) {
	c, _ := NewClient(a.HTTPAddr())
	var res WriteResult
	err := c.Do(context.Background(), "PUT", "/v1/settings/"+key, SettingRequest{Value: value}, &res)
	return res.Index, err
}

func get(a *Agent, key, consistency string) (consensus.Setting, error) {
	c, _ := NewClient(a.HTTPAddr())
	var s consensus.Setting
	err := c.Do(context.Background(), "GET", "/v1/settings/"+key+"?consistency="+consistency, nil, &s)
	return s, err
}

// TestRaftFiveNodes: five nodes from one seed elect one leader with exactly
// three voters, every node names the same leader, writes go through any
// node, every read mode works from every node, and losing the leader or a
// voter loses nothing committed.
func TestRaftFiveNodes(t *testing.T) {
	c := newCluster(t, 178)
	for i := 1; i <= 5; i++ {
		c.start(i)
	}
	leader := c.agreeOnLeader(3, 30*time.Second)
	t.Logf("leader %s", leader)

	// Writes through every node (forwarded to the leader by non-leaders).
	for i, a := range c.live() {
		if _, err := set(t, a, fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)); err != nil {
			t.Fatalf("write through %s: %v", a.Name(), err)
		}
	}
	for _, a := range c.live() {
		for _, mode := range []string{"default", "consistent", "stale"} {
			retry.Until(t, 10*time.Second, func() error {
				s, err := get(a, "k4", mode)
				if err != nil {
					return err
				}
				if s.Value != "v4" {
					return fmt.Errorf("%s %s read %q", a.Name(), mode, s.Value)
				}
				return nil
			})
		}
	}

	// Kill the leader without a leave: a new leader, the data intact, and
	// after the dead-voter timeout a third voter again.
	old := c.agent(leader)
	_ = old.Shutdown()
	newLeader := c.agreeOnLeader(3, 45*time.Second, leader)
	if newLeader == leader {
		t.Fatalf("leader did not change")
	}
	for _, a := range c.live() {
		s, err := get(a, "k0", "consistent")
		if err != nil || s.Value != "v0" {
			t.Fatalf("after leader loss, %s reads %+v %v", a.Name(), s, err)
		}
	}
	if _, err := set(t, c.live()[0], "after", "failover"); err != nil {
		t.Fatal(err)
	}

	// Kill a voter that is not the leader: it is replaced and removed.
	var victim string
	st, _ := status(c.agent(newLeader))
	for _, v := range st.Voters {
		if v.Voter && !v.Leader {
			victim = v.Name
			break
		}
	}
	if victim == "" {
		t.Fatalf("no follower voter in %+v", st.Voters)
	}
	_ = c.agent(victim).Shutdown()
	l := c.agreeOnLeader(3, 45*time.Second, leader, victim)
	if _, err := set(t, c.live()[0], "after", "voter-loss"); err != nil {
		t.Fatal(err)
	}

	// The leader leaves gracefully: it hands leadership over before it
	// goes, and the survivors carry on with what was committed.
	left := time.Now()
	if err := c.agent(l).Leave(); err != nil {
		t.Fatalf("leader leave: %v", err)
	}
	next := c.agreeOnLeader(2, 45*time.Second, leader, victim, l)
	t.Logf("leader %s left; %s leads, agreed %s after Leave returned", l, next, time.Since(left).Round(time.Millisecond))
	for _, a := range c.live() {
		if s, err := get(a, "after", "consistent"); err != nil || s.Value != "voter-loss" {
			t.Fatalf("after the leader left, %s reads %+v %v", a.Name(), s, err)
		}
	}
}

// TestRaftRestartAll: restart every node from its data dir, one by one and
// then all at once: the same cluster, the same data.
func TestRaftRestartAll(t *testing.T) {
	c := newCluster(t, 179)
	for i := 1; i <= 4; i++ {
		c.start(i)
	}
	c.agreeOnLeader(3, 30*time.Second)
	if _, err := set(t, c.agent("n2"), "color", "blue"); err != nil {
		t.Fatal(err)
	}
	check := func(want string) {
		t.Helper()
		for _, a := range c.live() {
			retry.Until(t, 30*time.Second, func() error {
				s, err := get(a, "color", "consistent")
				if err != nil {
					return err
				}
				if s.Value != want {
					return fmt.Errorf("%s reads %q", a.Name(), s.Value)
				}
				return nil
			})
		}
	}
	// Rolling restart.
	for i := 1; i <= 4; i++ {
		_ = c.agent(fmt.Sprintf("n%d", i)).Shutdown()
		c.start(i)
		c.agreeOnLeader(3, 45*time.Second)
	}
	check("blue")
	if _, err := set(t, c.agent("n3"), "color", "green"); err != nil {
		t.Fatal(err)
	}
	// All at once.
	for _, a := range c.live() {
		_ = a.Shutdown()
	}
	for i := 1; i <= 4; i++ {
		c.start(i)
	}
	c.agreeOnLeader(3, 60*time.Second)
	check("green")
}

// TestRaftPartition: the minority side refuses writes with a clear error
// and still serves stale reads; after healing there is one history.
func TestRaftPartition(t *testing.T) {
	c := newCluster(t, 180)
	for i := 1; i <= 5; i++ {
		c.start(i)
	}
	leader := c.agreeOnLeader(3, 30*time.Second)
	if _, err := set(t, c.agent(leader), "side", "before"); err != nil {
		t.Fatal(err)
	}
	// Put the leader and one non-voter in the minority: the majority side
	// keeps two of the three voters.
	st, _ := status(c.agent(leader))
	isVoter := map[string]bool{}
	for _, v := range st.Voters {
		isVoter[v.Name] = v.Voter
	}
	minority := []string{leader}
	for _, a := range c.live() {
		if !isVoter[a.Name()] {
			minority = append(minority, a.Name())
			break
		}
	}
	var left, right []string
	var majority []*Agent
	for _, a := range c.live() {
		ip := a.cfg.BindAddr
		if a.Name() == minority[0] || a.Name() == minority[1] {
			left = append(left, ip)
		} else {
			right = append(right, ip)
			majority = append(majority, a)
		}
	}
	c.cut.split(left, right)

	// The majority elects a new leader and accepts writes.
	retry.Until(t, 45*time.Second, func() error {
		_, err := set(t, majority[0], "side", "majority")
		return err
	})
	// The minority refuses writes with a clear error, and serves stale reads.
	retry.Until(t, 30*time.Second, func() error {
		_, err := set(t, c.agent(minority[0]), "side", "minority")
		if err == nil {
			return errors.New("minority accepted a write")
		}
		if !strings.Contains(err.Error(), "503") {
			return fmt.Errorf("unclear refusal: %v", err)
		}
		return nil
	})
	_, err := set(t, c.agent(minority[1]), "side", "minority")
	if err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("minority node accepted a write or failed unclearly: %v", err)
	}
	t.Logf("minority refusal: %v", err)
	s, err := get(c.agent(minority[1]), "side", "stale")
	if err != nil || s.Value != "before" {
		t.Fatalf("stale read on the minority: %+v %v", s, err)
	}

	// Before healing, the majority replaces the cut-off leader (the dead
	// voter timeout is short here): the old leader then learns of its
	// removal only when the network heals, and must retire on its own.
	retry.Until(t, 30*time.Second, func() error {
		st, err := status(majority[0])
		if err != nil {
			return err
		}
		n := 0
		for _, v := range st.Voters {
			if v.Name == leader {
				return fmt.Errorf("%s still a voter", leader)
			}
			if v.Voter {
				n++
			}
		}
		if n != 3 {
			return fmt.Errorf("%d voters on the majority side", n)
		}
		return nil
	})

	c.cut.heal()
	for _, a := range c.live() {
		retry.Until(t, 60*time.Second, func() error {
			s, err := get(a, "side", "consistent")
			if err != nil {
				return err
			}
			if s.Value != "majority" {
				return fmt.Errorf("%s reads %q after healing", a.Name(), s.Value)
			}
			return nil
		})
	}
	c.agreeOnLeader(3, 30*time.Second)
}

// TestSettingsAPIErrors: bad keys, bodies and query parameters are refused.
func TestSettingsAPIErrors(t *testing.T) {
	a := startAgent(t, testConfig(t, "solo", t.TempDir()))
	retry.Until(t, 20*time.Second, func() error {
		_, err := set(t, a, "ready", "1")
		return err
	})
	base := "http://" + a.HTTPAddr()
	for _, tc := range []struct {
		method, path, body string
		code               int
	}{
		{"PUT", "/v1/settings/bad%20key", `{"value":"x"}`, 400},
		{"PUT", "/v1/settings/k", `{"value":1}`, 400},
		{"PUT", "/v1/settings/k", `{"val":"x"}`, 400},
		{"GET", "/v1/settings/k?consistency=sometimes", "", 400},
		{"GET", "/v1/settings/k?index=-1", "", 400},
		{"GET", "/v1/settings/k?wait=forever", "", 400},
		{"GET", "/v1/settings/missing", "", 404},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.code)
		}
	}
	// A blocking query returns when the value changes.
	idx, _ := set(t, a, "watched", "1")
	done := make(chan consensus.Setting, 1)
	go func() {
		c, _ := NewClient(a.HTTPAddr())
		var s consensus.Setting
		_ = c.Do(context.Background(), "GET", fmt.Sprintf("/v1/settings/watched?index=%d&wait=20s", idx), nil, &s)
		done <- s
	}()
	if _, err := set(t, a, "watched", "2"); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-done:
		if s.Value != "2" {
			t.Fatalf("blocking query returned %+v", s)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("blocking query did not return")
	}
}

// TestQuorumLossAndRecovery: with two of three voters gone, the survivor
// and the non-voters report quorum loss; the documented recovery (a peers
// file naming the survivors) brings the cluster back with its data.
func TestQuorumLossAndRecovery(t *testing.T) {
	c := newCluster(t, 181)
	for i := 1; i <= 4; i++ {
		c.start(i)
	}
	leader := c.agreeOnLeader(3, 30*time.Second)
	if _, err := set(t, c.agent(leader), "keep", "me"); err != nil {
		t.Fatal(err)
	}
	st, _ := status(c.agent(leader))
	var voters, others []string
	for _, v := range st.Voters {
		voters = append(voters, v.Name)
	}
	for _, a := range c.live() {
		if !strings.Contains(strings.Join(voters, " "), a.Name()) {
			others = append(others, a.Name())
		}
	}
	survivor := voters[0]
	for _, v := range voters[1:] {
		_ = c.agent(v).Shutdown()
	}
	for _, name := range append([]string{survivor}, others...) {
		a := c.agent(name)
		retry.Until(t, 45*time.Second, func() error {
			h, err := client(t, a).Health(context.Background())
			if err != nil && h.Node == "" {
				return err
			}
			if h.Status != "critical" || !strings.Contains(h.Problem, "quorum lost") {
				ms, _ := client(t, a).Members(context.Background())
				return fmt.Errorf("%s health: %+v; members %+v", name, h, ms)
			}
			return nil
		})
	}
	_, err := set(t, c.agent(others[0]), "keep", "lost")
	if err == nil || !strings.Contains(err.Error(), "quorum lost") {
		t.Fatalf("write without quorum: %v", err)
	}

	// Recovery: stop the survivor, give it a configuration of itself alone
	// (what `colony raft recover` writes), start it again.
	sa := c.agent(survivor)
	id, addr := sa.ID().String(), sa.raftAddr()
	_ = sa.Shutdown()
	if err := consensus.WritePeersFile(c.dirs[survivor], []consensus.Server{{ID: id, Address: addr, Voter: true}}); err != nil {
		t.Fatal(err)
	}
	var num int
	fmt.Sscanf(survivor, "n%d", &num)
	c.start(num)
	// It leads again (alone: with two live members an odd voter count
	// means one), and nothing committed is lost.
	c.agreeOnLeader(1, 60*time.Second)
	for _, a := range c.live() {
		retry.Until(t, 30*time.Second, func() error {
			s, err := get(a, "keep", "consistent")
			if err != nil {
				return err
			}
			if s.Value != "me" {
				return fmt.Errorf("%s reads %q", a.Name(), s.Value)
			}
			return nil
		})
	}
}
