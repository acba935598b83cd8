package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// bootstrapRounds repeats the race: a bad tie-break between nodes that
// start together shows up only now and then. Each round costs about 10 s.
const bootstrapRounds = 3

// TestBootstrapExpect starts three containers at the same instant, each
// with --bootstrap-expect 3 and the same --retry-join address (one of
// them, itself included). They must form exactly one cluster: every node
// names the same leader, the same three voters and the same term, a write
// through any node reads back from every node, and no node ever
// bootstrapped a cluster of its own.
func TestBootstrapExpect(t *testing.T) {
	needImage(t)
	for round := 1; round <= bootstrapRounds; round++ {
		t.Run(fmt.Sprintf("round-%d", round), func(t *testing.T) {
			c := NewCluster(t, fmt.Sprintf("bx%d", round))
			var nodes []*Node
			var containers []string
			for i := 1; i <= 3; i++ {
				n := c.Create(fmt.Sprintf("b%d", i), i, nil, agentArgs("--bootstrap-expect", "3", "--retry-join", "b1", "--retry-max", "0")...)
				nodes = append(nodes, n)
				containers = append(containers, n.Container)
			}
			start := time.Now()
			mustDocker(t, append([]string{"start"}, containers...)...)
			c.Converge("bootstrap-expect 3", nodes, c.Want(nil))
			t.Logf("round %d: one cluster of 3 voters %s after start", round, time.Since(start).Round(10*time.Millisecond))
			c.Commit("bootstrapped", nodes[round-1])
			c.Converge("write through "+nodes[round-1].Name, nodes, c.Want(nil))
			for _, n := range nodes {
				logs, err := exec.Command("docker", "logs", n.Container).CombinedOutput()
				if err != nil {
					t.Fatalf("docker logs %s: %v", n.Name, err)
				}
				if strings.Contains(string(logs), "as its only voter") {
					t.Errorf("%s bootstrapped a one-voter cluster of its own despite --bootstrap-expect 3:\n%s", n.Name, logs)
				}
			}
		})
	}
}
