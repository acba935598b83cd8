package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"colony/test/retry"
)

// The parts of `colony status --format json` (agent.ClusterStatus) the
// suite compares, decoded here rather than with the agent package's types
// so the suite tests the CLI's output, not the Go API.
type (
	leaderInfo struct {
		Name string `json:"name"`
		ID   string `json:"id"`
	}
	voterInfo struct {
		Name   string `json:"name"`
		ID     string `json:"id"`
		Voter  bool   `json:"voter"`
		Leader bool   `json:"leader"`
		Status string `json:"status"` // gossip status
	}
	raftStatus struct {
		ServedBy    string `json:"served_by"`
		State       string `json:"state"`
		Term        uint64 `json:"term"`
		CommitIndex uint64 `json:"commit_index"`
	}
	clusterStatus struct {
		Node    string         `json:"node"`
		Leader  *leaderInfo    `json:"leader"`
		Voters  []voterInfo    `json:"voters"`
		Raft    *raftStatus    `json:"raft"`
		Members map[string]int `json:"members"`
		Health  string         `json:"health"`
		Problem string         `json:"problem"`
	}
	// setting is one entry of `colony settings list --format json`.
	setting struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	}
)

// voterNames are the names of the voting servers, sorted.
func (s clusterStatus) voterNames() []string {
	var names []string
	for _, v := range s.Voters {
		if v.Voter {
			names = append(names, v.Name)
		}
	}
	slices.Sort(names)
	return names
}

// wantVoters is how many voters a cluster with alive live nodes settles
// on with the agents' default --voters 3: always an odd number.
func wantVoters(alive int) int {
	if alive >= 3 {
		return 3
	}
	return 1
}

// Status is node n's `colony status --format json`. The CLI exits 2 when
// the cluster is not healthy but still prints the JSON: that is an answer
// (health critical), not an error.
func (c *Cluster) Status(n *Node) (clusterStatus, error) {
	out, err := c.Query(n, "status", "--format", "json")
	st, err := parseStatus(out, err)
	if err != nil {
		return st, fmt.Errorf("%s: %w", n.Name, err)
	}
	return st, nil
}

// parseStatus decodes the output of `colony status --format json` and
// checks that the exit code matches the health it reports.
func parseStatus(out string, err error) (clusterStatus, error) {
	var st clusterStatus
	if jerr := json.Unmarshal([]byte(out), &st); jerr != nil {
		if err != nil {
			return st, err
		}
		return st, fmt.Errorf("status: bad JSON %q: %w", out, jerr)
	}
	if err != nil && st.Health == "passing" {
		return st, fmt.Errorf("status says passing but the CLI failed: %w", err)
	}
	if err == nil && st.Health != "passing" {
		return st, fmt.Errorf("status is %s but the CLI exited 0", st.Health)
	}
	return st, nil
}

// checkStatus compares `colony status` across the observers and returns
// the status they agree on. With a majority of the nodes in want alive,
// every observer must report health passing, a live leader, the same
// leader, the same set of voters (all alive, wantVoters of them, the
// leader among them) and the same term. With a minority alive (the
// observers are the cut-off side of a partition), every observer must
// report health critical, no leader and the problem.
func (c *Cluster) checkStatus(observers []*Node, want map[string]string) (clusterStatus, error) {
	alive := 0
	for _, st := range want {
		if st == "alive" {
			alive++
		}
	}
	quorum := 2*alive > len(want)
	var ref clusterStatus
	refName := ""
	for _, o := range observers {
		st, err := c.Status(o)
		if err != nil {
			return ref, err
		}
		if !quorum {
			if st.Health != "critical" || st.Leader != nil || st.Problem == "" {
				return ref, fmt.Errorf("%s is on a minority side: want health critical, no leader and a problem; got health %q, leader %+v, problem %q", o.Name, st.Health, st.Leader, st.Problem)
			}
			c.problem = st.Problem
			ref = st
			continue
		}
		if st.Health != "passing" || st.Leader == nil {
			return ref, fmt.Errorf("%s: health %s, leader %+v: %s", o.Name, st.Health, st.Leader, st.Problem)
		}
		if want[st.Leader.Name] != "alive" {
			return ref, fmt.Errorf("%s names %s leader, which should be %q", o.Name, st.Leader.Name, want[st.Leader.Name])
		}
		voters := st.voterNames()
		if len(voters) != wantVoters(alive) {
			return ref, fmt.Errorf("%s lists %d voters %v, want %d", o.Name, len(voters), voters, wantVoters(alive))
		}
		leaders := 0
		for _, v := range st.Voters {
			if v.Voter && (v.Status != "alive" || want[v.Name] != "alive") {
				return ref, fmt.Errorf("%s lists voter %s (%s) with gossip status %q", o.Name, v.Name, v.ID, v.Status)
			}
			if v.Leader {
				leaders++
				if v.Name != st.Leader.Name {
					return ref, fmt.Errorf("%s marks voter %s leader but names %s", o.Name, v.Name, st.Leader.Name)
				}
			}
		}
		if leaders != 1 {
			return ref, fmt.Errorf("%s marks %d voters leader", o.Name, leaders)
		}
		if st.Raft == nil || st.Raft.Term == 0 {
			return ref, fmt.Errorf("%s reports no raft term: %+v", o.Name, st.Raft)
		}
		if refName == "" {
			ref, refName = st, o.Name
			continue
		}
		if st.Leader.Name != ref.Leader.Name {
			return ref, fmt.Errorf("%s names leader %s, %s names %s", o.Name, st.Leader.Name, refName, ref.Leader.Name)
		}
		if a, b := strings.Join(voters, " "), strings.Join(ref.voterNames(), " "); a != b {
			return ref, fmt.Errorf("%s lists voters %s, %s lists %s", o.Name, a, refName, b)
		}
		if st.Raft.Term != ref.Raft.Term {
			return ref, fmt.Errorf("%s reports term %d, %s term %d", o.Name, st.Raft.Term, refName, ref.Raft.Term)
		}
	}
	return ref, nil
}

// Settings is node n's `colony settings list` at the given consistency.
func (c *Cluster) Settings(n *Node, consistency string) (map[string]string, error) {
	out, err := c.Query(n, "settings", "list", "--format", "json", "--consistency", consistency)
	if err != nil {
		return nil, err
	}
	var list []setting
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("%s: settings list: bad JSON %q: %w", n.Name, out, err)
	}
	m := map[string]string{}
	for _, s := range list {
		m[s.Key] = s.Value
	}
	return m, nil
}

// checkCommitted reads back every setting Commit wrote. A consistent read
// is served by a leader that has just confirmed its leadership with a
// quorum, so a setting missing from it was lost: that fails the test at
// once rather than being retried. A voter's stale read (its own store)
// may lag a moment, so a gap there is only retried.
func (c *Cluster) checkCommitted(observers []*Node, st clusterStatus) error {
	voters := st.voterNames()
	for _, o := range observers {
		got, err := c.Settings(o, "consistent")
		if err != nil {
			return err
		}
		if err := c.compareWitness(got); err != nil {
			c.t.Fatalf("COMMITTED STATE LOST: a consistent read through %s (leader %s, term %d): %v", o.Name, st.Leader.Name, st.Raft.Term, err)
		}
		if len(c.witness) > 0 {
			// One `get` too, of the newest key: the single-key path.
			last := c.witness[len(c.witness)-1]
			out, err := c.Query(o, "settings", "get", last.Key, "--consistency", "consistent")
			if err != nil {
				return err
			}
			if v := strings.TrimSpace(out); v != last.Value {
				c.t.Fatalf("COMMITTED STATE LOST: settings get %s --consistency consistent through %s = %q, want %q", last.Key, o.Name, v, last.Value)
			}
		}
		if slices.Contains(voters, o.Name) {
			got, err := c.Settings(o, "stale")
			if err != nil {
				return err
			}
			if err := c.compareWitness(got); err != nil {
				return fmt.Errorf("voter %s's own store (stale read): %w", o.Name, err)
			}
		}
	}
	return nil
}

// compareWitness checks got against what the suite committed and what a
// minority refused.
func (c *Cluster) compareWitness(got map[string]string) error {
	var missing []string
	for _, w := range c.witness {
		if v, ok := got[w.Key]; !ok || v != w.Value {
			missing = append(missing, fmt.Sprintf("%s=%q (read %q)", w.Key, w.Value, v))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%d of %d committed settings missing or changed: %s", len(missing), len(c.witness), strings.Join(missing, ", "))
	}
	for _, k := range c.refused {
		if v, ok := got[k]; ok {
			return fmt.Errorf("%s=%q is present, but its write was refused by a partitioned minority", k, v)
		}
	}
	return nil
}

// Commit writes a new setting through node via, retrying while a leader
// is being elected, and remembers it: every later Converge reads it back.
func (c *Cluster) Commit(step string, via *Node) {
	c.t.Helper()
	key, val := c.witnessKey(step), randomHex()
	start := time.Now()
	retry.Until(c.t, convergeTimeout, func() error {
		_, err := c.Query(via, "settings", "set", key, val)
		return err
	})
	c.witness = append(c.witness, setting{Key: key, Value: val})
	if d := time.Since(start); d > time.Second {
		c.t.Logf("%-28s   write %s through %s took %s (no leader for a while)", "", key, via.Name, d.Round(10*time.Millisecond))
	}
}

// CommitRefused checks that a write through via, on a minority, is
// refused, and remembers the key: it must never appear afterwards.
func (c *Cluster) CommitRefused(step string, via *Node) {
	c.t.Helper()
	key := c.witnessKey(step)
	_, err := c.Query(via, "settings", "set", key, randomHex())
	if err == nil {
		c.t.Fatalf("%s: a minority of one accepted the write of %s", via.Name, key)
	}
	c.refused = append(c.refused, key)
	c.t.Logf("%-28s   write through %s refused: %v", "", via.Name, err)
}

func (c *Cluster) witnessKey(step string) string {
	slug := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, strings.ToLower(step))
	return fmt.Sprintf("e2e-%02d-%s", len(c.witness)+len(c.refused), slug)
}

func randomHex() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// reachable are the nodes the host can ask: neither paused nor
// partitioned away.
func (c *Cluster) reachable() []*Node {
	var out []*Node
	for _, n := range c.Nodes() {
		if !n.paused && !n.detached {
			out = append(out, n)
		}
	}
	return out
}

// node returns the node called name.
func (c *Cluster) node(name string) (*Node, error) {
	for _, n := range c.Nodes() {
		if n.Name == name {
			return n, nil
		}
	}
	return nil, fmt.Errorf("no node is called %q", name)
}

// healthy waits until a reachable node reports a passing status and
// returns it.
func (c *Cluster) healthy() clusterStatus {
	c.t.Helper()
	var st clusterStatus
	retry.Until(c.t, convergeTimeout, func() error {
		var errs []string
		for _, n := range c.reachable() {
			s, err := c.Status(n)
			if err == nil && s.Leader != nil {
				st = s
				return nil
			}
			errs = append(errs, fmt.Sprintf("%s: %v %s", n.Name, err, s.Problem))
		}
		return fmt.Errorf("no reachable node reports a leader: %s", strings.Join(errs, "; "))
	})
	return st
}

// Leader is the Raft leader, as `colony status` names it.
func (c *Cluster) Leader() *Node {
	c.t.Helper()
	n, err := c.node(c.healthy().Leader.Name)
	if err != nil {
		c.t.Fatal(err)
	}
	return n
}

// Follower is a voter that does not lead: losing it costs the cluster a
// voter but not its leader.
func (c *Cluster) Follower() *Node {
	c.t.Helper()
	st := c.healthy()
	for _, v := range st.Voters {
		if v.Voter && !v.Leader {
			n, err := c.node(v.Name)
			if err != nil {
				c.t.Fatal(err)
			}
			return n
		}
	}
	c.t.Fatalf("no follower voter: %+v", st.Voters)
	return nil
}

// WaitNewLeader waits until every observer names the same leader, other
// than old, and logs how long after since that took: the election time as
// a client sees it. It also logs when the winner entered the leader state
// (from its log) and when the first observer named it: voters learn the
// leader from Raft, the other nodes from the roles it gossips. Each
// observer is polled on its own: one status call can take seconds while a
// hung leader is still thought alive, and must not delay the others.
func (c *Cluster) WaitNewLeader(step string, old *Node, observers []*Node, since time.Time) time.Duration {
	c.t.Helper()
	named := make([]time.Duration, len(observers)) // when each first named a new leader
	errs := make([]error, len(observers))
	var slowest time.Duration // the slowest single status call
	var mu sync.Mutex         // guards slowest
	var wg sync.WaitGroup
	for i, o := range observers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = retry.Wait(convergeTimeout, func() error {
				asked := time.Now()
				st, err := c.Status(o)
				mu.Lock()
				slowest = max(slowest, time.Since(asked))
				mu.Unlock()
				switch {
				case err != nil:
					return err
				case st.Leader == nil:
					return fmt.Errorf("%s: no leader yet: %s", o.Name, st.Problem)
				case st.Leader.Name == old.Name:
					return fmt.Errorf("%s still names %s leader", o.Name, old.Name)
				}
				named[i] = time.Since(since)
				return nil
			})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			c.t.Fatalf("%s: no new leader after %s: %v", step, convergeTimeout, err)
		}
	}
	// They may have named different leaders on the way (a second
	// election): wait until they agree.
	var leader string
	retry.Until(c.t, convergeTimeout, func() error {
		leader = ""
		for _, o := range observers {
			st, err := c.Status(o)
			switch {
			case err != nil:
				return err
			case st.Leader == nil || st.Leader.Name == old.Name:
				return fmt.Errorf("%s names leader %+v", o.Name, st.Leader)
			case leader != "" && st.Leader.Name != leader:
				return fmt.Errorf("observers name leaders %s and %s", leader, st.Leader.Name)
			}
			leader = st.Leader.Name
		}
		return nil
	})
	d := time.Since(since)
	if last := slices.Max(named); d-last < time.Second {
		d = last // they agreed on the first answer
	}
	elected := "?"
	if n, err := c.node(leader); err == nil {
		if at, ok := leaderSince(n, since); ok {
			elected = at.Sub(since).Round(10 * time.Millisecond).String()
		}
	}
	c.t.Logf("%-28s %s took over from %s: Raft leader after %s, named by the first node after %s, by all %d after %s (slowest status call %s)",
		step+":", leader, old.Name, elected, slices.Min(named).Round(10*time.Millisecond), len(observers), d.Round(10*time.Millisecond), slowest.Round(10*time.Millisecond))
	return d
}

// leaderSince returns when node n last entered the Raft leader state
// after since, from its log.
func leaderSince(n *Node, since time.Time) (time.Time, bool) {
	out, err := exec.Command("docker", "logs", "--since", since.Add(-time.Second).Format(time.RFC3339Nano), n.Container).CombinedOutput()
	if err != nil {
		return time.Time{}, false
	}
	var at time.Time
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.Contains(line, `msg="entering leader state"`) || !strings.HasPrefix(line, "time=") {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		if t, err := time.Parse(time.RFC3339Nano, ts); err == nil && t.After(since) {
			at = t
		}
	}
	return at, !at.IsZero()
}
