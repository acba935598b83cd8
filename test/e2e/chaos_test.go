package e2e

import (
	"fmt"
	"testing"
	"time"
)

// clusterSize is kept small: the suite shares a 2-core machine with the
// rest of `make test`, and five nodes already have a seed, a majority and
// a minority for every fault.
const clusterSize = 5

// TestChaos boots five containers that join one seed by its DNS name, then
// breaks them one way after another. After each fault the survivors must
// agree on who is dead, and after each repair every node must agree that
// everyone is alive again, with the node IDs it had at boot.
func TestChaos(t *testing.T) {
	c := NewCluster(t, "chaos")
	start := time.Now()
	nodes := c.Boot(clusterSize)
	t.Logf("boot: %d containers up and agreeing after %s", clusterSize, time.Since(start).Round(10*time.Millisecond))

	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, func(t *testing.T) { c.t = t; f(t) }) {
			c.t = t
			t.FailNow()
		}
		c.t = t
	}

	step("kill-9", func(t *testing.T) {
		n := nodes[4]
		c.Kill(n)
		c.Converge("kill -9 "+n.Name, c.Others(n), c.Want(map[string]string{n.Name: "dead"}))
		c.Start(n)
		c.Converge("restart "+n.Name, c.Nodes(), c.Want(nil))
	})

	step("pause", func(t *testing.T) {
		n := nodes[3]
		c.Pause(n)
		t.Cleanup(func() {
			if n.paused {
				_, _ = docker(dockerTimeout, "unpause", n.Container)
			}
		})
		c.Converge("pause "+n.Name, c.Others(n), c.Want(map[string]string{n.Name: "dead"}))
		c.Unpause(n)
		c.Converge("unpause "+n.Name, c.Nodes(), c.Want(nil))
	})

	step("partition", func(t *testing.T) {
		n := nodes[2]
		c.Disconnect(n)
		t.Cleanup(func() {
			if n.detached {
				_, _ = docker(dockerTimeout, "network", "connect", "--ip", n.IP, "--alias", n.Name, c.Net, n.Container)
			}
		})
		// Both sides: the majority sees n dead, n sees everyone else dead.
		c.Converge("partition "+n.Name+" (majority)", c.Others(n), c.Want(map[string]string{n.Name: "dead"}))
		minority := map[string]string{}
		for _, o := range c.Others(n) {
			minority[o.Name] = "dead"
		}
		c.Converge("partition "+n.Name+" (minority)", []*Node{n}, c.Want(minority))
		c.Connect(n)
		c.Converge("heal "+n.Name, c.Nodes(), c.Want(nil))
	})

	step("restart-leader", func(t *testing.T) {
		n := c.Leader()
		c.Restart(n)
		c.Converge("restart leader "+n.Name, c.Nodes(), c.Want(nil))
	})

	step("rolling-restart", func(t *testing.T) {
		start := time.Now()
		for _, n := range c.Nodes() {
			// One at a time, each back before the next goes: what keeps a
			// Raft quorum once there is one.
			c.Restart(n)
			c.Converge(fmt.Sprintf("rolling restart %s", n.Name), c.Nodes(), c.Want(nil))
		}
		t.Logf("rolling restart of %d nodes took %s", clusterSize, time.Since(start).Round(10*time.Millisecond))
	})
}
