package gossip

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/memberlist"

	"colony/test/retry"
)

func BenchmarkMetaEncode(b *testing.B) {
	m := sampleMeta()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMetaDecode(b *testing.B) {
	m := sampleMeta()
	buf, _ := m.Encode()
	b.ReportMetric(float64(len(buf)), "bytes/meta")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeMeta(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConverge joins 50 in-process nodes to one seed as fast as they
// can go, then measures the time until every node sees all 50 alive:
// Colony's gossip layer and bare memberlist side by side, same timers
// (memberlist's local profile). Run with -benchtime 1x: one round takes
// tens of seconds, because nodes that miss an alive broadcast in the join
// burst only learn of the newcomer at the next push/pull.
func BenchmarkConverge(b *testing.B) {
	const n = 50
	b.Run("colony", func(b *testing.B) {
		for b.Loop() {
			nodes := make([]*Gossip, 0, n)
			for i := 0; i < n; i++ {
				cfg := DefaultConfig()
				cfg.NodeName = fmt.Sprintf("n%03d", i)
				cfg.BindAddr = "127.0.0.1"
				cfg.BindPort = 0
				cfg.Profile = ProfileLocal
				cfg.Meta = Meta{ID: uuid.New(), CPUs: 1, OS: "linux", Labels: map[string]string{"zone": "z1"}}
				g, err := New(cfg)
				if err != nil {
					b.Fatal(err)
				}
				nodes = append(nodes, g)
			}
			seed := addr(nodes[0])
			start := time.Now()
			for _, g := range nodes[1:] {
				if _, err := g.Join(context.Background(), []string{seed}, RetryPolicy{Max: 1}); err != nil {
					b.Fatal(err)
				}
			}
			converge(b, start, n, func() []int {
				out := make([]int, len(nodes))
				for i, g := range nodes {
					out[i] = g.NumAlive()
				}
				return out
			})
			for _, g := range nodes {
				_ = g.Shutdown()
			}
		}
	})
	b.Run("bare-memberlist", func(b *testing.B) {
		for b.Loop() {
			nodes := make([]*memberlist.Memberlist, 0, n)
			for i := 0; i < n; i++ {
				mc := memberlist.DefaultLocalConfig()
				mc.Name = fmt.Sprintf("n%03d", i)
				mc.BindAddr = "127.0.0.1"
				mc.BindPort = 0
				mc.LogOutput = io.Discard
				m, err := memberlist.Create(mc)
				if err != nil {
					b.Fatal(err)
				}
				nodes = append(nodes, m)
			}
			seed := nodes[0].LocalNode().Address()
			start := time.Now()
			for _, m := range nodes[1:] {
				if _, err := m.Join([]string{seed}); err != nil {
					b.Fatal(err)
				}
			}
			converge(b, start, n, func() []int {
				out := make([]int, len(nodes))
				for i, m := range nodes {
					out[i] = m.NumMembers()
				}
				return out
			})
			for _, m := range nodes {
				_ = m.Shutdown()
			}
		}
	})
}

func converge(b *testing.B, start time.Time, n int, alive func() []int) {
	err := retry.Wait(2*time.Minute, func() error {
		for i, a := range alive() {
			if a != n {
				return fmt.Errorf("node %d sees %d of %d", i, a, n)
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(time.Since(start).Seconds(), "s/converge")
}
