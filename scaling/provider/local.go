package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
)

// LocalConfig configures the local provider, which runs `colony agent`
// processes on this host.
type LocalConfig struct {
	// Name of this provider; instance IDs start with it (default "local").
	Name string `yaml:"name"`
	// Binary is the colony executable to run.
	Binary string `yaml:"binary"`
	// BaseDir holds one directory per instance: its state file, agent log
	// and data dir. It is the provider's whole memory: a provider built on
	// the same BaseDir (by a new leader) sees the same instances.
	BaseDir string `yaml:"base_dir"`
	// IPs is the address pool, one distinct IP per live instance: single
	// addresses or inclusive ranges ("127.0.90.1-127.0.90.254"). Every
	// 127.0.0.0/8 address is the loopback interface on Linux, so instances
	// use the default ports without clashing.
	IPs []string `yaml:"ips"`
	// GossipPort and HTTPPort are the agents' ports on their IP.
	GossipPort int `yaml:"gossip_port"`
	HTTPPort   int `yaml:"http_port"`
	// Types offered; their profile labels are passed to the agents. The
	// default is one type, "local", with this host's capabilities.
	Types []InstanceType `yaml:"types"`
	// Args are extra `colony agent` flags (e.g. --gossip-profile local).
	Args []string `yaml:"args"`
	// Env entries (KEY=value) are set for the agents. The launching
	// process's COLONY_* variables are not passed on: a launched agent is
	// configured by its flags and Env only.
	Env []string `yaml:"env"`
	// GracePeriod is how long Terminate waits after SIGTERM (the agent
	// leaves the cluster) before SIGKILL.
	GracePeriod time.Duration `yaml:"grace_period"`
	// StartTimeout is how long Launch waits for new agents' APIs to answer;
	// an agent that exits meanwhile fails the launch with its log's tail,
	// one still starting is returned as pending.
	StartTimeout time.Duration `yaml:"start_timeout"`
	// KeepTerminated is how long a terminated instance's record stays
	// (List shows it; its slot stays used) before its directory is removed.
	KeepTerminated time.Duration `yaml:"keep_terminated"`
	// Logger (nil: discard).
	Logger *slog.Logger `yaml:"-"`
}

// HostType is an instance type with this host's capabilities.
func HostType(name string) InstanceType {
	p := Profile{CPUs: float64(runtime.NumCPU()), Arch: runtime.GOARCH, OS: runtime.GOOS}
	if fs, err := procfs.NewDefaultFS(); err == nil {
		if mi, err := fs.Meminfo(); err == nil && mi.MemTotal != nil {
			p.MemoryMiB = int64(*mi.MemTotal / 1024)
		}
	}
	return InstanceType{Name: name, Profile: p}
}

// DefaultLocalConfig returns defaults; Binary and BaseDir must be set.
func DefaultLocalConfig() LocalConfig {
	return LocalConfig{
		Name:           "local",
		IPs:            []string{"127.0.90.1-127.0.90.254"},
		GossipPort:     7946,
		HTTPPort:       7070,
		Types:          []InstanceType{HostType("local")},
		GracePeriod:    10 * time.Second,
		StartTimeout:   15 * time.Second,
		KeepTerminated: time.Hour,
	}
}

// Validate checks the configuration.
func (c LocalConfig) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: local provider %q: %s", ErrInvalid, c.Name, fmt.Sprintf(format, a...))
	}
	switch {
	case c.Name == "" || !validName(c.Name):
		return bad("name must be letters, digits and dashes")
	case c.Binary == "":
		return bad("no binary (path of the colony executable)")
	case c.BaseDir == "":
		return bad("no base_dir")
	case c.GossipPort < 1 || c.GossipPort > 65535 || c.HTTPPort < 1 || c.HTTPPort > 65535:
		return bad("ports must be 1..65535")
	case c.GossipPort == c.HTTPPort:
		return bad("gossip and HTTP ports are the same")
	case c.GracePeriod < 0 || c.StartTimeout < 0 || c.KeepTerminated < 0:
		return bad("negative duration")
	}
	if _, err := parseIPPool(c.IPs); err != nil {
		return bad("%v", err)
	}
	if err := validateTypes(c.Types); err != nil {
		return fmt.Errorf("local provider %q: %w", c.Name, err)
	}
	for _, e := range c.Env {
		if !strings.Contains(e, "=") {
			return bad("env entry %q: want KEY=value", e)
		}
	}
	return nil
}

func validName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// parseIPPool expands addresses and inclusive ranges, in order.
func parseIPPool(entries []string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, e := range entries {
		lo, hi, isRange := strings.Cut(e, "-")
		first, err := netip.ParseAddr(strings.TrimSpace(lo))
		if err != nil {
			return nil, fmt.Errorf("ip pool entry %q: %w", e, err)
		}
		last := first
		if isRange {
			if last, err = netip.ParseAddr(strings.TrimSpace(hi)); err != nil {
				return nil, fmt.Errorf("ip pool entry %q: %w", e, err)
			}
		}
		if last.Less(first) || first.Is4() != last.Is4() {
			return nil, fmt.Errorf("ip pool entry %q: not an ascending range", e)
		}
		for a := first; ; a = a.Next() {
			out = append(out, a)
			if len(out) > 1<<16 {
				return nil, fmt.Errorf("ip pool larger than %d addresses", 1<<16)
			}
			if a == last {
				break
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("empty ip pool")
	}
	return out, nil
}

// localRecord is an instance's state file (BaseDir/ID/instance.json).
// Everything List needs is in it, so any Provider on the same BaseDir can
// answer.
type localRecord struct {
	ID             string            `json:"id"`
	Type           string            `json:"type"`
	IdempotencyKey string            `json:"idempotency_key"`
	Index          int               `json:"index"`
	Labels         map[string]string `json:"labels,omitempty"`
	IP             string            `json:"ip"`
	Addr           string            `json:"addr"`
	HTTPAddr       string            `json:"http_addr"`
	CreatedAt      time.Time         `json:"created_at"`
	// PID and StartTicks (the process start time from /proc/PID/stat)
	// name the process even after its PID is reused. PGID is its process
	// group (SIGKILL takes the agent's workloads with it).
	PID          int        `json:"pid"`
	PGID         int        `json:"pgid"`
	StartTicks   uint64     `json:"start_ticks"`
	TerminatedAt *time.Time `json:"terminated_at,omitempty"`
}

// Local is the local provider.
type Local struct {
	cfg  LocalConfig
	pool []netip.Addr
	log  *slog.Logger
}

// NewLocal returns a local provider. The binary must exist; BaseDir is
// created.
func NewLocal(cfg LocalConfig) (*Local, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	bin, err := exec.LookPath(cfg.Binary)
	if err != nil {
		return nil, fmt.Errorf("%w: local provider %q: binary: %w", ErrInvalid, cfg.Name, err)
	}
	if cfg.Binary, err = filepath.Abs(bin); err != nil {
		return nil, err
	}
	if cfg.BaseDir, err = filepath.Abs(cfg.BaseDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.BaseDir, 0o700); err != nil {
		return nil, fmt.Errorf("local provider %q: %w", cfg.Name, err)
	}
	pool, _ := parseIPPool(cfg.IPs)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Local{cfg: cfg, pool: pool, log: log.With("subsystem", "provider", "provider", cfg.Name)}, nil
}

// Name implements Provider.
func (l *Local) Name() string { return l.cfg.Name }

// InstanceTypes implements Provider.
func (l *Local) InstanceTypes(context.Context) ([]InstanceType, error) {
	return slices.Clone(l.cfg.Types), nil
}

// lock takes the BaseDir lock (flock: it excludes other goroutines, and
// other processes such as a second leader, for the launch's
// list-allocate-start sequence).
func (l *Local) lock(ctx context.Context) (func(), error) {
	f, err := os.OpenFile(filepath.Join(l.cfg.BaseDir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", l.cfg.BaseDir, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for the launch lock on %s: %w", l.cfg.BaseDir, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (l *Local) recordPath(id string) string {
	return filepath.Join(l.cfg.BaseDir, id, "instance.json")
}

func (l *Local) readRecord(id string) (*localRecord, error) {
	b, err := os.ReadFile(l.recordPath(id))
	if err != nil {
		return nil, err
	}
	var r localRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", l.recordPath(id), err)
	}
	return &r, nil
}

func (l *Local) writeRecord(r *localRecord) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	path := l.recordPath(r.ID)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// records reads every instance record; unreadable ones are logged and
// skipped (a half-created directory from a crash has none).
func (l *Local) records() ([]*localRecord, error) {
	ents, err := os.ReadDir(l.cfg.BaseDir)
	if err != nil {
		return nil, err
	}
	var out []*localRecord
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), l.cfg.Name+"-") {
			continue
		}
		r, err := l.readRecord(e.Name())
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				l.log.Warn("skipping unreadable instance record", "id", e.Name(), "err", err)
			}
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

// procAlive reports whether pid is a live (not zombie) process started at
// startTicks; startTicks 0 skips that check.
func procAlive(pid int, startTicks uint64) bool {
	if pid <= 0 {
		return false
	}
	p, err := procfs.NewProc(pid)
	if err != nil {
		return false
	}
	st, err := p.Stat()
	if err != nil || st.State == "Z" || st.State == "X" || st.State == "x" {
		return false
	}
	return startTicks == 0 || st.Starttime == startTicks
}

func procStartTicks(pid int) uint64 {
	if p, err := procfs.NewProc(pid); err == nil {
		if st, err := p.Stat(); err == nil {
			return st.Starttime
		}
	}
	return 0
}

// findByDataDir finds the agent running on dataDir when its PID was never
// recorded (the launcher died between starting it and writing the record).
func findByDataDir(dataDir string) int {
	procs, err := procfs.AllProcs()
	if err != nil {
		return 0
	}
	for _, p := range procs {
		args, err := p.CmdLine()
		if err != nil {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "--data-dir" && args[i+1] == dataDir {
				if st, err := p.Stat(); err == nil && st.State != "Z" {
					return p.PID
				}
			}
		}
	}
	return 0
}

// alive reports whether r's agent runs, adopting an unrecorded PID.
func (l *Local) alive(r *localRecord) bool {
	if r.PID == 0 {
		pid := findByDataDir(filepath.Join(l.cfg.BaseDir, r.ID, "data"))
		if pid == 0 {
			return false
		}
		r.PID, r.PGID, r.StartTicks = pid, pid, procStartTicks(pid)
		if err := l.writeRecord(r); err != nil {
			l.log.Warn("cannot record adopted pid", "id", r.ID, "err", err)
		}
	}
	return procAlive(r.PID, r.StartTicks)
}

func dialOK(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 250*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func (l *Local) instance(r *localRecord) Instance {
	in := Instance{ID: r.ID, Type: r.Type, IdempotencyKey: r.IdempotencyKey, Index: r.Index,
		Labels: r.Labels, Addr: r.Addr, CreatedAt: r.CreatedAt, State: StateTerminated}
	if l.alive(r) {
		in.State = StatePending
		if dialOK(r.HTTPAddr) {
			in.State = StateRunning
		}
	}
	return in
}

// List implements Provider: records in BaseDir, with liveness from /proc
// (PID and start time) and running = the agent's API answers. Records of
// instances terminated more than KeepTerminated ago are removed.
func (l *Local) List(ctx context.Context) ([]Instance, error) {
	recs, err := l.records()
	if err != nil {
		return nil, fmt.Errorf("local provider %q: list: %w", l.cfg.Name, err)
	}
	out := make([]Instance, 0, len(recs))
	for _, r := range recs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		in := l.instance(r)
		if r.TerminatedAt != nil && !in.Live() && time.Since(*r.TerminatedAt) > l.cfg.KeepTerminated {
			if err := os.RemoveAll(filepath.Join(l.cfg.BaseDir, r.ID)); err != nil {
				l.log.Warn("cannot remove old instance", "id", r.ID, "err", err)
			}
			continue
		}
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b Instance) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// freeIPs returns pool addresses no live instance holds and nothing else
// listens on, in pool order.
func (l *Local) freeIPs(recs []*localRecord, n int) []netip.Addr {
	used := map[string]bool{}
	for _, r := range recs {
		if l.alive(r) {
			used[r.IP] = true
		}
	}
	var out []netip.Addr
	for _, a := range l.pool {
		if len(out) == n {
			break
		}
		if used[a.String()] || !l.portsFree(a) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// portsFree checks that another program (another test's agent, a stray
// process) does not hold the ports on a.
func (l *Local) portsFree(a netip.Addr) bool {
	for _, port := range []int{l.cfg.GossipPort, l.cfg.HTTPPort} {
		ln, err := net.Listen("tcp", netip.AddrPortFrom(a, uint16(port)).String())
		if err != nil {
			return false
		}
		ln.Close()
	}
	return true
}

// Launch implements Provider. Under the BaseDir lock it lists the key's
// slots, starts agents for the missing ones (each records its PID before
// the lock is released), then waits up to StartTimeout for their APIs.
// The agents run in their own process groups, detached from this process:
// a leader that exits or loses leadership leaves them running.
func (l *Local) Launch(ctx context.Context, req LaunchRequest) ([]Instance, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	typ, err := findType(l.cfg.Types, req.Type)
	if err != nil {
		return nil, err
	}
	unlock, err := l.lock(ctx)
	if err != nil {
		return nil, err
	}
	started, err := l.start(ctx, req, typ)
	unlock()
	if err != nil {
		return nil, err
	}
	if len(started) > 0 {
		if err := l.waitStarted(ctx, started); err != nil {
			return nil, err
		}
	}
	all, err := l.List(ctx)
	if err != nil {
		return nil, err
	}
	return WithKey(all, req.IdempotencyKey), nil
}

// start creates and starts the missing slots; called with the lock held.
func (l *Local) start(ctx context.Context, req LaunchRequest, typ InstanceType) ([]*localRecord, error) {
	recs, err := l.records()
	if err != nil {
		return nil, err
	}
	var have []Instance
	for _, r := range recs {
		if r.IdempotencyKey == req.IdempotencyKey {
			have = append(have, Instance{Index: r.Index})
		}
	}
	missing := MissingIndexes(have, req.Count)
	if len(missing) == 0 {
		return nil, nil
	}
	ips := l.freeIPs(recs, len(missing))
	if len(ips) < len(missing) {
		return nil, fmt.Errorf("local provider %q: %d free addresses in the pool, %d needed: %w", l.cfg.Name, len(ips), len(missing), ErrCapacity)
	}
	labels := mergeLabels(typ.Profile.Labels, req.Labels)
	var started []*localRecord
	for i, idx := range missing {
		if err := ctx.Err(); err != nil {
			return started, err
		}
		r := &localRecord{
			ID: InstanceName(l.cfg.Name, req.IdempotencyKey, idx), Type: typ.Name,
			IdempotencyKey: req.IdempotencyKey, Index: idx, Labels: labels,
			IP:        ips[i].String(),
			Addr:      netip.AddrPortFrom(ips[i], uint16(l.cfg.GossipPort)).String(),
			HTTPAddr:  netip.AddrPortFrom(ips[i], uint16(l.cfg.HTTPPort)).String(),
			CreatedAt: time.Now().UTC().Truncate(time.Millisecond),
		}
		if err := l.startOne(r, req.JoinAddr); err != nil {
			return started, fmt.Errorf("local provider %q: launch %s slot %d: %w", l.cfg.Name, req.IdempotencyKey, idx, err)
		}
		l.log.Info("launched agent", "id", r.ID, "key", r.IdempotencyKey, "index", idx, "type", r.Type, "addr", r.Addr, "pid", r.PID)
		started = append(started, r)
	}
	return started, nil
}

// startOne writes the record, then starts the agent through a shell that
// backgrounds it and exits, so the agent is re-parented to init: it is
// never this process's child (no zombies to reap, no goroutine per agent)
// and outlives it. The record is written first with PID 0: if we die
// before the PID is known, List finds the agent by its data dir.
func (l *Local) startOne(r *localRecord, join string) error {
	dir := filepath.Join(l.cfg.BaseDir, r.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		// A directory without a record is a launch that died before
		// writing it: nothing runs there (the record precedes the start).
		if !errors.Is(err, os.ErrExist) {
			return err
		}
		if _, rerr := l.readRecord(r.ID); rerr == nil {
			return fmt.Errorf("instance %s already exists", r.ID)
		}
	}
	if err := l.writeRecord(r); err != nil {
		return err
	}
	args := []string{"agent",
		"--node-name", r.ID,
		"--data-dir", filepath.Join(dir, "data"),
		"--bind", r.IP,
		"--gossip-port", strconv.Itoa(l.cfg.GossipPort),
		"--http-addr", r.HTTPAddr,
	}
	if join != "" {
		args = append(args, "--join", join)
	}
	for _, k := range slices.Sorted(maps.Keys(r.Labels)) {
		args = append(args, "--label", k+"="+r.Labels[k])
	}
	args = append(args, l.cfg.Args...)
	script := `log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!`
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, "sh", filepath.Join(dir, "agent.log"), l.cfg.Binary}, args...)...)
	cmd.Env = append(withoutColonyEnv(os.Environ()), l.cfg.Env...)
	// Own process group: a Ctrl-C or group kill aimed at the leader does
	// not reach the agents.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("start agent: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || pid <= 0 {
		return fmt.Errorf("start agent: shell printed %q, not a pid", out)
	}
	r.PID, r.PGID, r.StartTicks = pid, cmd.Process.Pid, procStartTicks(pid)
	return l.writeRecord(r)
}

func withoutColonyEnv(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(e string) bool { return strings.HasPrefix(e, "COLONY_") })
}

// waitStarted waits until every started agent's API answers or it exits.
// An agent that exits at start is a failed launch: its slot is freed (the
// process is verifiably gone) and the error carries its log's tail.
func (l *Local) waitStarted(ctx context.Context, recs []*localRecord) error {
	deadline := time.Now().Add(l.cfg.StartTimeout)
	pending := slices.Clone(recs)
	var errs []error
	for len(pending) > 0 && time.Now().Before(deadline) {
		pending = slices.DeleteFunc(pending, func(r *localRecord) bool {
			if !procAlive(r.PID, r.StartTicks) {
				logTail, _ := os.ReadFile(filepath.Join(l.cfg.BaseDir, r.ID, "agent.log"))
				errs = append(errs, fmt.Errorf("agent %s exited at start: %s", r.ID, tail(string(logTail), 600)))
				if err := os.RemoveAll(filepath.Join(l.cfg.BaseDir, r.ID)); err != nil {
					l.log.Warn("cannot remove failed instance", "id", r.ID, "err", err)
				}
				return true
			}
			return dialOK(r.HTTPAddr)
		})
		if len(pending) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("local provider %q: %w", l.cfg.Name, errors.Join(errs...))
	}
	return nil
}

// Terminate implements Provider: SIGTERM (the agent leaves the cluster
// gracefully), SIGKILL to its process group after GracePeriod (or when ctx
// ends), then the record is marked terminated and the data dir removed.
// Unknown and already terminated IDs are success.
func (l *Local) Terminate(ctx context.Context, ids []string) error {
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.terminateOne(ctx, id)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("local provider %q: terminate: %w", l.cfg.Name, err)
	}
	return nil
}

func (l *Local) terminateOne(ctx context.Context, id string) error {
	if !strings.HasPrefix(id, l.cfg.Name+"-") || strings.ContainsAny(id, `/\`) {
		return nil // not ours: it cannot exist here
	}
	r, err := l.readRecord(id)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if l.alive(r) {
		_ = syscall.Kill(r.PID, syscall.SIGTERM)
		if !l.waitGone(ctx, r, l.cfg.GracePeriod) {
			l.log.Warn("agent did not leave within the grace period: killing", "id", id, "grace", l.cfg.GracePeriod)
			_ = syscall.Kill(-r.PGID, syscall.SIGKILL)
			_ = syscall.Kill(r.PID, syscall.SIGKILL)
			if !l.waitGone(context.Background(), r, 10*time.Second) {
				return fmt.Errorf("%s: pid %d survived SIGKILL", id, r.PID)
			}
		}
	}
	if r.TerminatedAt == nil {
		now := time.Now().UTC()
		r.TerminatedAt = &now
		if err := l.writeRecord(r); err != nil {
			return err
		}
		l.log.Info("terminated agent", "id", id, "key", r.IdempotencyKey)
	}
	return os.RemoveAll(filepath.Join(l.cfg.BaseDir, id, "data"))
}

// waitGone polls until r's process is gone, for at most d or until ctx
// ends.
func (l *Local) waitGone(ctx context.Context, r *localRecord, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for procAlive(r.PID, r.StartTicks) {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return !procAlive(r.PID, r.StartTicks)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true
}
