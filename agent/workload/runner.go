package workload

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// State is where an instance is in its life.
type State string

// Instance states.
const (
	// StatePending: accepted, not started yet (e.g. waiting for the
	// previous process of the same instance ID to stop).
	StatePending State = "pending"
	// StateStarting: the process is being created.
	StateStarting State = "starting"
	// StateRunning: the process is alive.
	StateRunning State = "running"
	// StateBackoff: the process exited and will be restarted at NextRestartAt.
	StateBackoff State = "backoff"
	// StateStopping: the process is being stopped (SIGTERM sent).
	StateStopping State = "stopping"
	// StateExited: the process exited and the policy does not restart it
	// (a clean exit under on-failure or never).
	StateExited State = "exited"
	// StateFailed: the process failed and will not be restarted (restart
	// limit reached, or a failure under never, or an invalid assignment).
	// Only a new assignment for the instance starts it again.
	StateFailed State = "failed"
	// StateStopped: no longer desired (or the runner shut down); nothing runs.
	StateStopped State = "stopped"
)

// InstanceStatus is what the runner reports about one instance.
type InstanceStatus struct {
	InstanceID string `json:"instance_id"`
	Deployment string `json:"deployment"`
	State      State  `json:"state"`
	// PID is the process (and process group) ID while a process exists.
	PID int `json:"pid,omitempty"`
	// Restarts counts restarts under the current assignment.
	Restarts  int       `json:"restarts"`
	StartedAt time.Time `json:"started_at,omitzero"`
	ExitedAt  time.Time `json:"exited_at,omitzero"`
	// ExitCode of the last exit; -1 when a signal ended the process.
	ExitCode int `json:"exit_code"`
	// LastError explains the last failure (exit status, start error, ...).
	LastError string `json:"last_error,omitempty"`
	// NextRestartAt is set in StateBackoff.
	NextRestartAt time.Time `json:"next_restart_at,omitzero"`
	// Metrics are the numbers the workload last wrote to its metrics file.
	Metrics map[string]float64 `json:"metrics,omitempty"`
	// MetricsRejected counts versions of the metrics file that were refused.
	MetricsRejected uint64 `json:"metrics_rejected,omitempty"`
}

// Stats are the runner's counters since New.
type Stats struct {
	Starts       uint64 // processes started
	Restarts     uint64 // of which restarts after an exit
	StartErrors  uint64 // processes that could not be started
	StraysKilled int    // process groups of a previous run killed by New
}

// Sentinel errors.
var (
	// ErrShutdown is returned by Reconcile after Shutdown.
	ErrShutdown = errors.New("workload runner is shut down")
	// ErrUnknownInstance is returned by Logs for an instance without logs.
	ErrUnknownInstance = errors.New("unknown instance")
	// ErrBadStream is returned by Logs for a stream other than stdout or stderr.
	ErrBadStream = errors.New("log stream must be stdout or stderr")
)

// copyDrainTimeout bounds the wait for a stopped instance's output pipes to
// drain: a process that escaped the group (setsid) can hold them open.
const copyDrainTimeout = 2 * time.Second

// Runner runs this node's instances. Its methods are safe for concurrent use.
type Runner struct {
	cfg  Config
	log  *slog.Logger
	root string
	pids *pidFile

	killNow  chan struct{} // closed when Shutdown's context ends: no more grace
	killOnce sync.Once
	wg       sync.WaitGroup // one per supervisor

	mu     sync.Mutex
	insts  map[string]*instance
	gone   []*instance // no longer desired, oldest first (retention)
	closed bool

	starts, restarts, startErrors atomic.Uint64
	strays                        int
}

// instance is one instance ID's supervisor and state.
type instance struct {
	id    string
	dir   string
	wake  chan struct{} // buffered 1: want changed or removed
	done  chan struct{} // closed when the supervisor has returned
	prev  *instance     // an earlier supervisor of the same ID, to wait for
	logMu sync.Mutex    // log rotation vs Runner.Logs

	// Guarded by Runner.mu.
	want    Assignment
	wantErr error
	gen     uint64 // bumped on every change of want
	removed bool
	st      InstanceStatus

	metricsMu sync.Mutex
	metrics   metricsFile
}

// New creates a runner. Before returning it kills the process groups a
// previous run of the agent left behind (see the package comment) so that
// no instance ever runs twice; it fails if it cannot.
func New(cfg Config) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("subsystem", "workload")
	root := filepath.Join(cfg.DataDir, "workloads")
	if err := os.MkdirAll(root, 0o750); err != nil {
		return nil, fmt.Errorf("create workloads dir: %w", err)
	}
	r := &Runner{
		cfg: cfg, log: log, root: root,
		killNow: make(chan struct{}),
		insts:   make(map[string]*instance),
	}
	boot := bootID()
	pidPath := filepath.Join(root, pidFileName)
	strays, err := findStrays(pidPath, boot)
	if err != nil {
		// A corrupt pid file cannot name anything to kill; say so loudly.
		log.Error("cannot read the previous run's process groups; stray workloads may still run", "error", err)
	}
	for _, s := range strays {
		log.Warn("killing a workload left behind by a previous run", "instance", s.id, "pgid", s.pgid)
	}
	if err := killStrays(strays, 10*time.Second); err != nil {
		return nil, err
	}
	r.strays = len(strays)
	r.pids = &pidFile{path: pidPath, boot: boot, groups: make(map[string]int)}
	r.pids.mu.Lock()
	err = r.pids.writeLocked()
	r.pids.mu.Unlock()
	if err != nil {
		return nil, err
	}
	r.pruneOldDirs()
	return r, nil
}

// pruneOldDirs keeps the RetainStopped most recent instance directories of
// previous runs (their logs stay readable through Logs) and deletes the rest.
func (r *Runner) pruneOldDirs() {
	ents, err := os.ReadDir(r.root)
	if err != nil {
		return
	}
	type dir struct {
		name string
		mod  time.Time
	}
	var dirs []dir
	for _, e := range ents {
		if !e.IsDir() || !ValidInstanceID(e.Name()) {
			continue
		}
		if info, err := e.Info(); err == nil {
			dirs = append(dirs, dir{e.Name(), info.ModTime()})
		}
	}
	if len(dirs) <= r.cfg.RetainStopped {
		return
	}
	slices.SortFunc(dirs, func(a, b dir) int { return b.mod.Compare(a.mod) })
	for _, d := range dirs[r.cfg.RetainStopped:] {
		if err := os.RemoveAll(filepath.Join(r.root, d.name)); err != nil {
			r.log.Warn("cannot delete an old instance dir", "instance", d.name, "error", err)
		}
	}
}

// Reconcile makes the set of instances equal to desired: it starts the
// instances it does not run yet, stops the ones not in desired, restarts
// those whose assignment changed and leaves the others alone (a failed or
// exited instance with an unchanged assignment stays as it is). It does not
// wait for processes: Status shows the progress. An invalid assignment
// becomes a failed instance and is reported in the returned error (wrapping
// ErrInvalidAssignment), as is a duplicate instance ID (the first wins); the
// rest of desired is applied regardless.
func (r *Runner) Reconcile(desired []Assignment) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrShutdown
	}
	var errs []error
	seen := make(map[string]bool, len(desired))
	for i := range desired {
		a := desired[i].clone()
		if !ValidInstanceID(a.InstanceID) {
			errs = append(errs, a.Validate())
			continue
		}
		if seen[a.InstanceID] {
			errs = append(errs, fmt.Errorf("%w %q: listed twice", ErrInvalidAssignment, a.InstanceID))
			continue
		}
		seen[a.InstanceID] = true
		verr := a.Validate()
		if verr != nil {
			errs = append(errs, verr)
		}
		in, ok := r.insts[a.InstanceID]
		switch {
		case !ok || in.removed:
			r.startLocked(a, verr, in)
		case !in.want.equal(&a) || (in.wantErr == nil) != (verr == nil):
			r.log.Info("assignment changed: restarting the instance", "instance", a.InstanceID)
			in.want, in.wantErr = a, verr
			in.gen++
			in.st.Deployment = a.Deployment
			notify(in.wake)
		}
	}
	for id, in := range r.insts {
		if !seen[id] && !in.removed {
			r.log.Info("instance no longer assigned: stopping it", "instance", id)
			in.removed = true
			r.gone = append(r.gone, in)
			notify(in.wake)
		}
	}
	r.pruneLocked()
	return errors.Join(errs...)
}

// startLocked creates the supervisor of a new instance. prev, if not nil,
// is the removed supervisor of the same ID: the new one waits for it.
func (r *Runner) startLocked(a Assignment, verr error, prev *instance) {
	in := &instance{
		id:      a.InstanceID,
		dir:     filepath.Join(r.root, a.InstanceID),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		prev:    prev,
		want:    a,
		wantErr: verr,
		st:      InstanceStatus{InstanceID: a.InstanceID, Deployment: a.Deployment, State: StatePending},
	}
	in.metrics.path = filepath.Join(in.dir, "metrics.json")
	if prev != nil {
		r.gone = slices.DeleteFunc(r.gone, func(g *instance) bool { return g == prev })
	}
	r.insts[a.InstanceID] = in
	r.wg.Add(1)
	go r.supervise(in)
}

// pruneLocked forgets the oldest removed instances beyond RetainStopped
// once their supervisors are done, deleting their directories.
func (r *Runner) pruneLocked() {
	for len(r.gone) > r.cfg.RetainStopped {
		in := r.gone[0]
		select {
		case <-in.done:
		default:
			return // still stopping: try again at the next Reconcile
		}
		r.gone = r.gone[1:]
		if r.insts[in.id] == in {
			delete(r.insts, in.id)
			if err := os.RemoveAll(in.dir); err != nil {
				r.log.Warn("cannot delete a stopped instance's dir", "instance", in.id, "error", err)
			}
		}
	}
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Status reports every instance the runner knows (running, finished, and
// the most recent ones no longer desired), sorted by instance ID, with the
// workloads' metrics read now.
func (r *Runner) Status() []InstanceStatus {
	r.mu.Lock()
	list := make([]*instance, 0, len(r.insts))
	for _, in := range r.insts {
		list = append(list, in)
	}
	out := make([]InstanceStatus, len(list))
	for i, in := range list {
		out[i] = in.st
	}
	r.mu.Unlock()
	for i, in := range list {
		in.metricsMu.Lock()
		in.metrics.refresh()
		out[i].Metrics = maps.Clone(in.metrics.values)
		out[i].MetricsRejected = in.metrics.rejected
		in.metricsMu.Unlock()
	}
	slices.SortFunc(out, func(a, b InstanceStatus) int { return cmp.Compare(a.InstanceID, b.InstanceID) })
	return out
}

// Stats returns the runner's counters.
func (r *Runner) Stats() Stats {
	return Stats{
		Starts:       r.starts.Load(),
		Restarts:     r.restarts.Load(),
		StartErrors:  r.startErrors.Load(),
		StraysKilled: r.strays,
	}
}

// Logs returns the last tailBytes bytes (everything kept if tailBytes <= 0)
// of an instance's stream (Stdout or Stderr). It works for any instance
// whose directory still exists, including ones of a previous run.
func (r *Runner) Logs(instanceID, stream string, tailBytes int64) ([]byte, error) {
	if stream != Stdout && stream != Stderr {
		return nil, fmt.Errorf("%w: %q", ErrBadStream, stream)
	}
	if !ValidInstanceID(instanceID) {
		return nil, fmt.Errorf("%w: %q", ErrUnknownInstance, instanceID)
	}
	dir := filepath.Join(r.root, instanceID)
	mu := new(sync.Mutex)
	r.mu.Lock()
	if in, ok := r.insts[instanceID]; ok {
		mu = &in.logMu
	}
	r.mu.Unlock()
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %q", ErrUnknownInstance, instanceID)
	}
	return readTail(mu, logPath(dir, stream), tailBytes)
}

// Shutdown stops every instance (SIGTERM to each group, SIGKILL after
// StopTimeout, or at once when ctx ends first) and waits until every
// process and goroutine the runner started is gone. Later Reconcile calls
// fail with ErrShutdown; Status and Logs keep working. Idempotent.
func (r *Runner) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		for _, in := range r.insts {
			if !in.removed {
				in.removed = true
				notify(in.wake)
			}
		}
	}
	r.mu.Unlock()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		r.killOnce.Do(func() { close(r.killNow) })
		<-done
		return fmt.Errorf("stop workloads: grace period cut short: %w", ctx.Err())
	}
}

// supervise runs one instance until it is removed: start, wait, decide
// whether to restart, back off, start again.
func (r *Runner) supervise(in *instance) {
	defer r.wg.Done()
	defer close(in.done)
	if in.prev != nil {
		<-in.prev.done
	}
	gen := ^uint64(0)
	consecutive := 0
	for {
		r.mu.Lock()
		if in.removed {
			in.st.State, in.st.PID, in.st.NextRestartAt = StateStopped, 0, time.Time{}
			r.mu.Unlock()
			return
		}
		spec, specErr := in.want, in.wantErr
		if in.gen != gen {
			gen, consecutive = in.gen, 0
			in.st.Restarts, in.st.LastError, in.st.ExitCode = 0, "", 0
		}
		r.mu.Unlock()

		if specErr != nil {
			r.settle(in, StateFailed, specErr.Error())
			r.waitChange(in, gen, nil)
			continue
		}
		res := r.runOnce(in, &spec, gen)
		if res.interrupted {
			continue
		}
		if res.ran >= r.cfg.ResetAfter {
			consecutive = 0
		}
		mode := spec.mode()
		restart := mode == RestartAlways || (mode == RestartOnFailure && !res.success)
		switch {
		case !restart && res.success:
			r.settle(in, StateExited, "")
			r.waitChange(in, gen, nil)
			continue
		case !restart:
			r.settle(in, StateFailed, res.reason+" (restart mode never)")
			r.waitChange(in, gen, nil)
			continue
		case spec.Restart.MaxRestarts > 0 && consecutive >= spec.Restart.MaxRestarts:
			r.log.Warn("instance keeps failing: giving up", "instance", in.id, "restarts", consecutive, "last", res.reason)
			r.settle(in, StateFailed, fmt.Sprintf("gave up after %d restarts; last exit: %s", consecutive, res.reason))
			r.waitChange(in, gen, nil)
			continue
		}
		consecutive++
		delay := spec.backoff(consecutive)
		r.mu.Lock()
		in.st.State, in.st.NextRestartAt = StateBackoff, time.Now().Add(delay)
		r.mu.Unlock()
		r.log.Info("instance exited: restarting after backoff", "instance", in.id, "exit", res.reason, "backoff", delay)
		t := time.NewTimer(delay)
		fired := r.waitChange(in, gen, t.C)
		t.Stop()
		if fired {
			r.mu.Lock()
			in.st.Restarts++
			in.st.NextRestartAt = time.Time{}
			r.mu.Unlock()
			r.restarts.Add(1)
		}
	}
}

// settle records a final state (exited or failed) with its reason.
func (r *Runner) settle(in *instance, s State, reason string) {
	r.mu.Lock()
	in.st.State, in.st.PID, in.st.NextRestartAt = s, 0, time.Time{}
	if reason != "" {
		in.st.LastError = reason
	}
	r.mu.Unlock()
}

// changed reports whether the instance was removed or reassigned since gen.
func (r *Runner) changed(in *instance, gen uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return in.removed || in.gen != gen
}

// waitChange blocks until the instance is removed or reassigned (false) or
// fire delivers (true).
func (r *Runner) waitChange(in *instance, gen uint64, fire <-chan time.Time) bool {
	for {
		select {
		case <-in.wake:
			if r.changed(in, gen) {
				return false
			}
		case <-fire:
			return true
		}
	}
}

type runResult struct {
	interrupted bool // stopped because removed or reassigned
	success     bool // exit status 0
	reason      string
	ran         time.Duration
}

// runOnce starts the process, copies its output to the logs and waits for
// it to exit, or stops it when the instance is removed or reassigned. When
// it returns no process of the instance's group is left.
func (r *Runner) runOnce(in *instance, spec *Assignment, gen uint64) runResult {
	r.mu.Lock()
	in.st.State = StateStarting
	r.mu.Unlock()
	p, err := r.start(in, spec)
	if err != nil {
		r.startErrors.Add(1)
		r.log.Warn("cannot start instance", "instance", in.id, "error", err)
		r.mu.Lock()
		in.st.ExitCode, in.st.ExitedAt, in.st.LastError = -1, time.Now(), err.Error()
		r.mu.Unlock()
		return runResult{reason: err.Error()}
	}
	r.starts.Add(1)
	started := time.Now()
	pgid := p.cmd.Process.Pid
	if err := r.pids.set(in.id, pgid); err != nil {
		r.log.Error("cannot record the process group; a crash of the agent could leave it running", "instance", in.id, "error", err)
	}
	r.mu.Lock()
	in.st.State, in.st.PID, in.st.StartedAt, in.st.ExitedAt = StateRunning, pgid, started, time.Time{}
	r.mu.Unlock()
	r.log.Info("instance started", "instance", in.id, "pid", pgid, "argv", strings.Join(spec.Argv, " "))

	var waitErr error
	interrupted := false
wait:
	for {
		select {
		case waitErr = <-p.exited:
			// The main process is gone; whatever it left in its group
			// must not outlive it (a restart would run it twice).
			if err := killGroup(pgid, syscall.SIGKILL); err != nil {
				r.log.Warn("cannot kill the rest of the process group", "instance", in.id, "error", err)
			}
			break wait
		case <-in.wake:
			if r.changed(in, gen) {
				interrupted = true
				waitErr = r.stop(in, pgid, p.exited)
				break wait
			}
		}
	}
	ran := time.Since(started)
	p.finish()
	if err := r.pids.set(in.id, 0); err != nil {
		r.log.Warn("cannot update the pid file", "error", err)
	}

	res := runResult{interrupted: interrupted, ran: ran, success: waitErr == nil}
	code := p.cmd.ProcessState.ExitCode()
	if waitErr != nil {
		res.reason = waitErr.Error()
	} else {
		res.reason = "exit status 0"
	}
	r.mu.Lock()
	in.st.PID, in.st.ExitCode, in.st.ExitedAt = 0, code, time.Now()
	if waitErr != nil && !interrupted {
		in.st.LastError = res.reason
	}
	r.mu.Unlock()
	if !interrupted {
		r.log.Info("instance exited", "instance", in.id, "status", res.reason, "ran", ran.Round(time.Millisecond))
	}
	return res
}

// stop ends a running instance: SIGTERM to the group, then SIGKILL once
// the grace period is over (or at once when Shutdown's context ended). The
// grace also covers group members still winding down after the main
// process exited. It returns the main process's wait error.
func (r *Runner) stop(in *instance, pgid int, exited <-chan error) error {
	r.mu.Lock()
	in.st.State = StateStopping
	r.mu.Unlock()
	r.log.Info("stopping instance", "instance", in.id, "pid", pgid)
	if err := killGroup(pgid, syscall.SIGTERM); err != nil {
		r.log.Warn("cannot signal the process group", "instance", in.id, "error", err)
	}
	grace := time.NewTimer(r.cfg.StopTimeout)
	defer grace.Stop()
	var waitErr error
	select {
	case waitErr = <-exited:
		poll := time.NewTicker(20 * time.Millisecond)
		defer poll.Stop()
	drain:
		for len(groupMembers(pgid)) > 0 {
			select {
			case <-poll.C:
			case <-grace.C:
				break drain
			case <-r.killNow:
				break drain
			}
		}
		killGroup(pgid, syscall.SIGKILL) //nolint:errcheck // best effort: the group is empty or dying
		return waitErr
	case <-grace.C:
		r.log.Warn("instance ignored SIGTERM: killing it", "instance", in.id, "grace", r.cfg.StopTimeout)
	case <-r.killNow:
	}
	if err := killGroup(pgid, syscall.SIGKILL); err != nil {
		r.log.Warn("cannot kill the process group", "instance", in.id, "error", err)
	}
	return <-exited
}

// removeQuiet removes path, ignoring a missing file.
func removeQuiet(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

var _ io.Writer = (*logFile)(nil)
