// Package scale is Colony's scale harness: it starts N real agents (in one
// process, every one with its own sockets on its own loopback address, or
// as separate processes), joins them one by one through a single seed and
// measures how long the cluster takes to agree on its membership, elect a
// leader and voters, commit a complete monitoring plan and run one instance
// of a deployment on every node; then, at steady state, what each node
// costs in CPU, memory and gossip bytes, and how many false suspicions the
// failure detector raises. The same run measures bare memberlist (no
// Colony) at the same N with the same memberlist settings, for the ratios.
//
// cmd/colony-scale is the command line (make bench-scale N=...).
package scale

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"

	"colony/gossip"
)

// Modes.
const (
	ModeColony = "colony" // Colony agents, all in this process
	ModeBare   = "bare"   // bare memberlist nodes, all in this process
	ModeProcs  = "procs"  // Colony agents, one process each
)

// Options configure a harness run.
type Options struct {
	// N lists the cluster sizes to measure, in order.
	N []int
	// Modes lists what to run at each N (ModeColony, ModeBare, ModeProcs).
	Modes []string
	// Profile is the gossip profile of every node (lan, dense, ...); bare
	// memberlist uses the same memberlist settings.
	Profile string
	// ProcsMax is the largest N run in process mode.
	ProcsMax int
	// ColonyNet and BareNet are the first two octets of the loopback
	// addresses ("127.2"); Base is the third octet of the first node (node
	// i gets net.(Base+i/250).(i%250+1)). Process mode starts at Base+ProcsBase.
	ColonyNet, BareNet string
	Base, ProcsBase    int
	// JoinParallel is how many nodes join at the same time (1: one by one).
	JoinParallel int
	// JoinJitter, when set, boots the Colony agents as a fleet with the
	// product's --join-jitter: all are started at once and each waits a
	// random time up to JoinJitter before joining the seed. Results are
	// labelled with the profile plus "+jitter".
	JoinJitter time.Duration
	// BareMeta, when set, makes every bare memberlist node gossip this many
	// bytes of (meaningless) metadata, to measure what metadata size alone
	// costs memberlist. Results are labelled with the profile plus "+metaN".
	BareMeta int
	// Tune, when set, overrides memberlist settings of every node, bare
	// and Colony, on top of the profile, to measure settings that are not
	// a profile's. Results are labelled with the profile plus "+tuned".
	Tune Tune
	// CreateFirst builds every node (agent.New, memberlist.Create: data
	// dir, sockets) before the clock starts, in every mode, so that the
	// times measure joining and spreading alone. One machine otherwise
	// builds the nodes one after the other inside the timed loop, a cost a
	// fleet, each machine building its own, pays in parallel. Results are
	// labelled with the profile plus "+created".
	CreateFirst bool
	// Settle is the wait between convergence and the steady-state window;
	// Steady is the window's length.
	Settle, Steady time.Duration
	// Pause is the wait between runs, for the previous run's sockets to go.
	Pause time.Duration
	// Timeout bounds the wait for each run's convergence phases.
	Timeout time.Duration
	// Deploy submits a deployment of one instance per node.
	Deploy bool
	// Monitor measures monitoring after the steady-state window (colony
	// mode): the tree with each K of MonitorK, then the flat alternative
	// (K > N), each for MonitorWindow. MonitorInterval is every agent's
	// --monitor-interval (all modes).
	Monitor         bool
	MonitorK        []int
	MonitorInterval time.Duration
	MonitorWindow   time.Duration
	// RaiseConntrack lets the harness raise the host's connection-tracking
	// table (net.netfilter.nf_conntrack_max, root only) when N agents on
	// this host could fill it (host.go). A run during which the host
	// dropped packets is marked in its note either way.
	RaiseConntrack bool
	// FlightRecorder keeps the last seconds of this process's execution
	// trace and writes them to OUT/stall-MODE-N-Ts.trace the first times
	// (at most three a run, 30 s apart) the process stalls for StallTrace
	// or longer (stall.go). Every run writes OUT/runtime-MODE-N.csv (each
	// shard its own), a second-by-second record of the runtime (scheduler
	// latency, GC), either way.
	FlightRecorder bool
	StallTrace     time.Duration
	// Shards, when above 1, runs colony mode's agents in this many child
	// processes of the harness instead of this one (shards.go): each its
	// own heap, collector and scheduler. Results are labelled with the
	// profile plus "+shardsK".
	Shards int
	// Binary is the colony binary for process mode.
	Binary string
	// Out is the output directory (tables, plots, agent logs).
	Out string
	// Log receives progress lines; nil discards them.
	Log io.Writer `json:"-"`
}

// DefaultOptions are the make bench-scale defaults.
func DefaultOptions() Options {
	return Options{
		N: []int{50, 100, 250}, Modes: []string{ModeBare, ModeColony, ModeProcs}, Profile: "lan", ProcsMax: 100,
		ColonyNet: "127.2", BareNet: "127.3", ProcsBase: 150, JoinParallel: 1,
		Settle: 10 * time.Second, Steady: 30 * time.Second, Pause: 3 * time.Second, Timeout: 5 * time.Minute, Deploy: true, Out: "bin/scale", RaiseConntrack: true, StallTrace: time.Second,
		Monitor: true, MonitorK: []int{32}, MonitorInterval: 5 * time.Second, MonitorWindow: 30 * time.Second,
	}
}

// Result is one measured run.
type Result struct {
	Mode    string
	Profile string
	N       int
	// Times from the start of the seed until every node sees all N alive,
	// a leader with its voters is known, the monitoring plan covers every
	// node (and every node follows it), one instance runs on every node.
	// Negative: not reached (or not measured).
	Converge, Leader, Plan, Deploy time.Duration
	// View is the time until every node's Colony view (what the API and
	// the CLI list) holds all N members alive with their metadata.
	View time.Duration
	// JoinTime is how long starting and joining all N nodes took.
	JoinTime time.Duration
	// ConvCPU is the CPU time all nodes used from the start until
	// membership converged (the harness process, or the sum of the processes).
	ConvCPU time.Duration
	// Steady state, per node: CPU in percent of one core, gossip bytes sent
	// per second, memory (RSS) in bytes.
	CPUPercent   float64
	BytesPerSec  float64
	MemPerNode   float64
	Goroutines   float64 // per node (in-process modes)
	Suspicions   float64 // suspicions per minute, cluster-wide, at steady state
	JoinSuspects float64 // suspicions raised from start to the end of settling
	FalseDead    float64 // nodes declared dead at any time (none ever fails)
	NotAlive     int     // (observer, member) pairs not seen alive at the end
	PeakRSS      uint64  // bytes: the process, or the sum of the processes
	Err          string
	// Monitor holds the monitoring figures (Options.Monitor), tree then flat.
	Monitor []MonResult
}

func (o *Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
}

// addr is node i's loopback address.
func addr(net string, base, i int) string {
	return fmt.Sprintf("%s.%d.%d", net, base+i/250, i%250+1)
}

// Run measures every (N, mode) pair in order and returns the results; a
// run that fails is recorded with its error and the next one goes on.
func Run(ctx context.Context, o Options) []Result {
	raiseFileLimit()
	var out []Result
	for _, n := range o.N {
		for _, mode := range o.Modes {
			if ctx.Err() != nil {
				return out
			}
			if mode == ModeProcs && n > o.ProcsMax {
				continue
			}
			o.logf("--- %s, N=%d, profile %s", mode, n, o.Profile)
			r := runOne(ctx, &o, mode, n)
			if r.Err != "" {
				o.logf("%s N=%d: %s", mode, n, r.Err)
			}
			o.logf("%s", r.summary())
			out = append(out, r)
			// Let the previous run's sockets and memory go before the next.
			runtime.GC()
			debug.FreeOSMemory()
			sleepCtx(ctx, o.Pause)
		}
	}
	return out
}

func (r Result) summary() string {
	return fmt.Sprintf("%s N=%d: converge %s view %s leader %s plan %s deploy %s | cpu %.2f%%/node, %.0f B/s/node, mem %.1f MB/node, suspicions %.2f/min (join %.0f), false dead %.0f, not alive %d, peak RSS %.0f MB",
		r.Mode, r.N, secs(r.Converge), secs(r.View), secs(r.Leader), secs(r.Plan), secs(r.Deploy), r.CPUPercent, r.BytesPerSec, r.MemPerNode/1e6, r.Suspicions, r.JoinSuspects, r.FalseDead, r.NotAlive, float64(r.PeakRSS)/1e6)
}

func secs(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
}

// cluster is what a mode provides to the measurement loop.
type cluster interface {
	// start starts all nodes, the seed first, and joins them.
	start(ctx context.Context) error
	// converged reports whether every node sees all N members alive.
	converged(ctx context.Context) (bool, error)
	// view reports whether every node's Colony view lists all N members
	// alive with their metadata (a member gossiping compact metadata is
	// listed once its record arrives; bare memberlist: errNotApplicable).
	view(ctx context.Context) (bool, error)
	// leader, plan, deploy and running probe the Colony phases (bare
	// memberlist has none of them: it returns errNotApplicable).
	leader(ctx context.Context) (bool, error)
	plan(ctx context.Context) (bool, error)
	deploy(ctx context.Context) error
	running(ctx context.Context) (int, error)
	// sample reads cumulative counters.
	sample(ctx context.Context) (counters, error)
	// notAlive counts (observer, member) pairs where a node does not see another alive.
	notAlive(ctx context.Context) int
	stop()
}

var errNotApplicable = errors.New("not applicable")

type counters struct {
	cpu        time.Duration
	bytes      uint64
	suspicions uint64 // summed over nodes: each node counts each suspicion it hears of
	dead       uint64
	rss        uint64 // current
	peakRSS    uint64
	goroutines int
}

// addGossip adds one node's gossip statistics.
func (s *counters) addGossip(st gossip.Stats) {
	s.bytes += st.UDPBytesSent + st.TCPBytesSent
	s.suspicions += st.Suspicions
	s.dead += st.DeadMessages
}

// addProcess records this process's CPU time, memory and goroutines.
func (s *counters) addProcess() {
	s.cpu = selfCPU()
	s.rss, s.peakRSS = procStatus("self")
	s.goroutines = runtime.NumGoroutine()
}

func runOne(ctx context.Context, o *Options, mode string, n int) (r Result) {
	r = Result{Mode: mode, Profile: o.Profile, N: n, Converge: -1, View: -1, Leader: -1, Plan: -1, Deploy: -1}
	if o.JoinJitter > 0 && mode == ModeColony {
		r.Profile += "+jitter" + o.JoinJitter.String()
	}
	if o.BareMeta > 0 && mode == ModeBare {
		r.Profile += fmt.Sprintf("+meta%d", o.BareMeta)
	}
	if o.Tune.set() && mode != ModeProcs {
		r.Profile += "+tuned"
	}
	if o.CreateFirst && mode != ModeProcs {
		r.Profile += "+created"
	}
	if o.Shards > 1 && mode == ModeColony {
		r.Profile += fmt.Sprintf("+shards%d", min(o.Shards, n))
	}
	if warn := ensureConntrack(o, n); warn != "" {
		o.logf("%s N=%d: %s", mode, n, warn)
	}
	if d0, ok := conntrackDrops(); ok {
		defer func() {
			if d1, _ := conntrackDrops(); d1 > d0 {
				limit, _ := readInt(conntrackMaxFile)
				r.Err = strings.TrimPrefix(r.Err+fmt.Sprintf("; the host's connection tracking dropped %d packets (table full at net.netfilter.nf_conntrack_max %d): not a valid measurement", d1-d0, limit), "; ")
			}
		}()
	}
	var c cluster
	switch mode {
	case ModeColony:
		if o.Shards > 1 {
			c = newShardCluster(o, n)
		} else {
			c = newColonyCluster(o, n)
		}
	case ModeBare:
		c = newBareCluster(o, n)
	case ModeProcs:
		c = newProcCluster(o, n)
	default:
		r.Err = fmt.Sprintf("unknown mode %q", mode)
		return r
	}
	defer c.stop()
	if _, shards := c.(*shardCluster); !shards { // each shard records its own runtime
		defer startRuntimeWatch(ctx, o, mode, n)()
	}
	sctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if cr, ok := c.(interface{ create(context.Context) error }); ok && o.CreateFirst {
		if err := cr.create(sctx); err != nil {
			r.Err = err.Error()
			return r
		}
		o.logf("%s: %d nodes created", mode, n)
	}
	resetPeakRSS()
	base, _ := c.sample(ctx)
	t0 := time.Now()
	if err := c.start(sctx); err != nil {
		r.Err = err.Error()
		return r
	}
	r.JoinTime = time.Since(t0)
	o.logf("%s: %d nodes started and joined in %s", mode, n, secs(r.JoinTime))
	r.Converge, r.View, r.Leader, r.Plan, r.Deploy, r.ConvCPU = phases(ctx, o, c, mode, t0)
	if r.ConvCPU > 0 {
		r.ConvCPU -= base.cpu
	}
	sleepCtx(ctx, o.Settle)
	s0, err := c.sample(ctx)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	w0 := time.Now()
	sleepCtx(ctx, o.Steady)
	s1, err := c.sample(ctx)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	win := time.Since(w0)
	nf := float64(n)
	r.CPUPercent = 100 * (s1.cpu - s0.cpu).Seconds() / win.Seconds() / nf
	r.BytesPerSec = float64(s1.bytes-s0.bytes) / win.Seconds() / nf
	if mode == ModeProcs {
		r.MemPerNode = float64(s1.rss) / nf
	} else {
		r.MemPerNode = (float64(s1.rss) - float64(base.rss)) / nf
		r.Goroutines = float64(s1.goroutines-base.goroutines) / nf
	}
	r.Suspicions = float64(s1.suspicions-s0.suspicions) / nf / win.Minutes()
	r.JoinSuspects = float64(s0.suspicions-base.suspicions) / nf
	r.FalseDead = float64(s1.dead-base.dead) / nf
	r.NotAlive = c.notAlive(ctx)
	r.PeakRSS = s1.peakRSS
	if r.Converge < 0 {
		r.Err = "membership did not converge within " + o.Timeout.String()
		return r
	}
	if o.Monitor && mode == ModeColony && r.Plan >= 0 {
		r.Monitor = measureMonitor(ctx, o, c, mode, n)
	}
	return r
}

// phases polls the cluster until every phase is reached or the timeout
// passes, and returns each phase's time since t0 (-1: not reached).
func phases(ctx context.Context, o *Options, c cluster, mode string, t0 time.Time) (conv, view, lead, plan, dep, convCPU time.Duration) {
	conv, view, lead, plan, dep = -1, -1, -1, -1, -1
	colony := mode != ModeBare
	deployed := false
	interval := 250 * time.Millisecond
	deadline := t0.Add(o.Timeout)
	lastLog := time.Now()
	for ctx.Err() == nil && time.Now().Before(deadline) {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if conv < 0 {
			if ok, err := c.converged(pctx); ok {
				conv = time.Since(t0)
				if s, err := c.sample(pctx); err == nil {
					convCPU = s.cpu
				}
				o.logf("%s: membership converged at %s", mode, secs(conv))
			} else if err != nil && time.Since(lastLog) > 10*time.Second {
				o.logf("%s: not converged: %v", mode, err)
				lastLog = time.Now()
			}
		}
		if colony && conv >= 0 && view < 0 {
			if ok, _ := c.view(pctx); ok {
				view = time.Since(t0)
				o.logf("%s: every node lists all members with their metadata at %s", mode, secs(view))
			}
		}
		if colony && lead < 0 {
			if ok, _ := c.leader(pctx); ok {
				lead = time.Since(t0)
				o.logf("%s: leader and voters at %s", mode, secs(lead))
			}
		}
		if colony && o.Deploy && !deployed && lead >= 0 {
			if err := c.deploy(pctx); err == nil {
				deployed = true
				o.logf("%s: deployment submitted at %s", mode, secs(time.Since(t0)))
			} else {
				o.logf("%s: deploy: %v", mode, err)
			}
		}
		if colony && lead >= 0 && plan < 0 {
			if ok, _ := c.plan(pctx); ok {
				plan = time.Since(t0)
				o.logf("%s: monitoring plan complete at %s", mode, secs(plan))
			}
		}
		if deployed && dep < 0 {
			if k, err := c.running(pctx); err == nil && k >= nodes(c) {
				dep = time.Since(t0)
				o.logf("%s: one instance per node running at %s", mode, secs(dep))
			} else if time.Since(lastLog) > 10*time.Second {
				o.logf("%s: %d instances running (%v)", mode, k, err)
				lastLog = time.Now()
			}
		}
		cancel()
		done := conv >= 0 && (!colony || (view >= 0 && lead >= 0 && plan >= 0 && (!o.Deploy || dep >= 0)))
		if done {
			return
		}
		sleepCtx(ctx, interval)
	}
	return
}

type sized interface{ size() int }

func nodes(c cluster) int { return c.(sized).size() }

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// raiseFileLimit lifts the open-file limit: every agent holds a handful
// of sockets and files, about 8, and its instance more; 1,000 agents with
// their instances used 17,000–19,500 of this host's hard limit of 20,000.
// As root it raises the hard limit too, to the kernel's fs.nr_open; else
// the soft limit goes up to the hard one.
func raiseFileLimit() {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return
	}
	if nrOpen, err := readInt("/proc/sys/fs/nr_open"); err == nil && uint64(nrOpen) > l.Max {
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: uint64(nrOpen), Max: uint64(nrOpen)}) == nil {
			return
		}
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// procStatus reads VmRSS and VmHWM (bytes) from /proc/<pid>/status.
func procStatus(pid string) (rss, hwm uint64) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseUint(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v * 1024
		case "VmHWM:":
			hwm = v * 1024
		}
	}
	return rss, hwm
}

// resetPeakRSS resets this process's VmHWM (Linux: clear_refs 5), so that
// each run's peak is its own.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// inTurn runs f(i) for i in [0,n) one after the other, stopping at the
// first error or when ctx ends.
func inTurn(ctx context.Context, n int, f func(int) error) error {
	for i := range n {
		if err := f(i); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// forEach runs f(i) for i in [0,n) with at most par at a time.
func forEach(n, par int, f func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, par)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f(i)
		}()
	}
	wg.Wait()
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Tune overrides memberlist settings on top of a gossip profile; a zero
// field keeps the profile's value.
type Tune struct {
	RetransmitMult, GossipNodes int
	GossipInterval              time.Duration
	NoTCPPings                  bool
}

func (t Tune) set() bool { return t != Tune{} }

func (t Tune) apply(mc *memberlist.Config) {
	if t.RetransmitMult > 0 {
		mc.RetransmitMult = t.RetransmitMult
	}
	if t.GossipNodes > 0 {
		mc.GossipNodes = t.GossipNodes
	}
	if t.GossipInterval > 0 {
		mc.GossipInterval = t.GossipInterval
	}
	if t.NoTCPPings {
		mc.DisableTcpPings = true
	}
}
