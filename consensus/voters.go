package consensus

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Labels voter management reads.
const (
	// LabelZone spreads voters: with zones, voters go to distinct zones first.
	LabelZone = "zone"
	// LabelVoter set to "false" keeps a node from ever being a voter.
	LabelVoter = "voter"
)

// MemberStatus is a node's gossip status as the leader sees it.
type MemberStatus int

// Gossip statuses (mirroring gossip.Status, which this package does not
// import so that it stays usable without gossip).
const (
	MemberAlive MemberStatus = iota
	MemberSuspect
	MemberDead
	MemberLeft
)

// String names the status.
func (s MemberStatus) String() string {
	switch s {
	case MemberAlive:
		return "alive"
	case MemberSuspect:
		return "suspect"
	case MemberDead:
		return "dead"
	case MemberLeft:
		return "left"
	}
	return fmt.Sprintf("status-%d", int(s))
}

// Member is what voter management needs to know about a gossip member.
type Member struct {
	// ID is the node ID (the Raft server ID).
	ID string
	// RaftAddr is where the node's Raft transport would listen; empty when
	// the node cannot run Raft.
	RaftAddr string
	// Status is the gossip status and StatusFor how long it has held.
	Status    MemberStatus
	StatusFor time.Duration
	// Labels are the operator labels (zone, voter=false).
	Labels map[string]string
	// HasRaft is true when the member advertises a Raft role (it is a voter
	// or the leader of some cluster): used to refuse a second bootstrap.
	HasRaft bool
	// BootstrapExpect is the member's --bootstrap-expect (0 when unset).
	BootstrapExpect int
}

func (m Member) zone() string { return m.Labels[LabelZone] }

// optedOut reports the voter=false label.
func (m Member) optedOut() bool { return strings.EqualFold(m.Labels[LabelVoter], "false") }

// eligible reports whether m may be made a voter now.
func (m Member) eligible() bool {
	return m.Status == MemberAlive && m.RaftAddr != "" && !m.optedOut()
}

// VoterPolicy is the input of PlanVoters besides the membership.
type VoterPolicy struct {
	// Voters is the target number of voters, odd: 3 (default) or 5. A
	// target above 3 applies only when that many nodes are eligible.
	Voters int
	// DeadVoterTimeout is how long a voter must be dead in gossip before
	// it is replaced and removed. Voters that left gracefully go at once.
	DeadVoterTimeout time.Duration
	// LeaderID is the current leader, which is never removed.
	LeaderID string
}

// Validate checks the policy.
func (p VoterPolicy) Validate() error {
	var errs []error
	if p.Voters < 1 || p.Voters%2 == 0 {
		errs = append(errs, fmt.Errorf("voter target must be a positive odd number, got %d", p.Voters))
	}
	if p.DeadVoterTimeout < 0 {
		errs = append(errs, fmt.Errorf("dead voter timeout must not be negative, got %v", p.DeadVoterTimeout))
	}
	return errors.Join(errs...)
}

// ActionKind is a change to the Raft configuration.
type ActionKind int

// Actions PlanVoters can ask for.
const (
	ActionAddVoter ActionKind = iota
	ActionRemoveServer
)

// String names the kind.
func (k ActionKind) String() string {
	if k == ActionAddVoter {
		return "add-voter"
	}
	return "remove-server"
}

// Action is one configuration change, with the reason for the logs.
type Action struct {
	Kind    ActionKind
	ID      string
	Address string // for ActionAddVoter
	Reason  string
}

// String renders the action for logs and tests.
func (a Action) String() string {
	if a.Kind == ActionAddVoter {
		return fmt.Sprintf("add-voter %s (%s)", a.ID, a.Reason)
	}
	return fmt.Sprintf("remove-server %s (%s)", a.ID, a.Reason)
}

// quorum is the majority of n voters.
func quorum(n int) int { return n/2 + 1 }

// voterState is a voter of the configuration as PlanVoters sees it.
type voterState struct {
	id      string
	zone    string
	alive   bool // counts towards quorum now (alive or suspect)
	healthy bool // alive in gossip, not merely suspect
}

// PlanVoters decides how the leader should change the Raft configuration
// so that it holds the target number of voters, chosen among healthy
// eligible members and spread across zones. It is pure and deterministic.
//
// Rules, in order of precedence:
//   - a voter that left, or has been dead longer than the timeout, is
//     replaced: the replacement is added before the dead voter is removed;
//   - a voter labelled voter=false is replaced, then removed;
//   - voters that are suspect, dead for less than the timeout, or unknown
//     to gossip (not yet learned after a restart) are kept and counted;
//   - the target is Voters, lowered to 3 when fewer than Voters members
//     are eligible; with fewer eligible members than that, as many as
//     exist are used, rounded down to an odd number when adding;
//   - voters above the target are removed, but healthy voters are never
//     removed just to make the count odd;
//   - with zones, candidates come from the zone with the fewest voters,
//     and one voter is moved per plan from a crowded zone to an empty one;
//   - the leader is never removed; no removal of a live voter leaves
//     fewer live voters than the new quorum; and when the configuration
//     already lacks a live quorum nothing is planned (nothing could commit).
//
// Apply the actions in order, stop at the first error and plan again on
// the next tick: each plan is correct on its own.
func PlanVoters(servers []Server, members []Member, p VoterPolicy) []Action {
	// The first entry of a duplicated ID counts; the input order of
	// distinct members does not matter (candidates are sorted below).
	byID := make(map[string]int, len(members)) // ID → index in members
	for i, m := range members {
		if _, dup := byID[m.ID]; !dup && m.ID != "" {
			byID[m.ID] = i
		}
	}
	srv := slices.Clone(servers)
	slices.SortFunc(srv, func(a, b Server) int { return cmp.Compare(a.ID, b.ID) })

	gone := func(m Member) bool {
		return m.Status == MemberLeft || (m.Status == MemberDead && m.StatusFor >= p.DeadVoterTimeout)
	}

	var (
		present     []voterState // voters that stay, for now
		toRemove    []Action     // voters (and non-voters) that are gone
		optedOut    []voterState // live voters labelled voter=false
		inConfig    = map[string]bool{}
		liveVoters  = 0
		totalVoters = 0
	)
	for _, s := range srv {
		inConfig[s.ID] = true
		mi, known := byID[s.ID]
		var m Member
		if known {
			m = members[mi]
		}
		if s.Voter {
			totalVoters++
			if s.ID == p.LeaderID || (known && (m.Status == MemberAlive || m.Status == MemberSuspect)) {
				liveVoters++
			}
		}
		switch {
		case s.ID == p.LeaderID:
			if s.Voter {
				present = append(present, voterState{id: s.ID, zone: m.zone(), alive: true, healthy: true})
			}
		case !known:
			if s.Voter {
				// Not yet learned through gossip (or reaped): keep it.
				present = append(present, voterState{id: s.ID, alive: false})
			}
		case gone(m):
			reason := fmt.Sprintf("dead for %v", m.StatusFor.Round(time.Second))
			if m.Status == MemberLeft {
				reason = "left the cluster"
			}
			toRemove = append(toRemove, Action{Kind: ActionRemoveServer, ID: s.ID, Reason: reason})
		case !s.Voter:
			// A non-voter Colony did not create; eligible ones may be
			// promoted below, others are left alone.
		case m.Status == MemberAlive && m.optedOut():
			optedOut = append(optedOut, voterState{id: s.ID, zone: m.zone(), alive: true})
		default:
			present = append(present, voterState{id: s.ID, zone: m.zone(), alive: m.Status == MemberAlive || m.Status == MemberSuspect, healthy: m.Status == MemberAlive})
		}
	}

	// Nothing can commit without a live quorum: planning would only queue
	// changes that hang. Recovery is then an operator's job.
	if totalVoters > 0 && liveVoters < quorum(totalVoters) {
		return nil
	}

	voterIDs := map[string]bool{}
	for _, s := range srv {
		if s.Voter {
			voterIDs[s.ID] = true
		}
	}
	var ci []int
	for i, m := range members {
		if byID[m.ID] == i && !voterIDs[m.ID] && m.eligible() {
			ci = append(ci, i)
		}
	}
	slices.SortFunc(ci, func(a, b int) int { return cmp.Compare(members[a].ID, members[b].ID) })
	candidates := make([]Member, len(ci))
	for k, i := range ci {
		candidates[k] = members[i]
	}

	// Target and desired count.
	eligibleCount := len(present) + len(candidates)
	target := p.Voters
	for target > 3 && eligibleCount < target {
		target -= 2
	}
	desired := min(target, eligibleCount)
	if desired > 1 && desired%2 == 0 {
		desired--
	}

	zoned := false
	for _, v := range present {
		zoned = zoned || v.zone != ""
	}
	for _, c := range candidates {
		zoned = zoned || c.zone() != ""
	}
	zoneCount := map[string]int{}
	for _, v := range present {
		zoneCount[v.zone]++
	}

	// pick removes and returns the candidate that best spreads the voters.
	pick := func() Member {
		best := 0
		for i, c := range candidates {
			if zoneCount[c.zone()] < zoneCount[candidates[best].zone()] {
				best = i
			}
		}
		c := candidates[best]
		candidates = slices.Delete(candidates, best, best+1)
		zoneCount[c.zone()]++
		return c
	}

	var actions []Action
	added := []voterState{}
	for len(present)+len(added) < desired && len(candidates) > 0 {
		c := pick()
		reason := "below the voter target"
		if len(toRemove) > 0 || len(optedOut) > 0 {
			reason = "replacement voter"
		}
		actions = append(actions, Action{Kind: ActionAddVoter, ID: c.ID, Address: c.RaftAddr, Reason: reason})
		added = append(added, voterState{id: c.ID, zone: c.zone(), alive: true})
	}

	// Zone rebalance: one move per plan, only when everything is healthy.
	var moveOut *voterState
	if zoned && len(added) == 0 && len(toRemove) == 0 && len(optedOut) == 0 && len(candidates) > 0 {
		allAlive := true
		for _, v := range present {
			allAlive = allAlive && v.healthy
		}
		var crowded *voterState
		for i := range present {
			v := &present[i]
			if v.id == p.LeaderID || zoneCount[v.zone] < 2 {
				continue
			}
			if crowded == nil || zoneCount[v.zone] > zoneCount[crowded.zone] ||
				(zoneCount[v.zone] == zoneCount[crowded.zone] && v.id > crowded.id) {
				crowded = v
			}
		}
		if allAlive && crowded != nil {
			for i, c := range candidates {
				if zoneCount[c.zone()] == 0 {
					candidates = slices.Delete(candidates, i, i+1)
					zoneCount[c.zone()]++
					actions = append(actions, Action{Kind: ActionAddVoter, ID: c.ID, Address: c.RaftAddr, Reason: fmt.Sprintf("spread voters to zone %q", c.zone())})
					added = append(added, voterState{id: c.ID, zone: c.zone(), alive: true})
					moveOut = crowded
					break
				}
			}
		}
	}

	// Removals, checked against a simulated configuration so that no
	// removal of a live voter breaks quorum.
	config := map[string]bool{} // id → alive
	for _, v := range present {
		config[v.id] = v.alive
	}
	for _, v := range optedOut {
		config[v.id] = true
	}
	for _, v := range added {
		config[v.id] = true
	}
	aliveIn := func() int {
		n := 0
		for _, alive := range config {
			if alive {
				n++
			}
		}
		return n
	}
	// Gone voters hold no vote (they are not in config): removing them
	// never costs quorum.
	actions = append(actions, toRemove...)
	removeLive := func(id, reason string) bool {
		if id == p.LeaderID {
			return false
		}
		alive := config[id]
		after := len(config) - 1
		afterAlive := aliveIn()
		if alive {
			afterAlive--
		}
		if after < 1 || afterAlive < quorum(after) {
			return false
		}
		delete(config, id)
		actions = append(actions, Action{Kind: ActionRemoveServer, ID: id, Reason: reason})
		return true
	}
	for _, v := range optedOut {
		removeLive(v.id, "labelled voter=false")
	}
	if moveOut != nil {
		removeLive(moveOut.id, fmt.Sprintf("zone %q has %d voters", moveOut.zone, zoneCount[moveOut.zone]))
	}
	// Above target (e.g. target lowered from 5 to 3): drop the least useful
	// voters: not alive first, then the most crowded zone, then highest ID.
	if n := len(config); n > target {
		var rest []voterState
		for _, v := range present {
			if _, ok := config[v.id]; ok {
				rest = append(rest, v)
			}
		}
		slices.SortFunc(rest, func(a, b voterState) int {
			if a.healthy != b.healthy {
				if !a.healthy {
					return -1
				}
				return 1
			}
			if c := cmp.Compare(zoneCount[b.zone], zoneCount[a.zone]); c != 0 {
				return c
			}
			return cmp.Compare(b.id, a.id)
		})
		for _, v := range rest {
			if n <= target {
				break
			}
			if removeLive(v.id, fmt.Sprintf("more voters than the target %d", target)) {
				zoneCount[v.zone]--
				n--
			}
		}
	}
	return actions
}

// QuorumStatus summarises whether the voters can still commit.
type QuorumStatus struct {
	Voters  int      `json:"voters"`
	Alive   int      `json:"alive"`
	Needed  int      `json:"needed"`
	Missing []string `json:"missing,omitempty"` // voters not alive in gossip
	Lost    bool     `json:"lost"`
}

// CheckQuorum compares the voters with gossip: alive and suspect voters
// count, dead, left and unknown ones do not.
func CheckQuorum(servers []Server, members []Member) QuorumStatus {
	status := map[string]MemberStatus{}
	for _, m := range members {
		status[m.ID] = m.Status
	}
	var q QuorumStatus
	for _, s := range servers {
		if !s.Voter {
			continue
		}
		q.Voters++
		if st, ok := status[s.ID]; ok && (st == MemberAlive || st == MemberSuspect) {
			q.Alive++
		} else {
			q.Missing = append(q.Missing, s.ID)
		}
	}
	slices.Sort(q.Missing)
	q.Needed = quorum(q.Voters)
	q.Lost = q.Voters > 0 && q.Alive < q.Needed
	return q
}

// Err returns nil when quorum holds, else ErrQuorumLost with the details
// an operator needs.
func (q QuorumStatus) Err() error {
	if !q.Lost {
		return nil
	}
	return fmt.Errorf("%w: %d of %d voters alive, %d needed; missing %s; bring them back, or follow the recovery procedure (colony raft recover)",
		ErrQuorumLost, q.Alive, q.Voters, q.Needed, strings.Join(q.Missing, ", "))
}

// PlanBootstrap decides whether a node started with --bootstrap-expect
// expect should bootstrap now, and with which voters. Every node that sees
// the same membership computes the same list, and nodes bootstrapped with
// an identical list form one cluster. It returns ok=false (wait) while
// fewer than expect eligible members with the same setting are alive, when
// any member already runs Raft (join that cluster instead), or when self is
// not among the chosen (the leader adds it later). A member with a
// different non-zero expectation is a configuration error.
func PlanBootstrap(self string, members []Member, expect int) ([]Server, bool, error) {
	if expect < 1 {
		return nil, false, fmt.Errorf("bootstrap expect must be positive, got %d", expect)
	}
	var ready []Member
	for _, m := range members {
		if m.Status != MemberAlive {
			continue
		}
		if m.HasRaft {
			return nil, false, nil
		}
		if m.BootstrapExpect != 0 && m.BootstrapExpect != expect {
			return nil, false, fmt.Errorf("member %s expects %d voters, this node %d: all nodes must use the same --bootstrap-expect", m.ID, m.BootstrapExpect, expect)
		}
		if m.BootstrapExpect == expect && m.eligible() {
			ready = append(ready, m)
		}
	}
	if len(ready) < expect {
		return nil, false, nil
	}
	slices.SortFunc(ready, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	ready = slices.CompactFunc(ready, func(a, b Member) bool { return a.ID == b.ID })
	if len(ready) < expect {
		return nil, false, nil
	}
	out := make([]Server, 0, expect)
	in := false
	for _, m := range ready[:expect] {
		out = append(out, Server{ID: m.ID, Address: m.RaftAddr, Voter: true})
		in = in || m.ID == self
	}
	if !in {
		return nil, false, nil
	}
	return out, true, nil
}
