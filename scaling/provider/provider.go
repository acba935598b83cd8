package provider

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Sentinel errors callers branch on. Providers wrap them with %w and
// context, so test with errors.Is.
var (
	// ErrUnknownType: the requested instance type is not offered. Not
	// retryable: the pool's configuration is wrong.
	ErrUnknownType = errors.New("unknown instance type")
	// ErrCapacity: the provider cannot launch more of this type now (quota,
	// address pool exhausted, cloud out of capacity). The autoscaler should
	// try another type or back off for longer than a transient retry.
	ErrCapacity = errors.New("insufficient capacity")
	// ErrTransient: a failure worth retrying as is (timeout, throttling,
	// network). Launch and Terminate are idempotent, so a retry after an
	// ambiguous failure is always safe.
	ErrTransient = errors.New("transient provider failure")
	// ErrNoMatch: no instance type satisfies the requirements (ChooseType).
	ErrNoMatch = errors.New("no instance type satisfies the requirements")
	// ErrInvalid: a request or configuration is malformed.
	ErrInvalid = errors.New("invalid provider request")
)

// Provider launches and terminates machines that run a Colony agent. All
// methods are safe for concurrent use and honour ctx (cancellation and
// deadline). Implementations keep no state that matters outside the
// machines themselves (tags, labels, state files), so a new leader that
// builds a new Provider sees exactly what the old one launched.
type Provider interface {
	// Name identifies this provider in logs, events and pool configs.
	Name() string
	// InstanceTypes lists what can be launched, with capability profiles
	// and cost.
	InstanceTypes(ctx context.Context) ([]InstanceType, error)
	// Launch makes sure Count instances of Type exist for
	// req.IdempotencyKey and returns all instances carrying that key (old
	// and new). Calling it again with the same key never creates more than
	// Count in total: a repeated call after a crash or timeout completes a
	// partial launch and otherwise only reports. On error, some instances
	// may have been created: reconcile with List.
	Launch(ctx context.Context, req LaunchRequest) ([]Instance, error)
	// Terminate stops the given instances (gracefully where possible: the
	// agent leaves the cluster). Unknown or already terminated IDs are
	// success, so it can be retried freely.
	Terminate(ctx context.Context, ids []string) error
	// List returns every instance this provider launched that it still
	// knows of, terminated ones included for a while (how long depends on
	// the provider: EC2 forgets them after about an hour).
	List(ctx context.Context) ([]Instance, error)
}

// Profile is the capability profile of a machine: what a node launched on
// it gossips (cpus, memory, arch, os) plus the labels it is started with.
type Profile struct {
	// CPUs in cores; fractional for container CPU limits.
	CPUs float64 `json:"cpus" yaml:"cpus"`
	// MemoryMiB is the memory in MiB.
	MemoryMiB int64 `json:"memory_mib" yaml:"memory_mib"`
	// Arch is the Go architecture name (amd64, arm64); empty means unknown.
	Arch string `json:"arch,omitempty" yaml:"arch,omitempty"`
	// OS is the Go OS name (linux); empty means unknown.
	OS string `json:"os,omitempty" yaml:"os,omitempty"`
	// Labels are passed to the agent as --label and gossiped (gpu=true,
	// zone=eu-1).
	Labels map[string]string `json:"labels,omitempty" yaml:"labels,omitempty"`
}

// InstanceType is one kind of machine a provider can launch.
type InstanceType struct {
	// Name is the provider's name for it (m7i.large, small, gpu).
	Name string `json:"name" yaml:"name"`
	// Profile is what a node of this type offers.
	Profile Profile `json:"profile" yaml:"profile"`
	// CostPerHour in any currency, the same for every type of a cluster;
	// ChooseType picks the cheapest.
	CostPerHour float64 `json:"cost_per_hour" yaml:"cost_per_hour"`
	// Reserved lists label keys that reserve this type, like a Kubernetes
	// taint: a type with Reserved [gpu] is chosen only for requirements
	// whose Labels name gpu, so an expensive or scarce machine is never
	// used for work that does not need it, even when it is cheaper.
	Reserved []string `json:"reserved,omitempty" yaml:"reserved,omitempty"`
}

// Validate checks a type's fields.
func (t InstanceType) Validate() error {
	switch {
	case t.Name == "":
		return fmt.Errorf("%w: instance type without a name", ErrInvalid)
	case t.Profile.CPUs < 0 || t.Profile.MemoryMiB < 0:
		return fmt.Errorf("%w: instance type %q: negative cpus or memory", ErrInvalid, t.Name)
	case t.CostPerHour < 0:
		return fmt.Errorf("%w: instance type %q: negative cost", ErrInvalid, t.Name)
	}
	return nil
}

// LaunchRequest asks for Count instances of Type.
type LaunchRequest struct {
	// IdempotencyKey names this launch for ever (the Raft-committed intent's
	// key): instances are tagged with it and with their index 0..Count-1.
	// Never reuse a key for another launch.
	IdempotencyKey string `json:"idempotency_key"`
	// Type is an InstanceType name.
	Type string `json:"type"`
	// Count is how many instances the launch creates in total.
	Count int `json:"count"`
	// JoinAddr is the gossip address (host:port or host) the new agents
	// join; empty starts them alone (a new cluster: only for tests).
	JoinAddr string `json:"join_addr"`
	// Labels are added to the type's labels and passed to the agents.
	Labels map[string]string `json:"labels,omitempty"`
}

// MaxKeyLen bounds idempotency keys so they fit cloud tags and tokens
// (EC2's ClientToken takes 64 ASCII characters; we append "-<index>").
const MaxKeyLen = 48

// Validate checks the request before anything is launched.
func (r LaunchRequest) Validate() error {
	switch {
	case r.IdempotencyKey == "":
		return fmt.Errorf("%w: launch without an idempotency key (commit an intent first)", ErrInvalid)
	case len(r.IdempotencyKey) > MaxKeyLen:
		return fmt.Errorf("%w: idempotency key longer than %d bytes", ErrInvalid, MaxKeyLen)
	case !printableASCII(r.IdempotencyKey):
		return fmt.Errorf("%w: idempotency key %q: use printable ASCII without spaces", ErrInvalid, r.IdempotencyKey)
	case r.Type == "":
		return fmt.Errorf("%w: launch without an instance type", ErrInvalid)
	case r.Count < 1:
		return fmt.Errorf("%w: launch count %d: want at least 1", ErrInvalid, r.Count)
	case r.Count > 1000:
		return fmt.Errorf("%w: launch count %d: at most 1000 per launch", ErrInvalid, r.Count)
	}
	return nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// State is an instance's lifecycle state as its provider sees it.
type State string

// Instance states.
const (
	// StatePending: created, not yet running (booting, agent not up).
	StatePending State = "pending"
	// StateRunning: the machine (and, where the provider can tell, the
	// agent) is up.
	StateRunning State = "running"
	// StateTerminated: stopped, by Terminate or on its own.
	StateTerminated State = "terminated"
)

// Valid reports whether s is one of the three states.
func (s State) Valid() bool {
	return s == StatePending || s == StateRunning || s == StateTerminated
}

// Instance is one launched machine. The agent on it runs with node name
// ID, so the leader maps gossip members to instances by name.
type Instance struct {
	// ID is the provider's instance ID (container name, EC2 instance ID)
	// and the agent's node name.
	ID string `json:"id"`
	// Type is the InstanceType name it was launched as.
	Type string `json:"type"`
	// IdempotencyKey is the key of the launch that made it.
	IdempotencyKey string `json:"idempotency_key"`
	// Index is the instance's slot in its launch, 0..Count-1: with the key
	// it names the instance, so a repeated launch fills only missing slots.
	Index int `json:"index"`
	// State as the provider sees it now.
	State State `json:"state"`
	// Labels the agent was started with (type's and request's).
	Labels map[string]string `json:"labels,omitempty"`
	// Addr is the agent's gossip address (ip:port), empty until known.
	Addr string `json:"addr,omitempty"`
	// CreatedAt is when the instance was launched.
	CreatedAt time.Time `json:"created_at"`
}

// Live reports whether the instance is not terminated.
func (i Instance) Live() bool { return i.State != StateTerminated }

// WithKey returns the instances launched with key, by index.
func WithKey(insts []Instance, key string) []Instance {
	var out []Instance
	for _, in := range insts {
		if in.IdempotencyKey == key {
			out = append(out, in)
		}
	}
	slices.SortFunc(out, func(a, b Instance) int { return a.Index - b.Index })
	return out
}

// MissingIndexes returns the slots 0..count-1 that no instance in have
// occupies (terminated instances occupy their slot: a launch that was done
// and later scaled down must not come back).
func MissingIndexes(have []Instance, count int) []int {
	used := make(map[int]bool, len(have))
	for _, in := range have {
		used[in.Index] = true
	}
	var missing []int
	for i := range count {
		if !used[i] {
			missing = append(missing, i)
		}
	}
	return missing
}

// InstanceName derives a stable instance name from a prefix, a launch key
// and an index. A short hash keeps it a valid host/container/node name
// whatever the key looks like, and deterministic names let the machine
// layer (a container name, a directory) refuse a second copy even when
// two launches race.
func InstanceName(prefix, key string, index int) string {
	sum := sha256.Sum256([]byte(key))
	return fmt.Sprintf("%s-%s-%d", prefix, hex.EncodeToString(sum[:5]), index)
}

// mergeLabels returns the type's labels overlaid with the request's.
func mergeLabels(typeLabels, reqLabels map[string]string) map[string]string {
	out := make(map[string]string, len(typeLabels)+len(reqLabels))
	maps.Copy(out, typeLabels)
	maps.Copy(out, reqLabels)
	return out
}

// findType returns the named type or ErrUnknownType.
func findType(types []InstanceType, name string) (InstanceType, error) {
	for _, t := range types {
		if t.Name == name {
			return t, nil
		}
	}
	names := make([]string, len(types))
	for i, t := range types {
		names[i] = t.Name
	}
	return InstanceType{}, fmt.Errorf("%w %q (offered: %v)", ErrUnknownType, name, names)
}

// validateTypes checks a configured type list: valid types, unique names.
func validateTypes(types []InstanceType) error {
	if len(types) == 0 {
		return fmt.Errorf("%w: no instance types configured", ErrInvalid)
	}
	seen := map[string]bool{}
	for _, t := range types {
		if err := t.Validate(); err != nil {
			return err
		}
		if seen[t.Name] {
			return fmt.Errorf("%w: instance type %q listed twice", ErrInvalid, t.Name)
		}
		seen[t.Name] = true
	}
	return nil
}
