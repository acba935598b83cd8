package consensus

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// BenchmarkApplySingleNode measures a committed, fsynced settings write
// on a one-voter cluster (the disk's fsync latency dominates).
func BenchmarkApplySingleNode(b *testing.B) {
	n := benchVoter(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, _, err := n.Apply(ctx, &SetSetting{Key: fmt.Sprintf("k%d", i%100), Value: "v"}); err != nil {
			b.Fatal(err)
		}
	}
}

// benchVoter starts a single fsync'd voter with the default timers and
// waits until it leads; the benchmark's cleanup stops it.
func benchVoter(b *testing.B) *Node {
	b.Helper()
	cfg := DefaultConfig()
	cfg.NodeID, cfg.DataDir = "bench", b.TempDir()
	n, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = n.Shutdown() })
	if err := n.BootstrapSelf(); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !n.IsLeader() {
		if time.Now().After(deadline) {
			b.Fatal("no leader")
		}
		time.Sleep(10 * time.Millisecond) // benchmark set-up only, not a test wait
	}
	return n
}

// BenchmarkFSMApply measures decoding and applying one command.
func BenchmarkFSMApply(b *testing.B) {
	fsm := NewFSM(NewState(), nil)
	data, _ := EncodeCommand(&SetSetting{Key: "scaling/cooldown", Value: "5m"})
	l := &raft.Log{Data: data}
	for i := 0; b.Loop(); i++ {
		l.Index = uint64(i + 1)
		fsm.Apply(l)
	}
}

// BenchmarkPlanVoters10k plans voters for a 10,000-member cluster in
// three zones with one voter dead past the timeout, members unsorted.
func BenchmarkPlanVoters10k(b *testing.B) {
	var members []Member
	for i := range 10000 {
		members = append(members, Member{ID: fmt.Sprintf("node-%05d", i), RaftAddr: fmt.Sprintf("10.0.%d.%d:8300", i/250, i%250),
			Status: MemberAlive, StatusFor: time.Hour, Labels: map[string]string{LabelZone: fmt.Sprintf("z%d", i%3)}})
	}
	members[2].Status = MemberDead
	// Gossip hands members over in no particular order.
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(members), func(i, j int) { members[i], members[j] = members[j], members[i] })
	servers := []Server{{ID: "node-00000", Voter: true}, {ID: "node-00001", Voter: true}, {ID: "node-00002", Voter: true}}
	p := VoterPolicy{Voters: 5, DeadVoterTimeout: time.Minute, LeaderID: "node-00000"}
	for b.Loop() {
		if len(PlanVoters(servers, members, p)) == 0 {
			b.Fatal("empty plan")
		}
	}
}
