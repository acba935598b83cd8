package provider

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func heteroTypes() []InstanceType {
	return []InstanceType{
		{Name: "small", Profile: Profile{CPUs: 2, MemoryMiB: 4096, Arch: "amd64", OS: "linux"}, CostPerHour: 0.05},
		{Name: "large", Profile: Profile{CPUs: 8, MemoryMiB: 32768, Arch: "amd64", OS: "linux"}, CostPerHour: 0.40},
		{Name: "arm", Profile: Profile{CPUs: 4, MemoryMiB: 8192, Arch: "arm64", OS: "linux"}, CostPerHour: 0.08},
		// Deliberately cheap and big: only the reservation keeps it from
		// taking plain work.
		{Name: "gpu-spot", Profile: Profile{CPUs: 16, MemoryMiB: 65536, Arch: "amd64", OS: "linux",
			Labels: map[string]string{"gpu": "true", "gpu.model": "l4"}}, CostPerHour: 0.03, Reserved: []string{"gpu"}},
		{Name: "gpu", Profile: Profile{CPUs: 8, MemoryMiB: 65536, Arch: "amd64", OS: "linux",
			Labels: map[string]string{"gpu": "true", "gpu.model": "a100"}}, CostPerHour: 2.50, Reserved: []string{"gpu"}},
		{Name: "eu", Profile: Profile{CPUs: 2, MemoryMiB: 4096, Arch: "amd64", OS: "linux",
			Labels: map[string]string{"zone": "eu-1"}}, CostPerHour: 0.06},
	}
}

func TestChooseTypeHeterogeneous(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  Requirements
		want string // "" means ErrNoMatch
	}{
		{"nothing needed: cheapest unreserved", Requirements{}, "small"},
		{"fits small", Requirements{CPUMillis: 1500, MemoryMiB: 2048}, "small"},
		{"exactly small", Requirements{CPUMillis: 2000, MemoryMiB: 4096}, "small"},
		{"too big for small: next cheapest that fits", Requirements{CPUMillis: 3000}, "arm"},
		{"amd64 only", Requirements{CPUMillis: 3000, Arch: "amd64"}, "large"},
		{"needs 12 cpus: gpu-spot fits but is reserved", Requirements{CPUMillis: 12000}, ""},
		{"gpu required: cheapest gpu", Requirements{Labels: map[string]string{"gpu": "true"}}, "gpu-spot"},
		{"specific gpu model", Requirements{Labels: map[string]string{"gpu": "true", "gpu.model": "a100"}}, "gpu"},
		{"label without reservation", Requirements{Labels: map[string]string{"zone": "eu-1"}}, "eu"},
		{"label value must match", Requirements{Labels: map[string]string{"zone": "us-1"}}, ""},
		{"custom matcher", Requirements{Matches: func(p Profile) bool { return p.MemoryMiB >= 30000 }}, "large"},
		{"os mismatch", Requirements{OS: "windows"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ChooseType(heteroTypes(), tc.req)
			if tc.want == "" {
				if !errors.Is(err, ErrNoMatch) {
					t.Fatalf("got %q, %v; want ErrNoMatch", got.Name, err)
				}
				return
			}
			if err != nil || got.Name != tc.want {
				t.Fatalf("got %q, %v; want %q", got.Name, err, tc.want)
			}
		})
	}
}

func TestChooseTypeTieBreakIsDeterministic(t *testing.T) {
	types := []InstanceType{
		{Name: "b", Profile: Profile{CPUs: 4, MemoryMiB: 4096}, CostPerHour: 1},
		{Name: "c", Profile: Profile{CPUs: 2, MemoryMiB: 8192}, CostPerHour: 1},
		{Name: "a", Profile: Profile{CPUs: 2, MemoryMiB: 8192}, CostPerHour: 1},
		{Name: "d", Profile: Profile{CPUs: 2, MemoryMiB: 9000}, CostPerHour: 1},
	}
	// Same answer whatever the order the provider listed them in.
	for i := range types {
		rot := append(append([]InstanceType{}, types[i:]...), types[:i]...)
		got, err := ChooseType(rot, Requirements{})
		if err != nil || got.Name != "a" {
			t.Fatalf("rotation %d: got %q, %v; want a (fewest cpus, least memory, then name)", i, got.Name, err)
		}
	}
}

func TestChooseTypeExplainsRefusals(t *testing.T) {
	_, err := ChooseType(heteroTypes(), Requirements{CPUMillis: 64000})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"cpu=64000m", "small: 2 cpus < 64", "gpu: 8 cpus < 64"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := ChooseType(nil, Requirements{}); !errors.Is(err, ErrNoMatch) {
		t.Fatalf("empty list: %v", err)
	}
}

// BenchmarkChooseType: one broker decision over a 100-type catalogue (the
// autoscaler makes one per pending requirement shape per tick).
func BenchmarkChooseType(b *testing.B) {
	var types []InstanceType
	for i := range 100 {
		t := InstanceType{Name: fmt.Sprintf("t%03d", i), Profile: Profile{CPUs: float64(1 + i%16), MemoryMiB: int64(1024 * (1 + i%32)),
			Arch: "amd64", OS: "linux", Labels: map[string]string{"zone": fmt.Sprintf("z%d", i%3)}}, CostPerHour: float64(i%17) * 0.1}
		if i%10 == 0 {
			t.Profile.Labels["gpu"] = "true"
			t.Reserved = []string{"gpu"}
		}
		types = append(types, t)
	}
	req := Requirements{CPUMillis: 4000, MemoryMiB: 8192, Labels: map[string]string{"zone": "z1"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ChooseType(types, req); err != nil {
			b.Fatal(err)
		}
	}
}
