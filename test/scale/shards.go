package scale

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Shards: colony mode with the N agents split over Options.Shards harness
// processes, agents lo to hi-1 in each (the seed in the first). In one
// process every agent shares one heap, one garbage collector and one
// scheduler: the heap grows as N² (each agent holds every member), so
// each collection's mark grows as N² too, and while it runs every agent
// answers late at once. A fleet's agents each have their own small heap.
// Shards are the middle ground that one machine affords: each process holds
// N/K agents and N²/K of the heap, and their collections do not stop one
// another's agents. Every agent is the same agent as in one process; only
// the harness around them differs.
//
// The parent starts each shard as `colony-scale shard -range LO:HI -ctrl
// ADDR` with the run's options (ShardMain), and polls each shard's control endpoint
// (GET /status: agents started, the fewest members any agent sees alive
// and lists, gossip counters) instead of its agents' APIs (1,000 HTTP
// polls a round cost too much). The leader, plan and deployment phases go
// through the agents' APIs as in one process. CPU and memory are the
// shards' (/proc), not the parent's.

// shardStatus is a shard's answer to GET /status.
type shardStatus struct {
	Agents     int    `json:"agents"`  // hi-lo
	Started    int    `json:"started"` // agents whose Start returned
	Err        string `json:"error,omitempty"`
	MinAlive   int    `json:"min_alive"` // fewest members any agent sees alive (0 until all started)
	MinKnown   int    `json:"min_known"` // fewest members any agent's Colony view lists
	NotAlive   int    `json:"not_alive"` // (agent, member) pairs not alive; only with ?not_alive=1
	Bytes      uint64 `json:"bytes"`
	Suspicions uint64 `json:"suspicions"`
	Dead       uint64 `json:"dead"`
	Goroutines int    `json:"goroutines"`
}

// status summarises a shard's agents.
func (c *colonyCluster) status(withNotAlive bool) shardStatus {
	s := shardStatus{Agents: c.hi - c.lo, Started: int(c.started.Load()), Goroutines: runtime.NumGoroutine()}
	ctr, _ := c.sample(context.Background())
	s.Bytes, s.Suspicions, s.Dead = ctr.bytes, ctr.suspicions, ctr.dead
	if withNotAlive {
		s.NotAlive = c.notAlive(context.Background())
	}
	if s.Started < s.Agents || s.Agents == 0 {
		return s // MinAlive, MinKnown 0 until every agent has started
	}
	s.MinAlive, s.MinKnown = math.MaxInt, math.MaxInt
	for _, a := range c.live() {
		s.MinAlive = min(s.MinAlive, a.Gossip().NumAlive())
		s.MinKnown = min(s.MinKnown, a.Gossip().NumKnown())
	}
	return s
}

// ShardCommand is the first argument that makes the harness binary (or
// this package's test binary, see TestMain) run one shard: ShardMain.
const ShardCommand = "shard"

// ShardMain runs one shard as its parent's childArgs describe, until
// SIGTERM or an interrupt: the parent's Options as JSON (every field
// reaches the shard as it is, with no flag to mirror), and its GC target
// and share of the memory limit.
func ShardMain(args []string, log io.Writer) error {
	fs := flag.NewFlagSet(ShardCommand, flag.ContinueOnError)
	rng := fs.String("range", "", "agents LO:HI of the N")
	ctrl := fs.String("ctrl", "", "control endpoint")
	n := fs.Int("n", 0, "N")
	opts := fs.String("options", "", "the run's Options, as JSON")
	gc := fs.Int("gogc", 0, "GOGC of this shard (0: leave)")
	memMB := fs.Int64("memlimit-mb", 0, "memory limit of this shard in MB (0: none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var o Options
	if err := json.Unmarshal([]byte(*opts), &o); err != nil {
		return fmt.Errorf("shard: -options: %w", err)
	}
	o.Log = log
	var lo, hi int
	if _, err := fmt.Sscanf(*rng, "%d:%d", &lo, &hi); err != nil || *ctrl == "" {
		return fmt.Errorf("shard: -range LO:HI and -ctrl are required")
	}
	if *gc != 0 {
		debug.SetGCPercent(*gc)
	}
	if *memMB > 0 {
		debug.SetMemoryLimit(*memMB << 20)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return RunShard(ctx, o, *n, lo, hi, *ctrl)
}

// RunShard runs agents lo to hi-1 of an N-agent colony cluster in this
// process (one shard of a -shards run), serving GET /status and
// net/http/pprof on ctrl, until ctx ends; it then shuts its agents down.
func RunShard(ctx context.Context, o Options, n, lo, hi int, ctrl string) error {
	if lo < 0 || hi > n || lo >= hi {
		return fmt.Errorf("shard %d:%d of %d agents: want 0 <= lo < hi <= N", lo, hi, n)
	}
	raiseFileLimit()
	c := newColonyCluster(&o, n)
	c.lo, c.hi, c.shard = lo, hi, fmt.Sprintf("-shard%d-%d", lo, hi)
	defer c.stop()
	defer startRuntimeWatch(ctx, &o, "colony"+c.shard, n)()
	ln, err := net.Listen("tcp", ctrl)
	if err != nil {
		return fmt.Errorf("shard control endpoint: %w", err)
	}
	var startErr struct {
		sync.Mutex
		s string
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		s := c.status(r.URL.Query().Get("not_alive") != "")
		startErr.Lock()
		s.Err = startErr.s
		startErr.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s)
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			o.logf("shard %d:%d: control endpoint: %v", lo, hi, err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := c.start(ctx); err != nil {
			startErr.Lock()
			startErr.s = err.Error()
			startErr.Unlock()
			o.logf("shard %d:%d: %v", lo, hi, err)
			return
		}
		o.logf("shard %d:%d: %d agents started", lo, hi, hi-lo)
	}()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	wg.Wait()
	return nil
}

// shardCluster is colony mode over Options.Shards child processes.
type shardCluster struct {
	o      *Options
	n, k   int
	procs  []*exec.Cmd
	exited []chan struct{} // closed once the shard's process is waited for
	logs   []*os.File
	ctrl   []string
	client *http.Client
	*api
}

// shardExecutable is the program a shard runs: this one (the harness
// binary, or this package's test binary).
var shardExecutable = os.Executable

func newShardCluster(o *Options, n int) *shardCluster {
	return &shardCluster{o: o, n: n, k: min(o.Shards, n), client: &http.Client{Timeout: 30 * time.Second}, api: newAPI(colonyAPIAddrs(o, n))}
}

func (c *shardCluster) size() int { return c.n }

// shardCtrlPort is the first shard's control port on 127.0.0.1.
const shardCtrlPort = 17600

// childArgs are the command line of shard i (agents lo to hi-1): the
// run's Options, and this process's GC target and memory limit (read, not
// set: runtime/metrics), the limit split among the shards.
func (c *shardCluster) childArgs(lo, hi int, ctrl string) ([]string, error) {
	opts, err := json.Marshal(c.o)
	if err != nil {
		return nil, fmt.Errorf("shard options: %w", err)
	}
	args := []string{ShardCommand, "-range", fmt.Sprintf("%d:%d", lo, hi), "-ctrl", ctrl, "-n", strconv.Itoa(c.n), "-options", string(opts)}
	gc := []metrics.Sample{{Name: "/gc/gogc:percent"}, {Name: "/gc/gomemlimit:bytes"}}
	metrics.Read(gc)
	if p := int64(gc[0].Value.Uint64()); p != 100 { // -1: off
		args = append(args, "-gogc", strconv.FormatInt(p, 10))
	}
	if lim := gc[1].Value.Uint64(); lim < math.MaxInt64 {
		args = append(args, "-memlimit-mb", strconv.FormatUint(lim>>20/uint64(c.k), 10))
	}
	return args, nil
}

func (c *shardCluster) start(ctx context.Context) error {
	exe, err := shardExecutable()
	if err != nil {
		return fmt.Errorf("shards: %w", err)
	}
	if err := os.MkdirAll(c.o.Out, 0o755); err != nil {
		return err
	}
	for i := 0; i < c.k; i++ {
		lo, hi := i*c.n/c.k, (i+1)*c.n/c.k
		ctrl := fmt.Sprintf("127.0.0.1:%d", shardCtrlPort+i)
		lf, err := os.Create(filepath.Join(c.o.Out, fmt.Sprintf("shard-%s-%d-%d.log", c.o.Profile, c.n, i)))
		if err != nil {
			return err
		}
		c.logs = append(c.logs, lf)
		args, err := c.childArgs(lo, hi, ctrl)
		if err != nil {
			return err
		}
		cmd := exec.Command(exe, args...)
		cmd.Stdout, cmd.Stderr = lf, lf
		// Its own process group (stop signals it and whatever it runs);
		// gone with the harness should the harness die first.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start shard %d: %w", i, err)
		}
		exited := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			close(exited)
		}()
		c.procs = append(c.procs, cmd)
		c.exited = append(c.exited, exited)
		c.ctrl = append(c.ctrl, ctrl)
		if i == 0 {
			// The seed, first of shard 0, before any other agent.
			if err := c.waitShards(ctx, 2*time.Minute, func(s []shardStatus) bool { return s[0].Started >= 1 }); err != nil {
				return fmt.Errorf("shard 0's seed: %w", err)
			}
		}
	}
	t0, last := time.Now(), time.Now()
	return c.waitShards(ctx, 2*time.Minute+c.o.JoinJitter+time.Duration(c.n)*time.Second, func(s []shardStatus) bool {
		started := 0
		for _, st := range s {
			started += st.Started
		}
		if time.Since(last) > 10*time.Second {
			last = time.Now()
			c.o.logf("colony: %d of %d joined after %s", started, c.n, secs(time.Since(t0)))
		}
		return started == c.n
	})
}

// waitShards polls every shard's status until done holds, a shard fails,
// or timeout passes.
func (c *shardCluster) waitShards(ctx context.Context, timeout time.Duration, done func([]shardStatus) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		s, err := c.statuses(ctx, false)
		if err == nil {
			for i, st := range s {
				if st.Err != "" {
					return fmt.Errorf("shard %d: %s", i, st.Err)
				}
			}
			if done(s) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("not yet")
			}
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for i, ch := range c.exited {
			select {
			case <-ch:
				return fmt.Errorf("shard %d exited: %s (its log: shard-*-%d.log)", i, c.procs[i].ProcessState, i)
			default:
			}
		}
		sleepCtx(ctx, 250*time.Millisecond)
	}
}

// statuses asks every shard started so far for its status.
func (c *shardCluster) statuses(ctx context.Context, notAlive bool) ([]shardStatus, error) {
	out := make([]shardStatus, len(c.ctrl))
	q := ""
	if notAlive {
		q = "?not_alive=1"
	}
	for i, ctrl := range c.ctrl {
		req, err := http.NewRequestWithContext(ctx, "GET", "http://"+ctrl+"/status"+q, nil)
		if err != nil {
			return nil, err
		}
		resp, err := c.client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("shard %d: %w", i, err)
		}
		err = json.NewDecoder(resp.Body).Decode(&out[i])
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("shard %d: %w", i, err)
		}
	}
	return out, nil
}

func (c *shardCluster) converged(ctx context.Context) (bool, error) {
	return c.allAgents(ctx, "sees %d of %d alive", func(s shardStatus) int { return s.MinAlive })
}

func (c *shardCluster) view(ctx context.Context) (bool, error) {
	return c.allAgents(ctx, "lists %d of %d", func(s shardStatus) int { return s.MinKnown })
}

// allAgents reports whether every agent of every shard counts all N
// members by count (the fewest in each shard); what describes a shortfall.
func (c *shardCluster) allAgents(ctx context.Context, what string, count func(shardStatus) int) (bool, error) {
	s, err := c.statuses(ctx, false)
	if err != nil {
		return false, err
	}
	for i, st := range s {
		if k := count(st); k != c.n {
			return false, fmt.Errorf("shard %d: an agent "+what, i, k, c.n)
		}
	}
	return true, nil
}

// sample sums the shards' CPU and memory (from /proc) and their agents'
// gossip counters; before the shards start it is zero.
func (c *shardCluster) sample(ctx context.Context) (counters, error) {
	var s counters
	if len(c.procs) == 0 {
		return s, nil
	}
	st, err := c.statuses(ctx, false)
	if err != nil {
		return s, err
	}
	for i, p := range c.procs {
		pid := strconv.Itoa(p.Process.Pid)
		s.cpu += procCPU(pid)
		rss, hwm := procStatus(pid)
		s.rss += rss
		s.peakRSS += hwm
		s.bytes += st[i].Bytes
		s.suspicions += st[i].Suspicions
		s.dead += st[i].Dead
		s.goroutines += st[i].Goroutines
	}
	return s, nil
}

func (c *shardCluster) notAlive(ctx context.Context) int {
	s, err := c.statuses(ctx, true)
	if err != nil {
		return c.n * c.n
	}
	bad := 0
	for _, st := range s {
		bad += st.NotAlive
	}
	return bad
}

// stop ends every shard (SIGTERM: each shuts its agents down), then
// kills any left after two minutes.
func (c *shardCluster) stop() {
	forEach(len(c.procs), len(c.procs), func(i int) { stopGroup(c.procs[i], c.exited[i], 2*time.Minute) })
	for _, f := range c.logs {
		_ = f.Close()
	}
}
