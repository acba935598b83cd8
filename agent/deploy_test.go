package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"colony/test/retry"
)

func putSpec(a *Agent, spec string) (int, string) {
	req, _ := http.NewRequest("PUT", "http://"+a.HTTPAddr()+"/v1/deployments", strings.NewReader(spec))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func deployment(a *Agent, name string) (DeploymentDetail, error) {
	var d DeploymentDetail
	c, _ := NewClient(a.HTTPAddr())
	err := c.Do(context.Background(), "GET", "/v1/deployments/"+name, nil, &d)
	return d, err
}

// TestPlacementThroughRaft: a deployment committed through any node is
// placed by the leader, spread and re-placed when a node dies or drains;
// one no node can host is pending with the reason.
func TestPlacementThroughRaft(t *testing.T) {
	c := newCluster(t, 183)
	for i := 1; i <= 4; i++ {
		zone := fmt.Sprintf("z%d", i%2)
		c.start(i, func(cfg *Config) { cfg.Labels = map[string]string{"zone": zone} })
	}
	c.agreeOnLeader(3, 30*time.Second)
	spec := `name: web
count: 4
command: {argv: ["/bin/sleep", "1000"]}
resources: {cpu: 100m, memory: 16MiB}
spread: {attribute: label.zone}
distinct_hosts: true
`
	if code, body := putSpec(c.agent("n3"), spec); code != 200 {
		t.Fatalf("deploy: %d %s", code, body)
	}
	placedOn := func(a *Agent, want int) map[string]int {
		t.Helper()
		var perNode map[string]int
		retry.Until(t, 30*time.Second, func() error {
			d, err := deployment(a, "web")
			if err != nil {
				return err
			}
			perNode = map[string]int{}
			for _, p := range d.Placements {
				perNode[p.NodeName]++
			}
			if len(d.Placements) != want {
				return fmt.Errorf("%d placements, want %d: %+v", len(d.Placements), want, d.Placements)
			}
			return nil
		})
		return perNode
	}
	per := placedOn(c.agent("n1"), 4)
	for node, n := range per {
		if n != 1 {
			t.Fatalf("distinct_hosts broken: %s has %d", node, n)
		}
	}

	// Drain n2: its instance cannot move anywhere (distinct_hosts, 3 nodes
	// left) so one instance is pending, with the reason.
	cl, _ := NewClient(c.agent("n4").HTTPAddr())
	if err := cl.Do(context.Background(), "PUT", "/v1/nodes/n2/drain", nil, nil); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 30*time.Second, func() error {
		d, err := deployment(c.agent("n1"), "web")
		if err != nil {
			return err
		}
		for _, p := range d.Placements {
			if p.NodeName == "n2" {
				return fmt.Errorf("still on the drained node")
			}
		}
		if d.Pending == nil || d.Pending.Count != 1 || d.Pending.Metrics.NodesIneligible != 1 {
			return fmt.Errorf("pending %+v", d.Pending)
		}
		return nil
	})
	if err := cl.Do(context.Background(), "DELETE", "/v1/nodes/n2/drain", nil, nil); err != nil {
		t.Fatal(err)
	}
	placedOn(c.agent("n1"), 4)

	// Scale down, then an impossible deployment is pending with reasons.
	if err := cl.Do(context.Background(), "PUT", "/v1/deployments/web/scale", ScaleRequest{Count: 2}, nil); err != nil {
		t.Fatal(err)
	}
	placedOn(c.agent("n2"), 2)

	// Kill a node (not the leader) that hosts an instance: it is re-placed.
	leader := c.agreeOnLeader(3, 30*time.Second)
	d, _ := deployment(c.agent("n1"), "web")
	victim := ""
	for _, p := range d.Placements {
		if p.NodeName != leader {
			victim = p.NodeName
		}
	}
	_ = c.agent(victim).Shutdown()
	retry.Until(t, 45*time.Second, func() error {
		d, err := deployment(c.agent(leader), "web")
		if err != nil {
			return err
		}
		for _, p := range d.Placements {
			if p.NodeName == victim {
				return fmt.Errorf("instance %s still on dead %s", p.ID, victim)
			}
		}
		if len(d.Placements) != 2 {
			return fmt.Errorf("%d placements", len(d.Placements))
		}
		return nil
	})
	if code, body := putSpec(c.agent(leader), `name: gpu
count: 1
command: {argv: ["/bin/true"]}
constraints: [{attribute: label.gpu, operator: "=", value: "true"}]
`); code != 200 {
		t.Fatalf("deploy: %d %s", code, body)
	}
	retry.Until(t, 30*time.Second, func() error {
		d, err := deployment(c.agent(leader), "gpu")
		if err != nil {
			return err
		}
		if d.Pending == nil || d.Pending.Metrics.ConstraintFiltered["label.gpu = true"] != 3 {
			return fmt.Errorf("pending %+v", d.Pending)
		}
		return nil
	})
}

// TestDeployInvalidSpec: every problem is listed, nothing is committed.
func TestDeployInvalidSpec(t *testing.T) {
	a := startAgent(t, testConfig(t, "a", t.TempDir()))
	retry.Until(t, 20*time.Second, func() error { _, err := set(t, a, "ready", "1"); return err })
	code, body := putSpec(a, `name: Bad_Name
count: -1
command: {argv: []}
constraints: [{attribute: os, operator: "~=", value: linux}]
`)
	if code != 400 {
		t.Fatalf("invalid spec: %d %s", code, body)
	}
	for _, want := range []string{"name", "count", "command.argv", "constraints[0].operator"} {
		if !strings.Contains(body, want) {
			t.Errorf("error does not name %q: %s", want, body)
		}
	}
	if code, body := putSpec(a, "name: x\ncount: 1\ncommand: {argv: [a]}\nunknown_field: 1\n"); code != 400 || !strings.Contains(body, "unknown_field") {
		t.Errorf("unknown field: %d %s", code, body)
	}
}

// TestInstancesRun: placed instances run on their nodes, report their
// state, keep logs readable from any node, crash-loop into failed, and stop
// with their deployment.
func TestInstancesRun(t *testing.T) {
	c := newCluster(t, 184)
	for i := 1; i <= 3; i++ {
		c.start(i)
	}
	leader := c.agreeOnLeader(3, 30*time.Second)
	if code, body := putSpec(c.agent("n2"), `name: hello
count: 3
command: {argv: ["/bin/sh", "-c", "echo hello from $COLONY_INSTANCE_ID; exec sleep 600"]}
distinct_hosts: true
`); code != 200 {
		t.Fatalf("deploy: %d %s", code, body)
	}
	if code, body := putSpec(c.agent("n3"), `name: crash
count: 1
command: {argv: ["/bin/sh", "-c", "echo boom >&2; exit 3"]}
restart: {mode: on-failure, max_restarts: 2, backoff: {initial: 50ms, max: 100ms}}
`); code != 200 {
		t.Fatalf("deploy: %d %s", code, body)
	}
	instances := func(a *Agent, name string) ([]InstanceInfo, error) {
		var out []InstanceInfo
		cl, _ := NewClient(a.HTTPAddr())
		err := cl.Do(context.Background(), "GET", "/v1/deployments/"+name+"/instances", nil, &out)
		return out, err
	}
	var first string
	retry.Until(t, 45*time.Second, func() error {
		is, err := instances(c.agent("n1"), "hello")
		if err != nil {
			return err
		}
		if len(is) != 3 {
			return fmt.Errorf("%d instances", len(is))
		}
		for _, i := range is {
			if i.Status == nil || i.Status.State != "running" {
				return fmt.Errorf("%s on %s: %+v %s", i.ID, i.NodeName, i.Status, i.Error)
			}
		}
		first = is[0].ID
		return nil
	})
	retry.Until(t, 30*time.Second, func() error {
		is, err := instances(c.agent(leader), "crash")
		if err != nil {
			return err
		}
		if len(is) != 1 || is[0].Status == nil || is[0].Status.State != "failed" || is[0].Status.Restarts != 2 {
			return fmt.Errorf("crash: %+v", is)
		}
		return nil
	})
	// Logs from any node.
	retry.Until(t, 20*time.Second, func() error {
		resp, err := http.Get("http://" + c.agent("n3").HTTPAddr() + "/v1/instances/" + first + "/logs")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), "hello from "+first) {
			return fmt.Errorf("logs of %s: %d %q", first, resp.StatusCode, b)
		}
		return nil
	})
	// Stop the deployment: no instance left running.
	cl, _ := NewClient(c.agent("n1").HTTPAddr())
	if err := cl.Do(context.Background(), "DELETE", "/v1/deployments/hello", nil, nil); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 30*time.Second, func() error {
		for _, a := range c.live() {
			for _, s := range a.runner.Status() {
				if s.Deployment == "hello" && s.State == "running" {
					return fmt.Errorf("%s still runs %s", a.Name(), s.InstanceID)
				}
			}
		}
		return nil
	})
}

// TestLeaderKillDuringRollout: the leader dies right after a deployment is
// committed; the new leader finishes the rollout from the committed state,
// with every index placed exactly once and nothing running twice.
func TestLeaderKillDuringRollout(t *testing.T) {
	c := newCluster(t, 185)
	for i := 1; i <= 5; i++ {
		c.start(i)
	}
	leader := c.agreeOnLeader(3, 30*time.Second)
	var other *Agent
	for _, a := range c.live() {
		if a.Name() != leader {
			other = a
			break
		}
	}
	if code, body := putSpec(other, `name: roll
count: 30
command: {argv: ["/bin/sleep", "600"]}
resources: {cpu: 10m, memory: 4MiB}
spread: {attribute: node.name}
`); code != 200 {
		t.Fatalf("deploy: %d %s", code, body)
	}
	_ = c.agent(leader).Shutdown()
	c.agreeOnLeader(3, 45*time.Second, leader)
	retry.Until(t, 60*time.Second, func() error {
		d, err := deployment(other, "roll")
		if err != nil {
			return err
		}
		seen := map[int]int{}
		for _, p := range d.Placements {
			seen[p.Index]++
			if p.NodeName == leader {
				return fmt.Errorf("%s still on the dead leader", p.ID)
			}
		}
		if len(seen) != 30 || len(d.Placements) != 30 {
			return fmt.Errorf("%d placements over %d indexes", len(d.Placements), len(seen))
		}
		// Every instance runs exactly once across the live nodes.
		running := map[string]int{}
		for _, a := range c.live() {
			for _, s := range a.runner.Status() {
				if s.Deployment == "roll" && s.State == "running" {
					running[s.InstanceID]++
				}
			}
		}
		for _, p := range d.Placements {
			if running[p.ID] != 1 {
				return fmt.Errorf("%s runs %d times", p.ID, running[p.ID])
			}
		}
		if len(running) != 30 {
			return fmt.Errorf("%d instances running", len(running))
		}
		return nil
	})
}
