package provider

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Requirements is what a pending workload needs from a new machine. The
// autoscaler fills it from the placement engine's unplaceable instances;
// zero fields mean "anything".
type Requirements struct {
	// CPUMillis is the CPU needed in thousandths of a core (1500 = 1.5).
	CPUMillis int64
	// MemoryMiB is the memory needed.
	MemoryMiB int64
	// Arch and OS, when set, must equal the profile's.
	Arch, OS string
	// Labels must all be present with these values in the profile's
	// labels; naming a key also opts in to types reserved for it.
	Labels map[string]string
	// Matches, when set, is a further test (the placement engine's
	// constraint evaluator) a profile must pass.
	Matches func(Profile) bool
}

// String describes the requirements for error messages.
func (r Requirements) String() string {
	var parts []string
	if r.CPUMillis > 0 {
		parts = append(parts, fmt.Sprintf("cpu=%dm", r.CPUMillis))
	}
	if r.MemoryMiB > 0 {
		parts = append(parts, fmt.Sprintf("memory=%dMiB", r.MemoryMiB))
	}
	if r.Arch != "" {
		parts = append(parts, "arch="+r.Arch)
	}
	if r.OS != "" {
		parts = append(parts, "os="+r.OS)
	}
	for _, k := range slices.Sorted(maps.Keys(r.Labels)) {
		parts = append(parts, fmt.Sprintf("label %s=%s", k, r.Labels[k]))
	}
	if r.Matches != nil {
		parts = append(parts, "custom constraint")
	}
	if len(parts) == 0 {
		return "no requirements"
	}
	return strings.Join(parts, ", ")
}

// unmet returns why t does not satisfy r ("" if it does). keys are r's
// label keys, sorted once by the caller. Without explain it returns only
// "x" for a refusal: the hot path builds no strings.
func (r Requirements) unmet(t InstanceType, keys []string, explain bool) string {
	p := t.Profile
	if need := float64(r.CPUMillis) / 1000; need > p.CPUs {
		if !explain {
			return "x"
		}
		return fmt.Sprintf("%g cpus < %g", p.CPUs, need)
	}
	if r.MemoryMiB > p.MemoryMiB {
		if !explain {
			return "x"
		}
		return fmt.Sprintf("%d MiB < %d", p.MemoryMiB, r.MemoryMiB)
	}
	if r.Arch != "" && r.Arch != p.Arch {
		if !explain {
			return "x"
		}
		return fmt.Sprintf("arch %q", p.Arch)
	}
	if r.OS != "" && r.OS != p.OS {
		if !explain {
			return "x"
		}
		return fmt.Sprintf("os %q", p.OS)
	}
	for _, k := range keys {
		if v, ok := p.Labels[k]; !ok || v != r.Labels[k] {
			if !explain {
				return "x"
			}
			return fmt.Sprintf("no label %s=%s", k, r.Labels[k])
		}
	}
	for _, k := range t.Reserved {
		if _, ok := r.Labels[k]; !ok {
			if !explain {
				return "x"
			}
			return fmt.Sprintf("reserved for %s", k)
		}
	}
	if r.Matches != nil && !r.Matches(p) {
		return "custom constraint"
	}
	return ""
}

// ChooseType returns the cheapest type whose profile satisfies req. Ties
// go to the smaller machine (fewer cpus, then less memory), then to the
// name, so every leader makes the same choice from the same list. Types
// reserved for a label (InstanceType.Reserved) are considered only when req
// names that label. ErrNoMatch says why each type was refused.
func ChooseType(types []InstanceType, req Requirements) (InstanceType, error) {
	keys := slices.Sorted(maps.Keys(req.Labels))
	best := -1
	for i, t := range types {
		if req.unmet(t, keys, false) != "" {
			continue
		}
		if best < 0 || better(t, types[best]) {
			best = i
		}
	}
	if best >= 0 {
		return types[best], nil
	}
	why := make([]string, 0, len(types))
	for _, t := range types {
		why = append(why, t.Name+": "+req.unmet(t, keys, true))
	}
	if len(why) == 0 {
		why = []string{"no types offered"}
	}
	return InstanceType{}, fmt.Errorf("%w (%s): %s", ErrNoMatch, req, strings.Join(why, "; "))
}

// better orders candidates: cheaper, then fewer cpus, less memory, name.
func better(a, b InstanceType) bool {
	return cmp.Or(
		cmp.Compare(a.CostPerHour, b.CostPerHour),
		cmp.Compare(a.Profile.CPUs, b.Profile.CPUs),
		cmp.Compare(a.Profile.MemoryMiB, b.Profile.MemoryMiB),
		cmp.Compare(a.Name, b.Name),
	) < 0
}
