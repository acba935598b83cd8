package placement

import "strconv"

// Resources is an amount of compute: CPU in millicores (1000 = one core) and
// memory in MiB. Integers keep accounting exact and the JSON stable.
type Resources struct {
	CPUMillis int64 `json:"cpu_millis"`
	MemoryMiB int64 `json:"memory_mib"`
}

// fits reports whether ask fits into r (both dimensions).
func (r Resources) fits(ask Resources) bool {
	return ask.CPUMillis <= r.CPUMillis && ask.MemoryMiB <= r.MemoryMiB
}

func (r Resources) add(o Resources) Resources {
	return Resources{CPUMillis: r.CPUMillis + o.CPUMillis, MemoryMiB: r.MemoryMiB + o.MemoryMiB}
}

func (r Resources) sub(o Resources) Resources {
	return Resources{CPUMillis: r.CPUMillis - o.CPUMillis, MemoryMiB: r.MemoryMiB - o.MemoryMiB}
}

// NodeStatus is a node's scheduling status as the leader sees it.
type NodeStatus string

// Node statuses. Only eligible nodes receive new instances; instances on
// draining and down nodes are re-placed elsewhere. The empty status counts as
// eligible; any other value is treated like draining.
const (
	StatusEligible NodeStatus = "eligible"
	StatusDraining NodeStatus = "draining"
	StatusDown     NodeStatus = "down"
)

func (s NodeStatus) eligible() bool { return s == StatusEligible || s == "" }

// Built-in attribute names. Node.Attributes normally carries os, arch,
// kernel and agent.version; node.id, node.name, cpu.cores, cpu.millis and
// memory.mib are derived from the Node's fields when Attributes lacks them.
const (
	AttrNodeID       = "node.id"
	AttrNodeName     = "node.name"
	AttrCPUCores     = "cpu.cores"
	AttrCPUMillis    = "cpu.millis"
	AttrMemoryMiB    = "memory.mib"
	AttrOS           = "os"
	AttrArch         = "arch"
	AttrKernel       = "kernel"
	AttrAgentVersion = "agent.version"
	// LabelPrefix selects an operator label: label.zone is the label zone.
	LabelPrefix = "label."
)

// Node is one candidate machine: a plain struct the consensus FSM can store
// as JSON.
type Node struct {
	ID         string            `json:"id"`
	Name       string            `json:"name,omitempty"`
	Status     NodeStatus        `json:"status"`
	Attributes map[string]string `json:"attributes,omitempty"` // os, arch, kernel, agent.version, ...
	Labels     map[string]string `json:"labels,omitempty"`     // operator labels, e.g. zone=eu-1
	Capacity   Resources         `json:"capacity"`             // what instances may use in total
}

// Lookup resolves an attribute name against the node (see the package
// README section for the namespace): label.<key> reads a label; node.id,
// node.name, cpu.cores, cpu.millis and memory.mib come from the node's
// fields unless Attributes overrides them; any other name is looked up in
// Attributes first and then, as a convenience, among the labels, so that
// "zone" works like "label.zone" unless an attribute called zone exists.
func (n *Node) Lookup(attr string) (string, bool) {
	if len(attr) > len(LabelPrefix) && attr[:len(LabelPrefix)] == LabelPrefix {
		v, ok := n.Labels[attr[len(LabelPrefix):]]
		return v, ok
	}
	if v, ok := n.Attributes[attr]; ok {
		return v, true
	}
	switch attr {
	case AttrNodeID:
		return n.ID, n.ID != ""
	case AttrNodeName:
		return n.Name, n.Name != ""
	case AttrCPUCores:
		return strconv.FormatFloat(float64(n.Capacity.CPUMillis)/1000, 'f', -1, 64), true
	case AttrCPUMillis:
		return strconv.FormatInt(n.Capacity.CPUMillis, 10), true
	case AttrMemoryMiB:
		return strconv.FormatInt(n.Capacity.MemoryMiB, 10), true
	}
	v, ok := n.Labels[attr]
	return v, ok
}

// Placement is one instance of a deployment assigned to a node: a plain
// struct the consensus FSM can store as JSON, keyed by ID.
type Placement struct {
	// ID is deterministic: "<deployment>.<index>.<generation>" (see InstanceID).
	ID         string    `json:"id"`
	Deployment string    `json:"deployment"`
	Index      int       `json:"index"`      // 0..count-1: the instance's slot in its deployment
	Generation uint64    `json:"generation"` // 1 for the first placement of a slot, +1 per re-placement
	NodeID     string    `json:"node_id"`
	Resources  Resources `json:"resources"` // reserved on the node while the placement exists
}

// InstanceID is the ID of the given generation of a deployment's slot.
// Deployment names cannot contain dots, so the ID parses unambiguously.
func InstanceID(deployment string, index int, generation uint64) string {
	return string(appendInstanceID(make([]byte, 0, len(deployment)+16), deployment, index, generation))
}

func appendInstanceID(b []byte, deployment string, index int, generation uint64) []byte {
	b = append(b, deployment...)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(index), 10)
	b = append(b, '.')
	return strconv.AppendUint(b, generation, 10)
}
