package agent

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"colony/consensus"
	"colony/gossip"
	"colony/test/harness"
	"colony/test/retry"
)

func TestRaftTimers(t *testing.T) {
	def := consensus.DefaultConfig()
	for _, tc := range []struct {
		profile string
		mult    int
		want    time.Duration // heartbeat and election; the lease is half
	}{
		{"", 0, time.Second},
		{gossip.ProfileLAN, 0, time.Second},
		{gossip.ProfileWAN, 0, time.Second},
		{gossip.ProfileLocal, 0, time.Second},
		{gossip.ProfileDense, 0, 3 * time.Second},
		{gossip.ProfileDense, 1, time.Second},
		{gossip.ProfileLAN, 2, 2 * time.Second},
		{gossip.ProfileDense, MaxRaftMultiplier, 10 * time.Second},
	} {
		cc := raftTimers(tc.profile, tc.mult)
		if cc.HeartbeatTimeout != tc.want || cc.ElectionTimeout != tc.want || cc.LeaderLeaseTimeout != tc.want/2 {
			t.Errorf("%q x%d: heartbeat %v, election %v, lease %v; want %v, %v, %v", tc.profile, tc.mult,
				cc.HeartbeatTimeout, cc.ElectionTimeout, cc.LeaderLeaseTimeout, tc.want, tc.want, tc.want/2)
		}
		if cc.CommitTimeout != def.CommitTimeout || cc.TransportTimeout != def.TransportTimeout || cc.ApplyTimeout != def.ApplyTimeout {
			t.Errorf("%q x%d: a timer other than the three was scaled: %+v", tc.profile, tc.mult, cc)
		}
		cc.NodeID, cc.DataDir = "n", "d"
		if err := cc.Validate(); err != nil {
			t.Errorf("%q x%d: %v", tc.profile, tc.mult, err)
		}
	}
}

func TestRaftMultiplierValidation(t *testing.T) {
	for _, m := range []int{-1, MaxRaftMultiplier + 1, 1000} {
		cfg := testConfig(t, "a", t.TempDir())
		cfg.RaftMultiplier = m
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "raft multiplier (--raft-multiplier)") {
			t.Errorf("multiplier %d: %v", m, err)
		}
	}
	for _, m := range []int{0, 1, MaxRaftMultiplier} {
		cfg := testConfig(t, "a", t.TempDir())
		cfg.RaftMultiplier = m
		if err := cfg.Validate(); err != nil {
			t.Errorf("multiplier %d: %v", m, err)
		}
	}
}

// A dense agent runs Raft with the tripled timers, and TuneRaft still has
// the last word (here on the lease only).
func TestDenseAgentRaftTimers(t *testing.T) {
	c := newCluster(t, 230)
	var logs harness.SyncBuffer
	c.start(1, func(cfg *Config) {
		cfg.GossipProfile = gossip.ProfileDense
		cfg.TuneRaft = func(cc *consensus.Config) { cc.LeaderLeaseTimeout = 250 * time.Millisecond }
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	want := "subsystem=raft addr=127.0.230.1:7947 raft_multiplier=3 heartbeat_timeout=3s election_timeout=3s leader_lease_timeout=250ms"
	retry.Until(t, 10*time.Second, func() error {
		if !strings.Contains(logs.String(), want) {
			return fmt.Errorf("no %q in the logs yet", want)
		}
		return nil
	})
}
