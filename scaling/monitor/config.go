package monitor

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"
)

// ErrInvalidConfig is wrapped by every Config.Validate failure.
var ErrInvalidConfig = errors.New("invalid monitor config")

// Config tunes the monitoring plan, summary acceptance and health alarms.
// The zero value is not usable: start from DefaultConfig.
type Config struct {
	// GroupSize is K, the hard maximum number of members in any group at any
	// level of the tree. Depth is ⌈log_K N⌉.
	GroupSize int

	// TargetGroupSize is the average group size the plan aims for. Keeping
	// it below GroupSize leaves slack so that single joins rarely overflow a
	// group (bounded-load hashing moves fewer nodes) and so the number of
	// groups changes only once every TargetGroupSize joins. It is raised
	// automatically up to GroupSize when needed to keep depth ⌈log_K N⌉.
	TargetGroupSize int

	// MinZoneNodes is the smallest zone that gets zone-pure groups of its
	// own; smaller zones (and nodes without a zone) share mixed groups so a
	// handful of nodes in a zone do not create a tiny group each.
	MinZoneNodes int

	// Interval is how often every node samples itself and pushes a summary.
	Interval time.Duration

	// MaxSummaryBytes bounds an encoded summary; larger ones are rejected
	// before decoding.
	MaxSummaryBytes int

	// MaxAge rejects summaries sampled longer ago than this (replays of old
	// captures, wedged senders). MaxClockSkew tolerates senders whose clock
	// runs ahead of ours.
	MaxAge       time.Duration
	MaxClockSkew time.Duration

	// NodeDownGrace is how long a node must be continuously not alive in the
	// gossip view before a node_down alarm is raised.
	NodeDownGrace time.Duration

	// AggregatorLostIntervals raises aggregator_lost when a child aggregator
	// has sent nothing for more than this many Intervals.
	AggregatorLostIntervals int

	// CrashLoopRestarts restarts of one workload instance within
	// CrashLoopWindow raise crash_loop.
	CrashLoopRestarts int
	CrashLoopWindow   time.Duration

	// Logger receives debug logs about rejected summaries; nil discards.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults from the design: K=32, 5 s interval.
func DefaultConfig() Config {
	return Config{
		GroupSize:               32,
		TargetGroupSize:         24,
		MinZoneNodes:            8,
		Interval:                5 * time.Second,
		MaxSummaryBytes:         64 << 10,
		MaxAge:                  time.Minute,
		MaxClockSkew:            10 * time.Second,
		NodeDownGrace:           30 * time.Second,
		AggregatorLostIntervals: 3,
		CrashLoopRestarts:       5,
		CrashLoopWindow:         10 * time.Minute,
	}
}

// Validate reports the first inconsistent field.
func (c Config) Validate() error {
	switch {
	case c.GroupSize < 2:
		return fmt.Errorf("%w: group size %d must be at least 2", ErrInvalidConfig, c.GroupSize)
	case c.GroupSize > 4096:
		return fmt.Errorf("%w: group size %d above 4096 defeats the point of a tree", ErrInvalidConfig, c.GroupSize)
	case c.TargetGroupSize < 1 || c.TargetGroupSize > c.GroupSize:
		return fmt.Errorf("%w: target group size %d must be in [1, group size %d]", ErrInvalidConfig, c.TargetGroupSize, c.GroupSize)
	case c.MinZoneNodes < 1:
		return fmt.Errorf("%w: min zone nodes %d must be at least 1", ErrInvalidConfig, c.MinZoneNodes)
	case c.Interval <= 0:
		return fmt.Errorf("%w: interval %v must be positive", ErrInvalidConfig, c.Interval)
	case c.MaxSummaryBytes < 1024:
		return fmt.Errorf("%w: max summary bytes %d below 1 KiB", ErrInvalidConfig, c.MaxSummaryBytes)
	case c.MaxAge < c.Interval:
		return fmt.Errorf("%w: max age %v shorter than one interval %v", ErrInvalidConfig, c.MaxAge, c.Interval)
	case c.MaxClockSkew < 0:
		return fmt.Errorf("%w: negative max clock skew", ErrInvalidConfig)
	case c.NodeDownGrace < 0:
		return fmt.Errorf("%w: negative node down grace", ErrInvalidConfig)
	case c.AggregatorLostIntervals < 1:
		return fmt.Errorf("%w: aggregator lost intervals %d must be at least 1", ErrInvalidConfig, c.AggregatorLostIntervals)
	case c.CrashLoopRestarts < 1:
		return fmt.Errorf("%w: crash loop restarts %d must be at least 1", ErrInvalidConfig, c.CrashLoopRestarts)
	case c.CrashLoopWindow <= 0:
		return fmt.Errorf("%w: crash loop window %v must be positive", ErrInvalidConfig, c.CrashLoopWindow)
	}
	return nil
}

// FreshnessBound is the worst-case age of a sample when it reaches the
// root: one interval per level of the tree plus the sampling interval.
func (c Config) FreshnessBound(depth int) time.Duration {
	return time.Duration(depth+1) * c.Interval
}

func (c Config) logger() *slog.Logger {
	l := c.Logger
	if l == nil {
		l = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return l.With("subsystem", "monitor")
}
