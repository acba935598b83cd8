package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"colony/agent"
	"colony/consensus"
	"colony/test/harness"
	"colony/test/retry"
)

// Raft tests run real processes too. Each test owns a /24 of loopback
// addresses (127.0.82.x and up; 127.0.77.x belongs to process_test.go), so a
// test never meets another test's leftover agents on the default ports.
//
// Waits poll the HTTP API directly (what the CLI calls): a CLI process per
// node per poll would take the CPU the agents need on a 2-core machine.
// What a test then asserts goes through the CLI, as an operator would.

// subnet is one test's loopback /24.
type subnet int

func (s subnet) ip(i int) string { return fmt.Sprintf("127.0.%d.%d", int(s), i) }

// startFromSeed starts n agents on s: node 1 alone (it bootstraps a
// one-voter cluster), the others joining it; args go to every agent.
func startFromSeed(t *testing.T, s subnet, n int, args ...string) []*harness.Proc {
	t.Helper()
	root := t.TempDir()
	procs := []*harness.Proc{harness.Start(t, "n1", s.ip(1), filepath.Join(root, "n1"), args...)}
	for i := 2; i <= n; i++ {
		name := fmt.Sprintf("n%d", i)
		procs = append(procs, harness.Start(t, name, s.ip(i), filepath.Join(root, name), append([]string{"--join", procs[0].GossipAddr()}, args...)...))
	}
	return procs
}

// apiStatus is GET /v1/status: what `colony status --format json` prints.
func apiStatus(p *harness.Proc) (*agent.ClusterStatus, error) {
	c, err := agent.NewClient(p.HTTPAddr())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, _, err := c.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.Name, err)
	}
	return st, nil
}

// agreement is what every node of a cluster said at once.
type agreement struct {
	Leader string   // leader's name
	Voters []string // voters' names, sorted
}

// agreeOnce checks, in one pass, that every proc names the same leader, not
// one of notLeader. With voters > 0 it also wants exactly that many voters,
// all alive per gossip and none of them in gone, identical on every node.
func agreeOnce(procs []*harness.Proc, voters int, notLeader, gone []string) (agreement, error) {
	var first agreement
	for i, p := range procs {
		st, err := apiStatus(p)
		if err != nil {
			return first, err
		}
		if st.Leader == nil {
			return first, fmt.Errorf("%s knows no leader (%s)", p.Name, st.Problem)
		}
		if slices.Contains(notLeader, st.Leader.Name) {
			return first, fmt.Errorf("%s still names %s as the leader", p.Name, st.Leader.Name)
		}
		got := agreement{Leader: st.Leader.Name}
		if voters > 0 {
			for _, v := range st.Voters {
				if !v.Voter {
					continue
				}
				if v.Status != "alive" || slices.Contains(gone, v.Name) {
					return first, fmt.Errorf("%s lists voter %s (%s)", p.Name, v.Name, v.Status)
				}
				got.Voters = append(got.Voters, v.Name)
			}
			sort.Strings(got.Voters)
			if len(got.Voters) != voters {
				return first, fmt.Errorf("%s reports %d voters %v, want %d", p.Name, len(got.Voters), got.Voters, voters)
			}
		}
		if i == 0 {
			first = got
			continue
		}
		if got.Leader != first.Leader || !slices.Equal(got.Voters, first.Voters) {
			return first, fmt.Errorf("%s says leader %s voters %v; %s says %s %v", p.Name, got.Leader, got.Voters, procs[0].Name, first.Leader, first.Voters)
		}
	}
	return first, nil
}

// waitAgree polls agreeOnce until it holds.
func waitAgree(t *testing.T, procs []*harness.Proc, timeout time.Duration, voters int, notLeader, gone []string) agreement {
	t.Helper()
	var a agreement
	retry.Until(t, timeout, func() error {
		var err error
		a, err = agreeOnce(procs, voters, notLeader, gone)
		return err
	})
	return a
}

// byName finds a proc.
func byName(t *testing.T, procs []*harness.Proc, name string) *harness.Proc {
	t.Helper()
	for _, p := range procs {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no process named %s", name)
	return nil
}

// without returns procs minus the named one.
func without(procs []*harness.Proc, name string) []*harness.Proc {
	var out []*harness.Proc
	for _, p := range procs {
		if p.Name != name {
			out = append(out, p)
		}
	}
	return out
}

// cliStatus runs `colony status --format json`, which exits 2 but still
// prints the JSON when the cluster is not healthy.
func cliStatus(t *testing.T, p *harness.Proc) (agent.ClusterStatus, int, error) {
	var st agent.ClusterStatus
	out, code := harness.CLI(t, "status", "--format", "json", "--http-addr", p.HTTPAddr())
	if code != 0 && code != 2 {
		return st, code, fmt.Errorf("colony status on %s: exit %d: %s", p.Name, code, out)
	}
	// With exit 2 the JSON is followed by the error line: decode the first value.
	if err := json.NewDecoder(strings.NewReader(out)).Decode(&st); err != nil {
		return st, code, fmt.Errorf("colony status on %s: bad JSON %q: %w", p.Name, out, err)
	}
	return st, code, nil
}

// cliPeers is `colony raft peers --format json` as "name=id:voter/leader"
// lines, sorted, so two nodes' answers compare as strings.
func cliPeers(t *testing.T, p *harness.Proc) (string, error) {
	var vs []agent.VoterInfo
	if err := harness.CLIJSON(t, &vs, "raft", "peers", "--format", "json", "--http-addr", p.HTTPAddr()); err != nil {
		return "", err
	}
	var lines []string
	for _, v := range vs {
		lines = append(lines, fmt.Sprintf("%s=%s voter=%v leader=%v", v.Name, v.ID, v.Voter, v.Leader))
	}
	sort.Strings(lines)
	return strings.Join(lines, "; "), nil
}

// samePeers checks that every proc reports the identical Raft
// configuration through the CLI, and returns it.
func samePeers(t *testing.T, procs []*harness.Proc) string {
	t.Helper()
	var ref string
	for i, p := range procs {
		got, err := cliPeers(t, p)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			ref = got
		} else if got != ref {
			t.Fatalf("two Raft configurations:\n%s: %s\n%s: %s", procs[0].Name, ref, p.Name, got)
		}
	}
	return ref
}

// cliSet writes a setting through p, retrying while the cluster is between
// leaders (a set of the same value is idempotent).
func cliSet(t *testing.T, p *harness.Proc, key, value string) {
	t.Helper()
	retry.Until(t, 30*time.Second, func() error {
		if out, code := harness.CLI(t, "settings", "set", "--http-addr", p.HTTPAddr(), key, value); code != 0 {
			return fmt.Errorf("settings set %s through %s: exit %d: %s", key, p.Name, code, out)
		}
		return nil
	})
}

// cliGet reads one setting through p with the given consistency.
func cliGet(t *testing.T, p *harness.Proc, key, consistency string) (string, error) {
	out, code := harness.CLI(t, "settings", "get", "--consistency", consistency, "--http-addr", p.HTTPAddr(), key)
	if code != 0 {
		return "", fmt.Errorf("settings get %s --consistency %s on %s: exit %d: %s", key, consistency, p.Name, code, out)
	}
	return strings.TrimSpace(out), nil
}

// cliList reads every setting through p with the given consistency.
func cliList(t *testing.T, p *harness.Proc, consistency string) (map[string]string, error) {
	var list []consensus.Setting
	if err := harness.CLIJSON(t, &list, "settings", "list", "--format", "json", "--consistency", consistency, "--http-addr", p.HTTPAddr()); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, s := range list {
		out[s.Key] = s.Value
	}
	return out, nil
}

// readEverywhere checks that every proc reads want (key → value) with a
// linearizable read. The first read after an election may find the new
// leader still confirming itself, hence the poll.
func readEverywhere(t *testing.T, procs []*harness.Proc, want map[string]string) {
	t.Helper()
	for _, p := range procs {
		retry.Until(t, 30*time.Second, func() error {
			got, err := cliList(t, p, "consistent")
			if err != nil {
				return err
			}
			for k, v := range want {
				if got[k] != v {
					return fmt.Errorf("%s reads %s=%q, want %q", p.Name, k, got[k], v)
				}
			}
			return nil
		})
	}
}

// nodeID reads a node's ID from its data dir (written before it joins).
func nodeID(t *testing.T, p *harness.Proc) string {
	t.Helper()
	var id string
	retry.Until(t, 30*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(p.DataDir, "node-id"))
		id = strings.TrimSpace(string(b))
		return err
	})
	return id
}

// followerVoter picks a voter that is not the leader.
func followerVoter(a agreement) string {
	for _, v := range a.Voters {
		if v != a.Leader {
			return v
		}
	}
	return ""
}

// raftRunning is, per node name, whether the node gossips the voter role,
// i.e. runs Raft with itself in its configuration (`colony members`).
func raftRunning(t *testing.T, p *harness.Proc) map[string]bool {
	t.Helper()
	var ms []agent.MemberInfo
	retry.Until(t, 30*time.Second, func() error {
		return harness.CLIJSON(t, &ms, "members", "--format", "json", "--http-addr", p.HTTPAddr())
	})
	out := map[string]bool{}
	for _, m := range ms {
		if slices.Contains(m.Roles, "voter") {
			out[m.Name] = true
		}
	}
	return out
}

// raftDiagnosis says, per node, what it reports: leader, voters and
// whether it runs Raft. It goes into failure messages.
func raftDiagnosis(t *testing.T, procs []*harness.Proc) string {
	running := raftRunning(t, procs[0])
	var b strings.Builder
	for _, p := range procs {
		st, err := apiStatus(p)
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", p.Name, err)
			continue
		}
		leader := "none"
		if st.Leader != nil {
			leader = st.Leader.Name
		}
		var vs []string
		for _, v := range st.Voters {
			vs = append(vs, v.Name+"("+v.Status+")")
		}
		fmt.Fprintf(&b, "%s: runs raft %v, leader %s, voters %v, health %s %s\n", p.Name, running[p.Name], leader, vs, st.Health, st.Problem)
	}
	return b.String()
}
