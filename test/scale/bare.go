package scale

import (
	"context"
	"fmt"
	"io"
	"log"
	"sync/atomic"

	"github.com/hashicorp/memberlist"

	"colony/gossip"
)

// bareCluster is N bare memberlist nodes in this process (no delegates, no
// metadata): the baseline Colony is compared with. Each gets the memberlist
// settings of the same gossip profile.
type bareCluster struct {
	o     *Options
	n     int
	nodes []*memberlist.Memberlist
	stats []func() gossip.Stats
	drops []func()
}

func newBareCluster(o *Options, n int) *bareCluster { return &bareCluster{o: o, n: n} }

func (c *bareCluster) size() int { return c.n }

// create makes every memberlist node before the clock starts
// (Options.CreateFirst).
func (c *bareCluster) create(ctx context.Context) error {
	c.alloc()
	return inTurn(ctx, c.n, c.createOne)
}

func (c *bareCluster) alloc() {
	if c.nodes == nil {
		c.nodes = make([]*memberlist.Memberlist, c.n)
		c.stats = make([]func() gossip.Stats, c.n)
		c.drops = make([]func(), c.n)
	}
}

// createOne makes node i (memberlist.Create: sockets, timers).
func (c *bareCluster) createOne(i int) error {
	mc, err := gossip.MemberlistConfig(c.o.Profile)
	if err != nil {
		return err
	}
	mc.Name = fmt.Sprintf("b%05d", i)
	mc.BindAddr = addr(c.o.BareNet, c.o.Base, i)
	mc.BindPort = 7946
	mc.AdvertisePort = 7946
	mc.Logger = log.New(io.Discard, "", 0)
	c.o.Tune.apply(mc)
	c.stats[i], c.drops[i] = gossip.Instrument(mc)
	if c.o.BareMeta > 0 {
		mc.Delegate = metaDelegate(make([]byte, c.o.BareMeta))
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("memberlist %d: %w", i, err)
	}
	c.nodes[i] = ml
	return nil
}

func (c *bareCluster) start(ctx context.Context) error {
	c.alloc()
	seed := addr(c.o.BareNet, c.o.Base, 0) + ":7946"
	startOne := func(i int) error {
		if c.nodes[i] == nil {
			if err := c.createOne(i); err != nil {
				return err
			}
		}
		if i > 0 {
			if _, err := c.nodes[i].Join([]string{seed}); err != nil {
				return fmt.Errorf("memberlist %d: join: %w", i, err)
			}
		}
		return nil
	}
	if err := startOne(0); err != nil {
		return err
	}
	var failed atomic.Value
	forEach(c.n-1, max(1, c.o.JoinParallel), func(i int) {
		if failed.Load() != nil || ctx.Err() != nil {
			return
		}
		if err := startOne(i + 1); err != nil {
			failed.Store(err)
		}
	})
	if err, _ := failed.Load().(error); err != nil {
		return err
	}
	return ctx.Err()
}

func (c *bareCluster) converged(ctx context.Context) (bool, error) {
	for i, ml := range c.nodes {
		if k := ml.NumMembers(); k != c.n {
			return false, fmt.Errorf("b%05d sees %d of %d", i, k, c.n)
		}
	}
	return true, nil
}

func (c *bareCluster) view(context.Context) (bool, error)   { return false, errNotApplicable }
func (c *bareCluster) leader(context.Context) (bool, error) { return false, errNotApplicable }
func (c *bareCluster) plan(context.Context) (bool, error)   { return false, errNotApplicable }
func (c *bareCluster) deploy(context.Context) error         { return errNotApplicable }
func (c *bareCluster) running(context.Context) (int, error) { return 0, errNotApplicable }

func (c *bareCluster) sample(ctx context.Context) (counters, error) {
	var s counters
	for _, f := range c.stats {
		if f == nil {
			continue
		}
		s.addGossip(f())
	}
	s.addProcess()
	return s, nil
}

func (c *bareCluster) notAlive(ctx context.Context) int {
	bad := 0
	for _, ml := range c.nodes {
		bad += c.n - ml.NumMembers()
	}
	return bad
}

func (c *bareCluster) stop() {
	forEach(len(c.nodes), 64, func(i int) {
		if ml := c.nodes[i]; ml != nil {
			_ = ml.Shutdown()
		}
	})
	for _, d := range c.drops {
		if d != nil {
			d()
		}
	}
}

// metaDelegate gives a bare node fixed metadata and nothing else
// (Options.BareMeta).
type metaDelegate []byte

func (d metaDelegate) NodeMeta(int) []byte           { return d }
func (metaDelegate) NotifyMsg([]byte)                {}
func (metaDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (metaDelegate) LocalState(bool) []byte          { return nil }
func (metaDelegate) MergeRemoteState([]byte, bool)   {}
