package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"colony/test/harness"
	"colony/test/retry"
)

const (
	// convergeTimeout bounds every wait for the cluster to agree. The local
	// gossip profile declares a node dead in about 5-10 s and a healed
	// partition merges within the gossip reconnect interval (30 s); the
	// rest is headroom for a loaded 2-core machine.
	convergeTimeout = 2 * time.Minute
	// cliTimeout bounds one colony CLI call, so a query to a frozen node
	// fails fast instead of hanging for the CLI's own two minutes.
	cliTimeout = 15 * time.Second
	// deadVoterTimeout is the agents' --dead-voter-timeout: short, so a
	// dead voter is replaced within a chaos step instead of after the
	// default 30 s, yet longer than a few lost probes under load.
	deadVoterTimeout = "5s"
)

// Cluster is a set of colony containers on one private Docker network
// with a fixed /24 subnet, so every container keeps its IP across restarts
// and reconnects (as a VM's NIC does).
type Cluster struct {
	t      *testing.T
	image  string
	prefix string // container and network name prefix
	Net    string // network name
	Subnet string // e.g. 10.213.7.0/24
	base   string // e.g. 10.213.7.

	mu    sync.Mutex
	nodes []*Node
	ids   map[string]string // node name -> node ID recorded at boot

	// witness is the committed state the suite wrote (see Commit), in
	// write order; refused holds keys whose write a minority refused and
	// that must therefore never appear.
	witness []setting
	refused []string
	// problem is the last `problem` a critical observer reported.
	problem string
}

// member is one entry of `colony members --format json`, the fields the
// suite compares. (Decoded here rather than with the agent package's types
// so the suite keeps testing the CLI's output, not the Go API.)
type member struct {
	Name    string `json:"name"`
	ID      string `json:"id"`
	Address string `json:"address"`
	Status  string `json:"status"`
}

// selfInfo is the part of `colony info --format json` the suite uses.
type selfInfo struct {
	Member    member    `json:"member"`
	StartedAt time.Time `json:"started_at"`
}

// Node is one container running `colony agent`.
type Node struct {
	Name      string // node name, container host name and DNS alias
	Container string // container name
	IP        string
	detached  bool // disconnected from the network (partitioned)
	paused    bool
}

// NewCluster creates the network; nodes are added with Run or Boot.
func NewCluster(t *testing.T, name string) *Cluster {
	t.Helper()
	img := needImage(t)
	c := &Cluster{t: t, image: img, prefix: runID + "-" + name, ids: map[string]string{}}
	c.Net = c.prefix + "-net"
	// A random /24 in 10.200-249.x: retry on overlap with an existing
	// network (another run, or the host's own).
	var err error
	for range 20 {
		c.base = fmt.Sprintf("10.%d.%d.", 200+mrand.IntN(50), mrand.IntN(256))
		c.Subnet = c.base + "0/24"
		args := append([]string{"network", "create", "--driver", "bridge", "--subnet", c.Subnet}, labelArgs()...)
		if _, err = docker(dockerTimeout, append(args, c.Net)...); err == nil {
			break
		}
		if !strings.Contains(err.Error(), "overlap") {
			t.Fatal(err)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.destroy)
	return c
}

// destroy removes the containers (with their volumes) and the network,
// printing each container's log tail first if the test failed.
func (c *Cluster) destroy() {
	c.mu.Lock()
	nodes := append([]*Node(nil), c.nodes...)
	c.mu.Unlock()
	var names []string
	for _, n := range nodes {
		if c.t.Failed() {
			out, _ := exec.Command("docker", "logs", "--tail", "60", n.Container).CombinedOutput()
			c.t.Logf("--- last log lines of %s ---\n%s", n.Name, out)
		}
		names = append(names, n.Container)
	}
	if len(names) > 0 {
		if _, err := docker(dockerTimeout, append([]string{"rm", "-f", "-v"}, names...)...); err != nil {
			c.t.Logf("cleanup: %v", err)
		}
	}
	if _, err := docker(dockerTimeout, "network", "rm", c.Net); err != nil {
		c.t.Logf("cleanup: %v", err)
	}
}

// IP returns the i-th fixed address of the subnet (i from 1).
func (c *Cluster) IP(i int) string { return fmt.Sprintf("%s%d", c.base, 10+i) }

// Create makes a container for node name at the i-th address without
// starting it; args go to `colony` (e.g. "agent", "--join", "n1").
// dockerArgs go to `docker create` before the image.
func (c *Cluster) Create(name string, i int, dockerArgs []string, args ...string) *Node {
	c.t.Helper()
	n := &Node{Name: name, Container: c.prefix + "-" + name, IP: c.IP(i)}
	full := []string{"create", "--name", n.Container, "--hostname", name,
		"--network", c.Net, "--ip", n.IP, "--network-alias", name, "--stop-timeout", "15"}
	full = append(full, labelArgs()...)
	full = append(full, dockerArgs...)
	full = append(full, c.image)
	full = append(full, args...)
	mustDocker(c.t, full...)
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	return n
}

// agentArgs is `colony agent` with the suite's timers and args: the local
// gossip profile and a short dead-voter timeout. No address flags: the
// agent binds 0.0.0.0 and advertises the container's only private IP.
func agentArgs(args ...string) []string {
	return append([]string{"agent", "--gossip-profile", "local", "--dead-voter-timeout", deadVoterTimeout}, args...)
}

// Run creates and starts node name with agentArgs.
func (c *Cluster) Run(name string, i int, args ...string) *Node {
	c.t.Helper()
	n := c.Create(name, i, nil, agentArgs(args...)...)
	mustDocker(c.t, "start", n.Container)
	return n
}

// Boot starts a seed n1 and size-1 nodes that join it by its DNS name with
// an unlimited retry budget (how image-baked agents are configured), then
// waits until every node lists every other alive and records their IDs.
func (c *Cluster) Boot(size int) []*Node {
	c.t.Helper()
	nodes := []*Node{c.Run("n1", 1)}
	for i := 2; i <= size; i++ {
		nodes = append(nodes, c.Run(fmt.Sprintf("n%d", i), i, "--retry-join", "n1", "--retry-max", "0"))
	}
	c.Converge("boot", nodes, c.Want(nil))
	return nodes
}

// Nodes returns every node of the cluster, in creation order.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Node(nil), c.nodes...)
}

// Others returns every node but the given ones.
func (c *Cluster) Others(skip ...*Node) []*Node {
	var out []*Node
next:
	for _, n := range c.Nodes() {
		for _, s := range skip {
			if n == s {
				continue next
			}
		}
		out = append(out, n)
	}
	return out
}

// Want is the member status every node should report: alive, except the
// given overrides (name -> status).
func (c *Cluster) Want(override map[string]string) map[string]string {
	want := map[string]string{}
	for _, n := range c.Nodes() {
		want[n.Name] = "alive"
	}
	for k, v := range override {
		want[k] = v
	}
	return want
}

// Kill sends SIGKILL to the agent (PID 1 of the container).
func (c *Cluster) Kill(n *Node) { mustDocker(c.t, "kill", "--signal", "KILL", n.Container) }

// Start starts a stopped container again, with its volume (and node ID).
func (c *Cluster) Start(n *Node) { mustDocker(c.t, "start", n.Container) }

// Restart stops the container with SIGTERM (a graceful leave) and starts
// it, then waits until the agent answers as a new process.
func (c *Cluster) Restart(n *Node) { c.RestartWith(n, nil) }

// RestartWith is Restart that runs whileDown (if not nil) between the
// stop and the start: `docker restart` is exactly stop then start.
func (c *Cluster) RestartWith(n *Node, whileDown func()) {
	c.t.Helper()
	before, err := c.Self(n)
	if err != nil {
		c.t.Fatal(err)
	}
	mustDocker(c.t, "stop", n.Container)
	if whileDown != nil {
		whileDown()
	}
	mustDocker(c.t, "start", n.Container)
	retry.Until(c.t, convergeTimeout, func() error {
		after, err := c.Self(n)
		if err != nil {
			return err
		}
		if !after.StartedAt.After(before.StartedAt) {
			return fmt.Errorf("%s still reports the start time %s", n.Name, before.StartedAt)
		}
		return nil
	})
}

// Self is node n's own description (`colony info`).
func (c *Cluster) Self(n *Node) (selfInfo, error) {
	var info struct {
		Self selfInfo `json:"self"`
	}
	out, err := c.Query(n, "info", "--format", "json")
	if err != nil {
		return info.Self, err
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		return info.Self, fmt.Errorf("%s: info: bad JSON %q: %w", n.Name, out, err)
	}
	return info.Self, nil
}

// Pause freezes every process of the container: a hung node.
func (c *Cluster) Pause(n *Node) { mustDocker(c.t, "pause", n.Container); n.paused = true }

// Unpause thaws a paused container.
func (c *Cluster) Unpause(n *Node) { mustDocker(c.t, "unpause", n.Container); n.paused = false }

// Disconnect cuts the container off the network: a partition of one.
func (c *Cluster) Disconnect(n *Node) {
	mustDocker(c.t, "network", "disconnect", "--force", c.Net, n.Container)
	n.detached = true
}

// Connect reattaches a disconnected container with its old IP and alias.
func (c *Cluster) Connect(n *Node) {
	mustDocker(c.t, "network", "connect", "--ip", n.IP, "--alias", n.Name, c.Net, n.Container)
	n.detached = false
}

// cli runs the host's colony binary with a deadline.
func (c *Cluster) cli(args ...string) (string, error) { return colonyCLI(c.t, args...) }

// colonyCLI runs the host's colony binary (built once per run) with a
// deadline and returns its standard output (standard error goes into the
// error only: `colony status` prints its JSON and exits 2 when unhealthy).
func colonyCLI(t testing.TB, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.Binary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("colony %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()+" "+stdout.String()))
	}
	return stdout.String(), nil
}

// Query runs a colony client command against node n and returns its
// output: from the host across the bridge network when n is attached, or
// inside the container (docker exec) when n is partitioned away.
func (c *Cluster) Query(n *Node, args ...string) (string, error) {
	if n.detached {
		full := append([]string{"exec", n.Container, "/colony"}, args...)
		return docker(cliTimeout, full...)
	}
	return c.cli(append(args, "--http-addr", n.IP+":7070")...)
}

// Members is node n's view of the cluster, by member name.
func (c *Cluster) Members(n *Node) (map[string]member, error) {
	out, err := c.Query(n, "members", "--format", "json")
	if err != nil {
		return nil, err
	}
	var ms []member
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		return nil, fmt.Errorf("%s: members: bad JSON %q: %w", n.Name, out, err)
	}
	view := map[string]member{}
	for _, m := range ms {
		view[m.Name] = m
	}
	return view, nil
}

// Converge waits until the cluster, as seen from each of observers, is in
// the wanted state, logs how long that took and returns it. This is the one
// place every check of "the cluster agrees" lives:
//   - membership: each observer lists exactly want (name -> status), and
//     every observer gives every member the same ID and address;
//   - identity: every node's ID is the one it had at boot (the data dir
//     volume survived), and IDs are distinct;
//   - consensus (checkStatus): when want has a majority of the nodes alive,
//     every observer reports health passing and the same leader, voters
//     (3 live ones, or 1 with fewer than 3 nodes alive) and term; when the
//     observers are a minority, each reports critical and no leader;
//   - committed state (checkCommitted): with a majority, every setting the
//     suite committed (Commit) reads back from every observer with
//     consistency=consistent, and from every voter's own store (stale).
func (c *Cluster) Converge(step string, observers []*Node, want map[string]string) time.Duration {
	c.t.Helper()
	start := time.Now()
	var last error // the last disagreement: says what was slow
	var agreed clusterStatus
	retry.Until(c.t, convergeTimeout, func() (err error) {
		defer func() {
			if err != nil {
				last = fmt.Errorf("at %s: %w", time.Since(start).Round(10*time.Millisecond), err)
			}
		}()
		views := map[string]map[string]member{}
		for _, o := range observers {
			v, err := c.Members(o)
			if err != nil {
				return err
			}
			if got, w := summary(v), summarize(want); got != w {
				return fmt.Errorf("%s: %s sees %q, want %q", step, o.Name, got, w)
			}
			views[o.Name] = v
		}
		if err := c.agree(views); err != nil {
			return fmt.Errorf("%s: %w", step, err)
		}
		st, err := c.checkStatus(observers, want)
		if err != nil {
			return fmt.Errorf("%s: %w", step, err)
		}
		if st.Leader != nil {
			if err := c.checkCommitted(observers, st); err != nil {
				return fmt.Errorf("%s: %w", step, err)
			}
		}
		agreed = st
		return nil
	})
	d := time.Since(start)
	c.t.Logf("%-28s %d nodes agree on %q after %s", step+":", len(observers), summarize(want), d.Round(10*time.Millisecond))
	if agreed.Leader != nil {
		c.t.Logf("%-28s   leader %s, term %d, voters %s, %d committed settings read back", "", agreed.Leader.Name, agreed.Raft.Term, strings.Join(agreed.voterNames(), " "), len(c.witness))
	} else {
		c.t.Logf("%-28s   no leader, health critical: %s", "", c.problem)
	}
	if last != nil && d > 2*time.Second {
		c.t.Logf("%-28s   (last disagreement %v)", "", last)
	}
	return d
}

// agree checks that the observers' views match each other and the node IDs
// recorded at boot (recording them the first time).
func (c *Cluster) agree(views map[string]map[string]member) error {
	var ref map[string]member
	var refName string
	for name, v := range views {
		if ref == nil {
			ref, refName = v, name
			continue
		}
		for m, info := range v {
			r := ref[m]
			if info.ID != r.ID || info.Address != r.Address {
				return fmt.Errorf("%s and %s disagree on %s: %s@%s vs %s@%s", name, refName, m, info.ID, info.Address, r.ID, r.Address)
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[string]string{}
	for m, info := range ref {
		if other, dup := seen[info.ID]; dup {
			return fmt.Errorf("%s and %s share node ID %s", m, other, info.ID)
		}
		seen[info.ID] = m
		if old, ok := c.ids[m]; ok && old != info.ID {
			return fmt.Errorf("%s's node ID changed from %s to %s: its data dir was lost", m, old, info.ID)
		}
	}
	for m, info := range ref {
		if _, ok := c.ids[m]; !ok {
			c.ids[m] = info.ID
		}
	}
	return nil
}

func summary(v map[string]member) string {
	m := map[string]string{}
	for n, info := range v {
		m[n] = info.Status
	}
	return summarize(m)
}

func summarize(m map[string]string) string {
	var s []string
	for n, st := range m {
		s = append(s, n+"="+st)
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

// Exit waits for a container to stop by itself and returns its exit code
// and its log.
func (c *Cluster) Exit(n *Node, timeout time.Duration) (int, string) {
	c.t.Helper()
	var code int
	retry.Until(c.t, timeout, func() error {
		out, err := docker(dockerTimeout, "inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", n.Container)
		if err != nil {
			return err
		}
		var running bool
		if _, err := fmt.Sscan(out, &running, &code); err != nil {
			return fmt.Errorf("inspect %s: %q: %w", n.Name, out, err)
		}
		if running {
			return fmt.Errorf("%s is still running", n.Name)
		}
		return nil
	})
	logs, _ := exec.Command("docker", "logs", n.Container).CombinedOutput()
	return code, string(logs)
}
