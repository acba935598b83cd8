package gossip

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/memberlist"
)

// TestDenseJoinContactsOneAddress: with the dense profile a join given
// several addresses syncs with one that answers, not with all of them, and
// a dead address in the list does not fail the join.
func TestDenseJoinContactsOneAddress(t *testing.T) {
	node := func(name, ip string) *Gossip {
		cfg := DefaultConfig()
		cfg.NodeName = name
		cfg.BindAddr = ip // the scale harness's subnet
		cfg.BindPort = 0
		cfg.Profile = ProfileDense
		cfg.Meta = Meta{ID: uuid.New(), CPUs: 1, OS: "linux"}
		g, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.Shutdown() })
		return g
	}
	var seeds []string
	for i := 1; i <= 3; i++ {
		g := node(fmt.Sprintf("seed%d", i), fmt.Sprintf("127.2.201.%d", i))
		seeds = append(seeds, g.cfg.BindAddr+":"+fmt.Sprint(g.localPort))
	}
	g := node("joiner", "127.2.201.9")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := g.Join(ctx, append([]string{"127.2.201.8:1"}, seeds...), RetryPolicy{Interval: 50 * time.Millisecond, Max: 3})
	if err != nil || n != 1 {
		t.Fatalf("dense join contacted %d (%v), want exactly 1", n, err)
	}

	// Join pacing: a jittered join still joins, and one whose context
	// ends during the jitter fails cleanly without contacting anyone.
	late := node("paced", "127.2.201.10")
	if n, err := late.Join(ctx, seeds[:1], RetryPolicy{Interval: 50 * time.Millisecond, Max: 3, Jitter: 100 * time.Millisecond}); err != nil || n != 1 {
		t.Fatalf("paced join: %d %v", n, err)
	}
	never := node("cancelled", "127.2.201.11")
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if _, err := never.Join(cctx, seeds[:1], RetryPolicy{Max: 1, Jitter: time.Hour}); !errors.Is(err, ErrJoinFailed) {
		t.Fatalf("join cancelled during its jitter: %v", err)
	}
}

func TestProfiles(t *testing.T) {
	for _, p := range []string{"", ProfileLAN, ProfileWAN, ProfileLocal, ProfileDense} {
		if _, err := MemberlistConfig(p); err != nil {
			t.Errorf("%q: %v", p, err)
		}
	}
	if _, err := MemberlistConfig("huge"); err == nil {
		t.Error("unknown profile accepted")
	}
	// The local profile keeps memberlist's fast timers but retransmits as
	// lan does: with 2·log N sends a five-node cluster lost a leave.
	if l, _ := MemberlistConfig(ProfileLocal); l.RetransmitMult != 4 || l.ProbeInterval != memberlist.DefaultLocalConfig().ProbeInterval {
		t.Errorf("local profile: RetransmitMult %d, ProbeInterval %s", l.RetransmitMult, l.ProbeInterval)
	}
	d := DenseConfig()
	if d.ProbeTimeout >= d.ProbeInterval || d.HandoffQueueDepth < 1024 {
		t.Errorf("dense config inconsistent: %+v", d)
	}
}
