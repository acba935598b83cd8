package placement

import (
	"fmt"
	"math/rand/v2"
)

// synthNodes builds n deterministic nodes spread over zones with varied
// sizes, labels and attributes.
func synthNodes(n, zones int, seed uint64) []Node {
	r := rand.New(rand.NewPCG(seed, 42))
	nodes := make([]Node, n)
	arches := []string{"amd64", "amd64", "amd64", "arm64"}
	versions := []string{"1.0.3", "1.2.0", "1.4.1", "1.9.0", "2.0.0-rc1"}
	for i := range nodes {
		cores := int64(4 * (1 + r.IntN(8))) // 4..32
		disk := "hdd"
		if r.IntN(2) == 0 {
			disk = "ssd"
		}
		nodes[i] = Node{
			ID:     fmt.Sprintf("node-%05d", i),
			Name:   fmt.Sprintf("host-%d", i),
			Status: StatusEligible,
			Attributes: map[string]string{
				AttrOS:           "linux",
				AttrArch:         arches[r.IntN(len(arches))],
				AttrKernel:       "6.1.0",
				AttrAgentVersion: versions[r.IntN(len(versions))],
			},
			Labels: map[string]string{
				"zone": fmt.Sprintf("z%d", i%zones),
				"rack": fmt.Sprintf("r%d", r.IntN(200)),
				"disk": disk,
			},
			Capacity: Resources{CPUMillis: cores * 1000, MemoryMiB: cores * 2 * 1024},
		}
	}
	return nodes
}

// benchSpecs is 100,000 instances over four deployments with constraints,
// preferences, spread and distinct_hosts.
func benchSpecs() []*Spec {
	cmd := Command{Argv: []string{"/bin/true"}}
	return []*Spec{
		{
			Name: "web", Count: 40000, Command: cmd,
			Resources: ResourceAsk{CPU: "250m", Memory: "256MiB"},
			Constraints: []Constraint{
				{Attribute: "os", Operator: OpEq, Value: "linux"},
				{Attribute: "arch", Operator: OpIn, Values: []string{"amd64"}},
			},
			Preferences: []Preference{{Constraint: Constraint{Attribute: "label.disk", Operator: OpEq, Value: "ssd"}, Weight: 50}},
			Spread:      &Spread{Attribute: "label.zone", Weight: 100},
		},
		{
			Name: "api", Count: 30000, Command: cmd,
			Resources:   ResourceAsk{CPU: "0.5", Memory: "512MiB"},
			Constraints: []Constraint{{Attribute: "agent.version", Operator: OpVersion, Value: ">= 1.2, < 2.0"}},
			Spread:      &Spread{Attribute: "zone", Weight: 50},
		},
		{
			Name: "batch", Count: 27000, Command: cmd,
			Resources:   ResourceAsk{CPU: "1", Memory: "1GiB"},
			Constraints: []Constraint{{Attribute: "cpu.cores", Operator: OpGe, Value: "16"}},
		},
		{
			Name: "cache", Count: 3000, Command: cmd,
			Resources: ResourceAsk{CPU: "100m", Memory: "2GiB"},
			Constraints: []Constraint{
				{Attribute: "label.rack", Operator: OpRegexp, Value: "^r[0-9]+$"},
				{Attribute: "label.disk", Operator: OpEq, Value: "ssd"},
			},
			DistinctHosts: true,
		},
	}
}
