package consensus

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

const deadAfter = time.Minute

func member(id string, st MemberStatus, since time.Duration, labels ...string) Member {
	m := Member{ID: id, RaftAddr: id + ":8300", Status: st, StatusFor: since, Labels: map[string]string{}}
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		m.Labels[k] = v
	}
	return m
}

func alive(id string, labels ...string) Member { return member(id, MemberAlive, time.Hour, labels...) }

func voterList(ids ...string) []Server {
	var out []Server
	for _, id := range ids {
		out = append(out, Server{ID: id, Address: id + ":8300", Voter: true})
	}
	return out
}

func render(actions []Action) string {
	var parts []string
	for _, a := range actions {
		if a.Kind == ActionAddVoter {
			parts = append(parts, "+"+a.ID)
		} else {
			parts = append(parts, "-"+a.ID)
		}
	}
	return strings.Join(parts, " ")
}

func TestPlanVoters(t *testing.T) {
	cases := []struct {
		name    string
		servers []Server
		members []Member
		target  int
		want    string
	}{
		{"alone", voterList("a"), []Member{alive("a")}, 3, ""},
		{"two nodes stay at one voter (odd)", voterList("a"), []Member{alive("a"), alive("b")}, 3, ""},
		{"three nodes: grow to three", voterList("a"), []Member{alive("a"), alive("c"), alive("b")}, 3, "+b +c"},
		{"four nodes: three voters, lowest IDs", voterList("a"), []Member{alive("a"), alive("d"), alive("c"), alive("b")}, 3, "+b +c"},
		{"target 5 with 5 eligible", voterList("a"), []Member{alive("a"), alive("b"), alive("c"), alive("d"), alive("e")}, 5, "+b +c +d +e"},
		{"target 5 with 4 eligible is 3", voterList("a"), []Member{alive("a"), alive("b"), alive("c"), alive("d")}, 5, "+b +c"},
		{"target 5 grows from 3", voterList("a", "b", "c"), []Member{alive("a"), alive("b"), alive("c"), alive("d"), alive("e"), alive("f")}, 5, "+d +e"},
		{"healthy three", voterList("a", "b", "c"), []Member{alive("a"), alive("b"), alive("c"), alive("d")}, 3, ""},
		{"two voters grow to three", voterList("a", "b"), []Member{alive("a"), alive("b"), alive("c")}, 3, "+c"},
		{"dead within timeout is kept", voterList("a", "b", "c"), []Member{alive("a"), alive("b"), member("c", MemberDead, 30*time.Second), alive("d")}, 3, ""},
		{"dead past timeout: replace then remove", voterList("a", "b", "c"), []Member{alive("a"), alive("b"), member("c", MemberDead, 2*time.Minute), alive("d")}, 3, "+d -c"},
		{"dead past timeout, no replacement", voterList("a", "b", "c"), []Member{alive("a"), alive("b"), member("c", MemberDead, 2*time.Minute)}, 3, "-c"},
		{"left voter goes at once", voterList("a", "b", "c"), []Member{alive("a"), alive("b"), member("c", MemberLeft, time.Second), alive("d")}, 3, "+d -c"},
		{"suspect voter is kept", voterList("a", "b", "c"), []Member{alive("a"), alive("b"), member("c", MemberSuspect, time.Hour), alive("d")}, 3, ""},
		{"voter unknown to gossip is kept", voterList("a", "b", "c"), []Member{alive("a"), alive("b"), alive("d")}, 3, ""},
		{"quorum lost: nothing", voterList("a", "b", "c"), []Member{alive("a"), member("b", MemberDead, time.Hour), member("c", MemberDead, time.Hour), alive("d"), alive("e")}, 3, ""},
		{"unknown voters count against quorum", voterList("a", "b", "c"), []Member{alive("a"), alive("d"), alive("e")}, 3, ""},
		{"leader labelled voter=false stays", voterList("a", "b", "c"), []Member{alive("a", "voter=false"), alive("b"), alive("c"), alive("d")}, 3, ""},
		{"dead leader entry is still never removed", voterList("a", "b", "c"), []Member{member("a", MemberDead, time.Hour), alive("b"), alive("c"), alive("d")}, 3, ""},
		{"voter=false follower replaced", voterList("a", "b", "c"), []Member{alive("a"), alive("b", "voter=false"), alive("c"), alive("d")}, 3, "+d -b"},
		{"voter=false follower, no replacement", voterList("a", "b", "c"), []Member{alive("a"), alive("b", "voter=false"), alive("c")}, 3, "-b"},
		{"voter=false never added", voterList("a"), []Member{alive("a"), alive("b", "voter=false"), alive("c", "voter=FALSE"), alive("d"), alive("e")}, 3, "+d +e"},
		{"no raft address never added", voterList("a"), []Member{alive("a"), {ID: "b", Status: MemberAlive}, alive("c"), alive("d")}, 3, "+c +d"},
		{"suspect and dead never added", voterList("a"), []Member{alive("a"), member("b", MemberSuspect, 0), member("c", MemberDead, 0), alive("d"), alive("e")}, 3, "+d +e"},
		{"zones: one voter per zone first", voterList("a"), []Member{alive("a", "zone=z1"), alive("b", "zone=z1"), alive("c", "zone=z1"), alive("x", "zone=z2"), alive("y", "zone=z3")}, 3, "+x +y"},
		{"zones: two zones, fill the emptier", voterList("a"), []Member{alive("a", "zone=z1"), alive("b", "zone=z1"), alive("c", "zone=z2"), alive("d", "zone=z2")}, 3, "+c +b"},
		{"zones: replacement from the missing zone", voterList("a", "b", "c"), []Member{alive("a", "zone=z1"), alive("b", "zone=z2"), member("c", MemberDead, time.Hour, "zone=z3"), alive("d", "zone=z1"), alive("e", "zone=z3")}, 3, "+e -c"},
		{"zones: rebalance one voter", voterList("a", "b", "c"), []Member{alive("a", "zone=z1"), alive("b", "zone=z1"), alive("c", "zone=z2"), alive("d", "zone=z3")}, 3, "+d -b"},
		{"zones: rebalance never moves the leader", voterList("a", "c", "z"), []Member{alive("a", "zone=z1"), alive("c", "zone=z2"), alive("z", "zone=z1"), alive("d", "zone=z3")}, 3, "+d -z"},
		{"zones: balanced stays", voterList("a", "b", "c"), []Member{alive("a", "zone=z1"), alive("b", "zone=z2"), alive("c", "zone=z3"), alive("d", "zone=z1")}, 3, ""},
		{"zones: no rebalance while a voter is unhealthy", voterList("a", "b", "c"), []Member{alive("a", "zone=z1"), member("b", MemberSuspect, 0, "zone=z1"), alive("c", "zone=z2"), alive("d", "zone=z3")}, 3, ""},
		{"five voters, one dead, no spare: down to three", voterList("a", "b", "c", "d", "e"), []Member{alive("a"), alive("b"), alive("c"), alive("d"), member("e", MemberDead, time.Hour)}, 5, "-e -d"},
		{"five voters, one dead, spare: replace", voterList("a", "b", "c", "d", "e"), []Member{alive("a"), alive("b"), alive("c"), alive("d"), member("e", MemberDead, time.Hour), alive("f")}, 5, "+f -e"},
		{"target lowered to 3", voterList("a", "b", "c", "d", "e"), []Member{alive("a"), alive("b"), alive("c"), alive("d"), alive("e")}, 3, "-e -d"},
		{"even count above target", voterList("a", "b", "c", "d"), []Member{alive("a"), alive("b"), alive("c"), alive("d")}, 3, "-d"},
		{"excess removes the unhealthy first", voterList("a", "b", "c", "d"), []Member{alive("a"), member("b", MemberSuspect, 0), alive("c"), alive("d")}, 3, "-b"},
		{"dead non-voter removed", append(voterList("a", "b", "c"), Server{ID: "n", Address: "n:1"}), []Member{alive("a"), alive("b"), alive("c"), member("n", MemberDead, time.Hour)}, 3, "-n"},
		{"live non-voter promoted", append(voterList("a"), Server{ID: "n", Address: "n:1"}), []Member{alive("a"), alive("n"), alive("b")}, 3, "+b +n"},
		{"duplicate member entries: first wins", voterList("a"), []Member{alive("a"), alive("b"), member("b", MemberDead, time.Hour), alive("c")}, 3, "+b +c"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := VoterPolicy{Voters: tc.target, DeadVoterTimeout: deadAfter, LeaderID: "a"}
			got := PlanVoters(tc.servers, tc.members, p)
			if r := render(got); r != tc.want {
				t.Fatalf("plan %q, want %q\n%v", r, tc.want, got)
			}
			// Same input in another order: same plan.
			rs := slices.Clone(tc.servers)
			rm := slices.Clone(tc.members)
			slices.Reverse(rs)
			slices.Reverse(rm)
			if tc.name != "duplicate member entries: first wins" {
				if r := render(PlanVoters(rs, rm, p)); r != tc.want {
					t.Fatalf("reordered input planned %q, want %q", r, tc.want)
				}
			}
			for _, a := range got {
				if a.Reason == "" || (a.Kind == ActionAddVoter && a.Address == "") {
					t.Fatalf("incomplete action %+v", a)
				}
			}
		})
	}
}

// TestPlanVotersInvariants checks the safety rules on random clusters.
func TestPlanVotersInvariants(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	statuses := []MemberStatus{MemberAlive, MemberAlive, MemberAlive, MemberSuspect, MemberDead, MemberLeft}
	for i := range 3000 {
		n := 1 + r.IntN(9)
		var servers []Server
		var members []Member
		leader := ""
		for j := range n {
			id := fmt.Sprintf("n%d", j)
			st := statuses[r.IntN(len(statuses))]
			var labels []string
			if r.IntN(3) == 0 {
				labels = append(labels, fmt.Sprintf("zone=z%d", r.IntN(3)))
			}
			if r.IntN(8) == 0 {
				labels = append(labels, "voter=false")
			}
			isVoter := r.IntN(2) == 0
			if isVoter {
				if leader == "" {
					leader, st = id, MemberAlive
				}
				servers = append(servers, Server{ID: id, Address: id + ":1", Voter: true})
			}
			if r.IntN(10) > 0 || id == leader {
				members = append(members, member(id, st, time.Duration(r.IntN(120))*time.Second, labels...))
			}
		}
		if leader == "" {
			continue
		}
		target := []int{3, 5}[r.IntN(2)]
		p := VoterPolicy{Voters: target, DeadVoterTimeout: deadAfter, LeaderID: leader}
		plan := PlanVoters(servers, members, p)
		byID := map[string]Member{}
		for _, m := range members {
			byID[m.ID] = m
		}
		config := map[string]bool{}
		for _, s := range servers {
			config[s.ID] = true
		}
		seenRemove := false
		touched := map[string]bool{}
		for _, a := range plan {
			if touched[a.ID] {
				t.Fatalf("case %d: %s touched twice: %v", i, a.ID, plan)
			}
			touched[a.ID] = true
			switch a.Kind {
			case ActionAddVoter:
				if seenRemove {
					t.Fatalf("case %d: add after remove: %v", i, plan)
				}
				if !byID[a.ID].eligible() {
					t.Fatalf("case %d: adds ineligible %s: %v", i, a.ID, plan)
				}
				config[a.ID] = true
			case ActionRemoveServer:
				seenRemove = true
				if a.ID == leader {
					t.Fatalf("case %d: removes the leader: %v", i, plan)
				}
				delete(config, a.ID)
			}
		}
		voters := 0
		for id := range config {
			_ = id
			voters++
		}
		if len(plan) > 0 && voters == 0 {
			t.Fatalf("case %d: plan leaves no voter: %v", i, plan)
		}
		// Applying plans repeatedly converges: no add/remove loop.
		cur := servers
		converged := false
		for round := 0; round < 5 && !converged; round++ {
			next := map[string]Server{}
			for _, s := range cur {
				next[s.ID] = s
			}
			for _, a := range PlanVoters(cur, members, p) {
				if a.Kind == ActionAddVoter {
					next[a.ID] = Server{ID: a.ID, Address: a.Address, Voter: true}
				} else {
					delete(next, a.ID)
				}
			}
			cur = nil
			for _, id := range slices.Sorted(maps.Keys(next)) {
				cur = append(cur, next[id])
			}
			converged = len(PlanVoters(cur, members, p)) == 0
		}
		if !converged {
			t.Fatalf("case %d: no convergence after 5 rounds from %v\nmembers %+v", i, servers, members)
		}
	}
}

func TestVoterPolicyValidate(t *testing.T) {
	for _, v := range []int{1, 3, 5, 7} {
		if err := (VoterPolicy{Voters: v}).Validate(); err != nil {
			t.Errorf("%d voters rejected: %v", v, err)
		}
	}
	for _, v := range []int{0, 2, 4, -1} {
		if err := (VoterPolicy{Voters: v}).Validate(); err == nil {
			t.Errorf("%d voters accepted", v)
		}
	}
}

func TestCheckQuorum(t *testing.T) {
	servers := append(voterList("a", "b", "c"), Server{ID: "n", Voter: false})
	q := CheckQuorum(servers, []Member{alive("a"), member("b", MemberSuspect, 0), member("c", MemberDead, 0)})
	if q.Lost || q.Err() != nil || q.Alive != 2 || q.Needed != 2 {
		t.Fatalf("two of three: %+v", q)
	}
	q = CheckQuorum(servers, []Member{alive("a"), member("b", MemberLeft, 0)})
	if !q.Lost || !errors.Is(q.Err(), ErrQuorumLost) || !slices.Equal(q.Missing, []string{"b", "c"}) {
		t.Fatalf("one of three: %+v", q)
	}
	if !strings.Contains(q.Err().Error(), "colony raft recover") {
		t.Fatalf("error does not point to recovery: %v", q.Err())
	}
}

func TestPlanBootstrap(t *testing.T) {
	exp := func(id string, n int, labels ...string) Member {
		m := alive(id, labels...)
		m.BootstrapExpect = n
		return m
	}
	ms := []Member{exp("c", 3), exp("a", 3), exp("b", 3)}
	for _, self := range []string{"a", "b", "c"} {
		got, ok, err := PlanBootstrap(self, ms, 3)
		if err != nil || !ok || render(addAll(got)) != "+a +b +c" {
			t.Fatalf("%s: %v %v %v", self, got, ok, err)
		}
	}
	if _, ok, _ := PlanBootstrap("a", ms[:2], 3); ok {
		t.Fatal("bootstrapped with two of three")
	}
	// A fourth node waits to be added instead of forming its own cluster.
	four := append(slices.Clone(ms), exp("d", 3))
	if _, ok, _ := PlanBootstrap("d", four, 3); ok {
		t.Fatal("fourth node bootstrapped")
	}
	if got, ok, _ := PlanBootstrap("a", four, 3); !ok || render(addAll(got)) != "+a +b +c" {
		t.Fatalf("with four: %v %v", got, ok)
	}
	// Somebody already runs Raft: join it.
	running := append(slices.Clone(ms), Member{ID: "z", Status: MemberAlive, HasRaft: true})
	if _, ok, _ := PlanBootstrap("a", running, 3); ok {
		t.Fatal("bootstrapped next to a running cluster")
	}
	if _, _, err := PlanBootstrap("a", append(slices.Clone(ms), exp("e", 5)), 3); err == nil {
		t.Fatal("mismatched bootstrap-expect accepted")
	}
	// voter=false and dead nodes are not counted.
	if _, ok, _ := PlanBootstrap("a", []Member{exp("a", 3), exp("b", 3, "voter=false"), member("c", MemberDead, 0)}, 3); ok {
		t.Fatal("bootstrapped with ineligible nodes")
	}
}

func addAll(s []Server) []Action {
	var out []Action
	for _, v := range s {
		out = append(out, Action{Kind: ActionAddVoter, ID: v.ID})
	}
	return out
}
