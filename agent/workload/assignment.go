package workload

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"colony/scaling/placement"
)

// Environment variables the runner sets for every workload. They override
// variables of the same name in the assignment's Env.
const (
	EnvInstanceID  = "COLONY_INSTANCE_ID"
	EnvDeployment  = "COLONY_DEPLOYMENT"
	EnvMetricsFile = "COLONY_METRICS_FILE"
)

// Restart modes (the same strings as the deployment spec).
const (
	RestartAlways    = placement.RestartAlways
	RestartOnFailure = placement.RestartOnFailure
	RestartNever     = placement.RestartNever
)

// maxInstanceIDLen bounds instance IDs, which name directories.
const maxInstanceIDLen = 200

// ErrInvalidAssignment is matched (errors.Is) by every assignment error.
var ErrInvalidAssignment = errors.New("invalid assignment")

// Assignment is one instance this node must run: what the agent derives
// from a placement and its deployment spec (see FromPlacement).
type Assignment struct {
	// InstanceID identifies the instance (placement.InstanceID) and names
	// its directory: letters, digits, '.', '_' and '-', not starting with '.'.
	InstanceID string
	// Deployment is the deployment's name, passed to the workload.
	Deployment string
	// Argv is the program and its arguments; a program without '/' is
	// looked up in the workload's PATH (not the agent's).
	Argv []string
	// Env is added to Config.BaseEnv.
	Env map[string]string
	// WorkingDir is an absolute path; empty means a per-instance scratch
	// directory DATA_DIR/workloads/<instance>/work.
	WorkingDir string
	// Restart is the restart policy.
	Restart RestartPolicy
}

// RestartPolicy says when an exited instance starts again.
type RestartPolicy struct {
	// Mode is always, on-failure (the default when empty) or never.
	// on-failure restarts after a non-zero exit or a signal; never does
	// not restart at all.
	Mode string
	// MaxRestarts bounds consecutive restarts (see Config.ResetAfter);
	// 0 is unlimited. One more exit and the instance is failed.
	MaxRestarts int
	// BackoffInitial is the delay before the first restart (0: 1s); each
	// further consecutive restart doubles it up to BackoffMax (0: 1m).
	BackoffInitial time.Duration
	// BackoffMax caps the delay.
	BackoffMax time.Duration
}

// FromPlacement builds the assignment for placement p of deployment spec.
func FromPlacement(p placement.Placement, spec *placement.Spec) Assignment {
	return Assignment{
		InstanceID: p.ID,
		Deployment: p.Deployment,
		Argv:       slices.Clone(spec.Command.Argv),
		Env:        maps.Clone(spec.Command.Env),
		WorkingDir: spec.Command.WorkingDir,
		Restart: RestartPolicy{
			Mode:           spec.Restart.RestartMode(),
			MaxRestarts:    spec.Restart.MaxRestarts,
			BackoffInitial: spec.Restart.InitialBackoff(),
			BackoffMax:     spec.Restart.MaxBackoff(),
		},
	}
}

// ValidInstanceID reports whether id can name an instance (and its
// directory).
func ValidInstanceID(id string) bool {
	if id == "" || len(id) > maxInstanceIDLen || id[0] == '.' {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Validate reports every problem with the assignment.
func (a *Assignment) Validate() error {
	var errs []string
	if !ValidInstanceID(a.InstanceID) {
		errs = append(errs, fmt.Sprintf("instance id %q must be 1..%d letters, digits, '.', '_' or '-', not starting with '.'", a.InstanceID, maxInstanceIDLen))
	}
	if strings.IndexByte(a.Deployment, 0) >= 0 {
		errs = append(errs, "deployment contains a NUL byte")
	}
	if len(a.Argv) == 0 || a.Argv[0] == "" {
		errs = append(errs, "argv must name a program")
	}
	for i, s := range a.Argv {
		if strings.IndexByte(s, 0) >= 0 {
			errs = append(errs, fmt.Sprintf("argv[%d] contains a NUL byte", i))
		}
	}
	for k, v := range a.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.IndexByte(v, 0) >= 0 {
			errs = append(errs, fmt.Sprintf("env %q: name must be non-empty without '=' or NUL, value without NUL", k))
		}
	}
	if a.WorkingDir != "" && (!strings.HasPrefix(a.WorkingDir, "/") || strings.IndexByte(a.WorkingDir, 0) >= 0) {
		errs = append(errs, fmt.Sprintf("working dir %q must be an absolute path", a.WorkingDir))
	}
	switch a.Restart.Mode {
	case "", RestartAlways, RestartOnFailure, RestartNever:
	default:
		errs = append(errs, fmt.Sprintf("restart mode %q must be always, on-failure or never", a.Restart.Mode))
	}
	if a.Restart.MaxRestarts < 0 {
		errs = append(errs, fmt.Sprintf("max restarts %d must be >= 0", a.Restart.MaxRestarts))
	}
	if a.Restart.BackoffInitial < 0 || a.Restart.BackoffMax < 0 {
		errs = append(errs, "backoff durations must not be negative")
	}
	if len(errs) > 0 {
		slices.Sort(errs)
		return fmt.Errorf("%w %q: %s", ErrInvalidAssignment, a.InstanceID, strings.Join(errs, "; "))
	}
	return nil
}

func (a *Assignment) mode() string {
	if a.Restart.Mode == "" {
		return RestartOnFailure
	}
	return a.Restart.Mode
}

// bounds returns the backoff bounds with defaults applied.
func (a *Assignment) bounds() (initial, maxd time.Duration) {
	initial, maxd = a.Restart.BackoffInitial, a.Restart.BackoffMax
	if initial <= 0 {
		initial = placement.DefaultBackoffInitial
	}
	if maxd <= 0 {
		maxd = placement.DefaultBackoffMax
	}
	return initial, maxd
}

// backoff is the delay before consecutive restart n (1-based).
func (a *Assignment) backoff(n int) time.Duration {
	d, maxd := a.bounds()
	for i := 1; i < n && d < maxd; i++ {
		d *= 2
	}
	return min(d, maxd)
}

// equal reports whether two assignments run the same thing the same way
// (nil and empty collections are equal).
func (a *Assignment) equal(b *Assignment) bool {
	return a.InstanceID == b.InstanceID && a.Deployment == b.Deployment &&
		slices.Equal(a.Argv, b.Argv) && maps.Equal(a.Env, b.Env) &&
		a.WorkingDir == b.WorkingDir && a.mode() == b.mode() &&
		a.Restart.MaxRestarts == b.Restart.MaxRestarts &&
		sameBounds(a, b)
}

func sameBounds(a, b *Assignment) bool {
	ai, am := a.bounds()
	bi, bm := b.bounds()
	return ai == bi && am == bm
}

func (a *Assignment) clone() Assignment {
	c := *a
	c.Argv = slices.Clone(a.Argv)
	c.Env = maps.Clone(a.Env)
	return c
}
