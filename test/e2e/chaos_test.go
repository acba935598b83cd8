package e2e

import (
	"fmt"
	"testing"
	"time"
)

// clusterSize is kept small: the suite shares a 2-core machine with the
// rest of `make test`, and five nodes already have a seed, a majority and
// a minority for every fault, and two nodes that are not voters.
const clusterSize = 5

// TestChaos boots five containers that join one seed by its DNS name, then
// breaks them one way after another, choosing each victim by its Raft role.
// After each fault the survivors must agree on who is dead and on one
// leader, three live voters and one term; after each repair every node must
// agree that everyone is alive again, with the node IDs it had at boot.
// A setting is committed before the chaos and during every fault; after
// every step each of them reads back from every node (see Converge).
func TestChaos(t *testing.T) {
	c := NewCluster(t, "chaos")
	start := time.Now()
	nodes := c.Boot(clusterSize)
	t.Logf("boot: %d containers up and agreeing after %s", clusterSize, time.Since(start).Round(10*time.Millisecond))
	c.Commit("before the chaos", nodes[clusterSize-1])

	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, func(t *testing.T) { c.t = t; f(t) }) {
			c.t = t
			t.FailNow()
		}
		c.t = t
	}

	// A voter crashes: the leader replaces it after the dead-voter timeout;
	// when it comes back it is retired and rejoins as a plain member.
	step("kill-9", func(t *testing.T) {
		n := c.Follower()
		c.Kill(n)
		c.Converge("kill -9 voter "+n.Name, c.Others(n), c.Want(map[string]string{n.Name: "dead"}))
		c.Commit("while "+n.Name+" is dead", c.Others(n)[0])
		c.Start(n)
		c.Converge("restart "+n.Name, c.Nodes(), c.Want(nil))
	})

	// The leader hangs: the others elect a new one; when it thaws it finds
	// a newer term and steps down.
	step("pause", func(t *testing.T) {
		n := c.Leader()
		paused := time.Now()
		c.Pause(n)
		t.Cleanup(func() {
			if n.paused {
				_, _ = docker(dockerTimeout, "unpause", n.Container)
			}
		})
		c.WaitNewLeader("pause leader "+n.Name, n, c.Others(n), paused)
		c.Converge("pause leader "+n.Name, c.Others(n), c.Want(map[string]string{n.Name: "dead"}))
		c.Commit("while "+n.Name+" is paused", c.Others(n)[0])
		c.Unpause(n)
		c.Converge("unpause "+n.Name, c.Nodes(), c.Want(nil))
	})

	// A voter is cut off: the majority carries on (and replaces it); the
	// node alone reports the quorum loss and refuses writes; after the
	// heal there is one history, without the refused write.
	step("partition", func(t *testing.T) {
		n := c.Follower()
		c.Disconnect(n)
		t.Cleanup(func() {
			if n.detached {
				_, _ = docker(dockerTimeout, "network", "connect", "--ip", n.IP, "--alias", n.Name, c.Net, n.Container)
			}
		})
		// Both sides: the majority sees n dead, n sees everyone else dead.
		c.Converge("partition voter "+n.Name+" (majority)", c.Others(n), c.Want(map[string]string{n.Name: "dead"}))
		minority := map[string]string{}
		for _, o := range c.Others(n) {
			minority[o.Name] = "dead"
		}
		c.Converge("partition "+n.Name+" (minority)", []*Node{n}, c.Want(minority))
		c.Commit("while "+n.Name+" is cut off", c.Others(n)[0])
		c.CommitRefused("on the minority "+n.Name, n)
		c.Connect(n)
		c.Converge("heal "+n.Name, c.Nodes(), c.Want(nil))
	})

	// The leader restarts (SIGTERM: a graceful leave): the others elect a
	// new leader and commit without it; it comes back as a member.
	step("restart-leader", func(t *testing.T) {
		n := c.Leader()
		stopped := time.Now()
		c.RestartWith(n, func() {
			t.Logf("%-28s docker stop (graceful leave) took %s", "stop leader "+n.Name+":", time.Since(stopped).Round(10*time.Millisecond))
			c.WaitNewLeader("stop leader "+n.Name, n, c.Others(n), stopped)
			c.Commit("while leader "+n.Name+" is down", c.Others(n)[0])
		})
		c.Converge("restart leader "+n.Name, c.Nodes(), c.Want(nil))
	})

	step("rolling-restart", func(t *testing.T) {
		start := time.Now()
		for _, n := range c.Nodes() {
			// One at a time, each back before the next goes, which keeps a
			// Raft quorum; a write goes in while each one is down.
			c.RestartWith(n, func() { c.Commit("while "+n.Name+" restarts", c.Others(n)[0]) })
			c.Converge(fmt.Sprintf("rolling restart %s", n.Name), c.Nodes(), c.Want(nil))
		}
		t.Logf("rolling restart of %d nodes took %s", clusterSize, time.Since(start).Round(10*time.Millisecond))
	})
}
