package consensus

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestMetricsAndReconcile(t *testing.T) {
	var nodes []*Node
	for _, id := range []string{"m1", "m2", "m3", "m4"} {
		nodes = append(nodes, startNode(t, testConfig(id, t.TempDir())))
	}
	a := nodes[0]
	if err := a.BootstrapSelf(); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, a)
	reg := prometheus.NewRegistry()
	if err := a.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}

	members := func(dead ...*Node) []Member {
		var out []Member
		for _, n := range nodes {
			m := Member{ID: n.ID(), RaftAddr: n.Addr(), Status: MemberAlive, StatusFor: time.Hour}
			for _, d := range dead {
				if d == n {
					m.Status = MemberDead
				}
			}
			out = append(out, m)
		}
		return out
	}
	policy := VoterPolicy{Voters: 3, DeadVoterTimeout: time.Minute}
	done, err := a.ReconcileVoters(ctxT(t), members(), policy)
	if err != nil || render(done) != "+m2 +m3" {
		t.Fatalf("first reconcile: %v (%v)", done, err)
	}
	waitLeader(t, nodes[:3]...)

	// m3 dies for longer than the timeout: m4 replaces it.
	_ = nodes[2].Shutdown()
	leader := waitLeader(t, nodes[:2]...)
	done, err = leader.ReconcileVoters(ctxT(t), members(nodes[2]), policy)
	if err != nil || render(done) != "+m4 -m3" {
		t.Fatalf("replacement: %v (%v)", done, err)
	}
	waitLeader(t, nodes[0], nodes[1], nodes[3])
	if again, err := leader.ReconcileVoters(ctxT(t), members(nodes[2]), policy); err != nil || len(again) != 0 {
		t.Fatalf("reconcile after convergence: %v (%v)", again, err)
	}

	waitFor(t, waitLong, func() error {
		got, err := gather(reg)
		if err != nil {
			return err
		}
		want := map[string]float64{"colony_raft_voters": 3, "colony_raft_has_leader": 1}
		for k, v := range want {
			if got[k] != v {
				return fmt.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
			}
		}
		if got["colony_raft_term"] < 1 || got["colony_raft_commit_index"] < 1 || got["colony_raft_applied_index"] < 1 || got["colony_raft_leader_changes_total"] < 1 {
			return fmt.Errorf("figures missing: %v", got)
		}
		if a.IsLeader() && got[`colony_raft_state{state="Leader"}`] != 1 {
			return fmt.Errorf("leader state gauge: %v", got)
		}
		return nil
	})
}

// gather flattens a registry into name{labels} → value.
func gather(reg *prometheus.Registry) (map[string]float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += fmt.Sprintf("{%s=%q}", l.GetName(), l.GetValue())
			}
			out[name] = value(mf.GetType(), m)
		}
	}
	return out, nil
}

func value(t dto.MetricType, m *dto.Metric) float64 {
	if t == dto.MetricType_COUNTER {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}
