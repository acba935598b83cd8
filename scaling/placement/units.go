package placement

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Upper bounds keep arithmetic on sums of asks far from overflow.
const (
	maxCPUMillis = 1 << 40 // about a billion cores
	maxMemoryMiB = 1 << 40 // an exbibyte
)

// ParseCPU parses a CPU quantity into millicores: "" is 0, "500m" is 500
// millicores, a plain decimal number is cores ("0.25" is 250, "2" is 2000).
// Fractions of a millicore round up so an ask is never understated.
func ParseCPU(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	if m, ok := strings.CutSuffix(s, "m"); ok {
		n, err := strconv.ParseInt(strings.TrimSpace(m), 10, 64)
		if err != nil || n < 0 || n > maxCPUMillis {
			return 0, fmt.Errorf("%q: millicores must be a whole number from 0 to %d, e.g. 500m", s, int64(maxCPUMillis))
		}
		return n, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || f < 0 || f*1000 > maxCPUMillis {
		return 0, fmt.Errorf("%q: cpu must be cores (0.5, 2) or millicores (500m), not negative", s)
	}
	return int64(math.Ceil(f*1000 - 1e-9)), nil
}

// memoryUnits maps a lower-cased unit to its size in bytes.
var memoryUnits = map[string]float64{
	"b": 1,
	"k": 1e3, "kb": 1e3, "ki": 1 << 10, "kib": 1 << 10,
	"m": 1e6, "mb": 1e6, "mi": 1 << 20, "mib": 1 << 20,
	"g": 1e9, "gb": 1e9, "gi": 1 << 30, "gib": 1 << 30,
	"t": 1e12, "tb": 1e12, "ti": 1 << 40, "tib": 1 << 40,
}

// ParseMemory parses a memory quantity into MiB: "" is 0, a plain number is
// MiB ("512"), otherwise a number and a unit: B, KiB/Ki, MiB/Mi, GiB/Gi,
// TiB/Ti (powers of 1024) or KB/K, MB/M, GB/G, TB/T (powers of 1000), case
// insensitive, e.g. "512MiB", "1.5GiB", "2G". Partial MiB round up.
func ParseMemory(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	i := len(s)
	for i > 0 && (s[i-1] < '0' || s[i-1] > '9') && s[i-1] != '.' {
		i--
	}
	num, unit := strings.TrimSpace(s[:i]), strings.ToLower(strings.TrimSpace(s[i:]))
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return 0, fmt.Errorf("%q: memory must be a non-negative number of MiB (512) or a number with a unit (512MiB, 1.5GiB)", s)
	}
	mib := f
	if unit != "" {
		size, ok := memoryUnits[unit]
		if !ok {
			return 0, fmt.Errorf("%q: unknown unit %q (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)", s, s[i:])
		}
		mib = f * size / (1 << 20)
	}
	if mib > maxMemoryMiB {
		return 0, fmt.Errorf("%q: more than %d MiB", s, int64(maxMemoryMiB))
	}
	return int64(math.Ceil(mib - 1e-9)), nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
