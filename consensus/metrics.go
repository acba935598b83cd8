package consensus

import (
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	descState         = prometheus.NewDesc("colony_raft_state", "Raft role of this node: 1 for the current state label, 0 for the others.", []string{"state"}, nil)
	descTerm          = prometheus.NewDesc("colony_raft_term", "Current Raft term.", nil, nil)
	descCommitIndex   = prometheus.NewDesc("colony_raft_commit_index", "Highest Raft log index known to be committed.", nil, nil)
	descAppliedIndex  = prometheus.NewDesc("colony_raft_applied_index", "Highest Raft log index applied to the cluster state.", nil, nil)
	descLastIndex     = prometheus.NewDesc("colony_raft_last_index", "Highest Raft log index stored locally.", nil, nil)
	descLastContact   = prometheus.NewDesc("colony_raft_last_contact_seconds", "Seconds since a follower last heard from the leader (0 on the leader, -1 before any contact).", nil, nil)
	descLeaderChanges = prometheus.NewDesc("colony_raft_leader_changes_total", "Leader changes this node has observed since it started.", nil, nil)
	descVoters        = prometheus.NewDesc("colony_raft_voters", "Voters in the latest Raft configuration.", nil, nil)
	descHasLeader     = prometheus.NewDesc("colony_raft_has_leader", "1 when this node knows a leader, 0 otherwise (no leader for long means quorum loss).", nil, nil)
)

var raftStates = []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown}

// Collector returns a Prometheus collector reading the node's figures at
// scrape time (so nothing runs between scrapes).
func (n *Node) Collector() prometheus.Collector { return nodeCollector{n} }

// RegisterMetrics registers the node's collector with reg.
func (n *Node) RegisterMetrics(reg prometheus.Registerer) error {
	return reg.Register(n.Collector())
}

type nodeCollector struct{ n *Node }

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descState, descTerm, descCommitIndex, descAppliedIndex, descLastIndex, descLastContact, descLeaderChanges, descVoters, descHasLeader} {
		ch <- d
	}
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.n.Stats()
	for _, st := range raftStates {
		v := 0.0
		if st.String() == s.State {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, st.String())
	}
	ch <- prometheus.MustNewConstMetric(descTerm, prometheus.GaugeValue, float64(s.Term))
	ch <- prometheus.MustNewConstMetric(descCommitIndex, prometheus.GaugeValue, float64(s.CommitIndex))
	ch <- prometheus.MustNewConstMetric(descAppliedIndex, prometheus.GaugeValue, float64(s.AppliedIndex))
	ch <- prometheus.MustNewConstMetric(descLastIndex, prometheus.GaugeValue, float64(s.LastIndex))
	contact := -1.0
	switch {
	case s.State == raft.Leader.String():
		contact = 0
	case !s.LastContact.IsZero():
		contact = time.Since(s.LastContact).Seconds()
	}
	ch <- prometheus.MustNewConstMetric(descLastContact, prometheus.GaugeValue, contact)
	ch <- prometheus.MustNewConstMetric(descLeaderChanges, prometheus.CounterValue, float64(s.LeaderChanges))
	ch <- prometheus.MustNewConstMetric(descVoters, prometheus.GaugeValue, float64(s.Voters))
	has := 0.0
	if s.LeaderID != "" {
		has = 1
	}
	ch <- prometheus.MustNewConstMetric(descHasLeader, prometheus.GaugeValue, has)
}
