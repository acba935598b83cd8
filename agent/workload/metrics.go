package workload

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"time"
)

// Metrics file limits.
const (
	// MaxMetrics is the most numbers one workload may report.
	MaxMetrics = 32
	// MaxMetricNameLen bounds a metric name.
	MaxMetricNameLen = 64
	// maxMetricsFileBytes bounds what is read (32 long names and numbers fit).
	maxMetricsFileBytes = 8 << 10
)

// metricsFile caches the last good parse of one instance's metrics file,
// keyed by what stat says, so an unchanged file is neither re-read nor
// counted twice when it is garbage.
type metricsFile struct {
	path     string
	stamp    fileStamp
	values   map[string]float64
	rejected uint64
	lastErr  error
}

type fileStamp struct {
	mod  time.Time
	size int64
	ino  uint64
}

// refresh re-reads the file if it changed. A missing file clears the
// values (the runner deletes it before each start, so numbers from a
// previous run are not shown as current).
func (m *metricsFile) refresh() {
	st, err := os.Stat(m.path)
	if errors.Is(err, fs.ErrNotExist) {
		m.values, m.stamp = nil, fileStamp{}
		return
	}
	if err != nil {
		return
	}
	stamp := fileStamp{mod: st.ModTime(), size: st.Size(), ino: inode(st)}
	if stamp == m.stamp {
		return
	}
	m.stamp = stamp
	values, err := readMetrics(m.path)
	if err != nil {
		m.rejected++
		m.lastErr = err
		return
	}
	m.values = values
}

func readMetrics(path string) (map[string]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open metrics: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMetricsFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read metrics: %w", err)
	}
	return ParseMetrics(b)
}

// ErrBadMetrics is matched by every ParseMetrics error.
var ErrBadMetrics = errors.New("bad metrics file")

// ParseMetrics parses a workload's metrics file: one JSON object of at most
// MaxMetrics finite numbers whose names match [a-z0-9_]{1,64}. Anything else
// is refused as a whole, so a half-written or hostile file never shows.
func ParseMetrics(b []byte) (map[string]float64, error) {
	if len(b) > maxMetricsFileBytes {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrBadMetrics, maxMetricsFileBytes)
	}
	var m map[string]float64
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadMetrics, err)
	}
	if m == nil {
		return nil, fmt.Errorf("%w: not a JSON object", ErrBadMetrics)
	}
	if len(m) > MaxMetrics {
		return nil, fmt.Errorf("%w: %d metrics, at most %d", ErrBadMetrics, len(m), MaxMetrics)
	}
	for k, v := range m {
		if !validMetricName(k) {
			return nil, fmt.Errorf("%w: name %q must match [a-z0-9_]{1,%d}", ErrBadMetrics, k, MaxMetricNameLen)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%w: %s is not finite", ErrBadMetrics, k)
		}
	}
	return m, nil
}

func validMetricName(s string) bool {
	if s == "" || len(s) > MaxMetricNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
