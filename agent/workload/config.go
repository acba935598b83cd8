package workload

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Defaults for Config.
const (
	DefaultStopTimeout   = 10 * time.Second
	DefaultLogMaxBytes   = 8 << 20
	DefaultResetAfter    = time.Minute
	DefaultRetainStopped = 100
	// DefaultPath is the PATH workloads get unless Config.BaseEnv sets one.
	DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// minLogMaxBytes keeps rotation from thrashing on tiny limits.
	minLogMaxBytes = 1024
)

// Config configures a Runner. Start from DefaultConfig.
type Config struct {
	// DataDir is the agent's data dir; the runner keeps everything under
	// DataDir/workloads (per-instance logs, metrics files and work dirs, and
	// the pid file used to clean up after a crashed agent). Required.
	DataDir string
	// Logger receives the runner's events (subsystem=workload); nil discards.
	Logger *slog.Logger
	// StopTimeout is the grace period between SIGTERM and SIGKILL when an
	// instance is stopped.
	StopTimeout time.Duration
	// LogMaxBytes is the size at which stdout.log and stderr.log rotate to
	// a single .1 file: each stream keeps between LogMaxBytes and
	// 2×LogMaxBytes of its most recent output.
	LogMaxBytes int64
	// ResetAfter is how long a run must last for its exit to count as a
	// fresh failure: it resets the backoff and the consecutive restarts
	// that MaxRestarts limits.
	ResetAfter time.Duration
	// RetainStopped is how many instances no longer desired stay listed in
	// Status (and keep their logs on disk) before the oldest are forgotten
	// and their directories deleted.
	RetainStopped int
	// BaseEnv is the environment every workload starts from ("K=V"
	// entries). The agent's own environment is deliberately not inherited:
	// it may hold secrets such as the gossip key.
	BaseEnv []string
}

// DefaultConfig returns a Config with every default set; DataDir is still
// required.
func DefaultConfig() Config {
	return Config{
		StopTimeout:   DefaultStopTimeout,
		LogMaxBytes:   DefaultLogMaxBytes,
		ResetAfter:    DefaultResetAfter,
		RetainStopped: DefaultRetainStopped,
		BaseEnv:       []string{"PATH=" + DefaultPath},
	}
}

// Validate reports every invalid field.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	if c.StopTimeout <= 0 {
		errs = append(errs, fmt.Errorf("stop timeout %s must be positive", c.StopTimeout))
	}
	if c.LogMaxBytes < minLogMaxBytes {
		errs = append(errs, fmt.Errorf("log max bytes %d must be at least %d", c.LogMaxBytes, minLogMaxBytes))
	}
	if c.ResetAfter <= 0 {
		errs = append(errs, fmt.Errorf("reset after %s must be positive", c.ResetAfter))
	}
	if c.RetainStopped < 0 {
		errs = append(errs, fmt.Errorf("retain stopped %d must be >= 0", c.RetainStopped))
	}
	for _, kv := range c.BaseEnv {
		if i := strings.IndexByte(kv, '='); i <= 0 || strings.IndexByte(kv, 0) >= 0 {
			errs = append(errs, fmt.Errorf("base env entry %q must be K=V without NUL", kv))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid workload config: %w", errors.Join(errs...))
	}
	return nil
}
