package scale

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"colony/agent"
	"colony/gossip"
)

// colonyCluster is N Colony agents in this process, each on its own
// loopback address with the default ports, built with agent.New like the
// binary builds them; or, in a shard process (shards.go), agents lo to hi-1
// of the N.
type colonyCluster struct {
	o      *Options
	n      int
	lo, hi int
	shard  string // "" in one process, or the shard's name (its log file)
	dir    string
	logf   *agentLog
	mu     sync.Mutex
	agents []*agent.Agent // agents lo to hi-1
	// started counts agents whose Start returned.
	started atomic.Int64
	*api
}

func newColonyCluster(o *Options, n int) *colonyCluster {
	return &colonyCluster{o: o, n: n, hi: n, api: newAPI(colonyAPIAddrs(o, n))}
}

// colonyAPIAddrs are the HTTP API addresses of colony mode's N agents.
func colonyAPIAddrs(o *Options, n int) []string {
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = addr(o.ColonyNet, o.Base, i) + ":7070"
	}
	return addrs
}

func (c *colonyCluster) size() int { return c.n }

func (c *colonyCluster) config(i int) agent.Config {
	ip := addr(c.o.ColonyNet, c.o.Base, i)
	cfg := agent.DefaultConfig()
	cfg.NodeName = fmt.Sprintf("c%05d", i)
	cfg.DataDir = filepath.Join(c.dir, cfg.NodeName)
	cfg.BindAddr = ip
	cfg.HTTPAddr = ip + ":7070"
	cfg.GossipProfile = c.o.Profile
	cfg.TuneGossip = c.o.Tune.apply
	cfg.MonitorInterval = c.o.MonitorInterval
	cfg.RetryInterval = time.Second
	cfg.RetryMax = 10
	cfg.Logger = slog.New(slog.NewTextHandler(c.logf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if i > 0 {
		cfg.Join = []string{addr(c.o.ColonyNet, c.o.Base, 0) + ":7946"}
		cfg.JoinJitter = c.o.JoinJitter
	}
	return cfg
}

// prepare makes the run's data and log files, once.
func (c *colonyCluster) prepare() error {
	if c.dir != "" {
		return nil
	}
	var err error
	if c.dir, err = os.MkdirTemp("", "colony-scale-"); err != nil {
		return err
	}
	if err := os.MkdirAll(c.o.Out, 0o755); err != nil {
		return err
	}
	if c.logf, err = newAgentLog(filepath.Join(c.o.Out, fmt.Sprintf("agents-%s-%s-%d%s.log", ModeColony, c.o.Profile, c.n, c.shard))); err != nil {
		return err
	}
	c.mu.Lock() // a shard's status endpoint may be reading it already
	c.agents = make([]*agent.Agent, c.hi-c.lo)
	c.mu.Unlock()
	return nil
}

// newAgent builds agent i (agent.New: data dir, listeners, gossip).
func (c *colonyCluster) newAgent(i int) error {
	a, err := agent.New(c.config(i))
	if err != nil {
		return fmt.Errorf("agent %d: %w", i, err)
	}
	c.mu.Lock()
	c.agents[i-c.lo] = a
	c.mu.Unlock()
	return nil
}

// create builds every agent before the clock starts (Options.CreateFirst).
func (c *colonyCluster) create(ctx context.Context) error {
	if err := c.prepare(); err != nil {
		return err
	}
	return inTurn(ctx, c.hi-c.lo, func(i int) error { return c.newAgent(c.lo + i) })
}

func (c *colonyCluster) start(ctx context.Context) error {
	if err := c.prepare(); err != nil {
		return err
	}
	startOne := func(i int) error {
		c.mu.Lock()
		a := c.agents[i-c.lo]
		c.mu.Unlock()
		if a == nil {
			if err := c.newAgent(i); err != nil {
				return err
			}
			c.mu.Lock()
			a = c.agents[i-c.lo]
			c.mu.Unlock()
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Minute+c.o.JoinJitter)
		defer cancel()
		if err := a.Start(sctx); err != nil {
			return fmt.Errorf("agent %d: %w", i, err)
		}
		c.started.Add(1)
		return nil
	}
	first := c.lo // the seed starts alone, before any other
	if c.lo == 0 {
		if err := startOne(0); err != nil {
			return err
		}
		first = 1
	}
	var failed atomic.Value
	var joined atomic.Int64
	t0, last := time.Now(), time.Now()
	var lastMu sync.Mutex
	par := max(1, c.o.JoinParallel)
	if c.o.JoinJitter > 0 {
		par = c.n // a fleet booting at once, paced by the jitter alone
	}
	forEach(c.hi-first, par, func(i int) {
		if failed.Load() != nil || ctx.Err() != nil {
			return
		}
		if err := startOne(first + i); err != nil {
			failed.Store(err)
		}
		k := joined.Add(1)
		lastMu.Lock()
		if time.Since(last) > 10*time.Second {
			last = time.Now()
			c.o.logf("colony%s: %d of %d joined after %s", c.shard, k+int64(first-c.lo), c.hi-c.lo, secs(time.Since(t0)))
		}
		lastMu.Unlock()
	})
	if err, _ := failed.Load().(error); err != nil {
		return err
	}
	return ctx.Err()
}

func (c *colonyCluster) converged(ctx context.Context) (bool, error) {
	for _, a := range c.agents {
		if k := a.Gossip().NumAlive(); k != c.n {
			return false, fmt.Errorf("%s sees %d of %d", a.Name(), k, c.n)
		}
	}
	return true, nil
}

func (c *colonyCluster) view(ctx context.Context) (bool, error) {
	for _, a := range c.agents {
		if k := a.Gossip().NumKnown(); k != c.n {
			return false, fmt.Errorf("%s lists %d of %d", a.Name(), k, c.n)
		}
	}
	return true, nil
}

// live returns the agents built so far (a shard's status may ask while
// they are being built).
func (c *colonyCluster) live() []*agent.Agent {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*agent.Agent, 0, len(c.agents))
	for _, a := range c.agents {
		if a != nil {
			out = append(out, a)
		}
	}
	return out
}

func (c *colonyCluster) sample(ctx context.Context) (counters, error) {
	var s counters
	for _, a := range c.live() {
		s.addGossip(a.Gossip().Stats())
	}
	s.addProcess()
	return s, nil
}

func (c *colonyCluster) notAlive(ctx context.Context) int {
	bad := 0
	for _, a := range c.live() {
		for _, m := range a.Gossip().Members() {
			if m.Status != gossip.StatusAlive {
				bad++
			}
		}
	}
	return bad
}

func (c *colonyCluster) stop() {
	// Each Shutdown mostly waits (up to 5 s for the HTTP server's blocking
	// queries): 64 at a time took minutes at 1,000 agents.
	forEach(len(c.agents), 256, func(i int) {
		if a := c.agents[i]; a != nil {
			_ = a.Shutdown()
		}
	})
	if c.logf != nil {
		_ = c.logf.Close()
	}
	if c.dir != "" {
		_ = os.RemoveAll(c.dir)
	}
}
