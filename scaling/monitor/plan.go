package monitor

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
)

// ErrDuplicateMember is returned by ComputePlan when two members share an ID:
// the gossip layer should have refused the second one, and silently picking
// one would hide that bug.
var ErrDuplicateMember = errors.New("duplicate member id")

// ErrInvalidPlan is wrapped by Plan.Check failures.
var ErrInvalidPlan = errors.New("invalid monitoring plan")

// Member is one node as the leader sees it when planning.
type Member struct {
	ID    string
	Zone  string
	Voter bool
	Alive bool
}

// Plan is the monitoring tree committed by the leader.
//
// Every planned node has a parent, the aggregator it pushes to, except the
// root. A node's Level is the level of the group it leads: 0 for a plain
// member, 1 for the aggregator of a bottom group (its children are plain
// members), j for the aggregator of a group of level-(j−1) aggregators. No
// node leads more than one group, so every aggregator, the root included,
// receives at most K summaries an interval, and a level-j aggregator's
// children are all of level j−1. Depth is the root's level: the number of
// group levels, ⌈log_K N⌉, which is 0 for a single node and 1 for 2..K
// nodes.
//
// The serialised form is a flat map node → parent plus the levels of
// aggregators, so it is small enough to commit through Raft: about 80 bytes
// a node with UUID IDs.
type Plan struct {
	// Version is set by the leader when it commits the plan; summaries
	// carry it so aggregators can tell which plan a sender followed.
	Version uint64 `json:"version"`
	// GroupSize is the K the plan was computed with.
	GroupSize int `json:"k"`
	// Depth is the number of group levels (root's level).
	Depth int `json:"depth"`
	// RootID is the node at the top of the tree ("" for an empty plan).
	RootID string `json:"root"`
	// Parents maps every planned node to its parent ("" for the root).
	Parents map[string]string `json:"parents"`
	// Levels holds the level of aggregators; absent means 0.
	Levels map[string]int `json:"levels,omitempty"`
	// Voters lists planned nodes that are Raft voters; failover uses it
	// to keep preferring non-voters as stand-in aggregators.
	Voters []string `json:"voters,omitempty"`

	once     sync.Once
	children map[string][]string
	voterSet map[string]bool
}

// Parent returns the aggregator id pushes to and whether id is planned at
// all. The root returns "", true.
func (p *Plan) Parent(id string) (string, bool) {
	parent, ok := p.Parents[id]
	return parent, ok
}

// Children returns the nodes that push to id, sorted.
func (p *Plan) Children(id string) []string {
	p.index()
	return p.children[id]
}

// FanIn is how many summaries id receives per interval.
func (p *Plan) FanIn(id string) int { return len(p.Children(id)) }

// Level returns how many levels of the tree id aggregates (0 for a plain
// member, -1 if id is not planned).
func (p *Plan) Level(id string) int {
	if _, ok := p.Parents[id]; !ok {
		return -1
	}
	return p.Levels[id]
}

// Root returns the top of the tree.
func (p *Plan) Root() string { return p.RootID }

// Len is the number of planned nodes.
func (p *Plan) Len() int { return len(p.Parents) }

// Group returns the members of the level-lvl group that aggregator agg
// leads, agg first then its children at that level. A level-lvl group is
// made of nodes of level lvl (leaves for lvl 0).
func (p *Plan) Group(agg string, lvl int) []string {
	if p.Level(agg) <= lvl {
		return nil
	}
	out := []string{agg}
	for _, c := range p.Children(agg) {
		if p.Levels[c] == lvl {
			out = append(out, c)
		}
	}
	return out
}

func (p *Plan) index() {
	p.once.Do(func() {
		p.children = make(map[string][]string)
		for id, parent := range p.Parents {
			if parent != "" {
				p.children[parent] = append(p.children[parent], id)
			}
		}
		for _, c := range p.children {
			slices.Sort(c)
		}
		p.voterSet = make(map[string]bool, len(p.Voters))
		for _, v := range p.Voters {
			p.voterSet[v] = true
		}
	})
}

// Diff counts the nodes planned in both old and new whose parent differs:
// the number of nodes that must re-home when new replaces old. Nodes that
// join or leave are not counted.
func Diff(old, new *Plan) int {
	if old == nil || new == nil {
		return 0
	}
	moved := 0
	for id, parent := range old.Parents {
		if np, ok := new.Parents[id]; ok && np != parent {
			moved++
		}
	}
	return moved
}

// SameTree reports whether two plans describe the same tree (nodes,
// parents, levels, root, depth, K and voters), whatever their versions.
// Diff alone is not enough to decide whether to commit a new plan: it
// ignores nodes that were added or removed.
func SameTree(a, b *Plan) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.GroupSize != b.GroupSize || a.Depth != b.Depth || a.RootID != b.RootID ||
		len(a.Parents) != len(b.Parents) || !slices.Equal(sortedCopy(a.Voters), sortedCopy(b.Voters)) {
		return false
	}
	for id, parent := range a.Parents {
		if bp, ok := b.Parents[id]; !ok || bp != parent || a.Levels[id] != b.Levels[id] {
			return false
		}
	}
	return true
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// betterAggregator orders aggregator candidates: non-voters first (voters
// already carry Raft's load), then by a per-ID hash so the choice is
// random-looking but identical everywhere, then by ID.
func betterAggregator(aVoter bool, aScore uint64, aID string, bVoter bool, bScore uint64, bID string) bool {
	if aVoter != bVoter {
		return !aVoter
	}
	if aScore != bScore {
		return aScore > bScore
	}
	return aID < bID
}

// Failover returns where id should push while the aggregators above it in
// the committed plan are not alive, without waiting for the leader to
// commit a new plan. Every member of a group computes the same stand-in
// from the same view of liveness: the best-ranked live member of the dead
// aggregator's group. If that is id itself, id stands in for the dead
// aggregator and pushes to wherever the dead aggregator would have. It
// returns "" when id should not push anywhere (it is, or stands in for, the
// root) and ok=false when id is not planned.
func (p *Plan) Failover(id string, alive func(string) bool) (target string, ok bool) {
	parent, ok := p.Parents[id]
	if !ok {
		return "", false
	}
	p.index()
	lvl := p.Levels[id]
	for range p.Depth + 2 {
		if parent == "" || alive(parent) {
			return parent, true
		}
		best := ""
		var bestScore uint64
		for _, m := range p.Group(parent, lvl) {
			if m == parent || !alive(m) {
				continue
			}
			s := aggregatorScore(m)
			if best == "" || betterAggregator(p.voterSet[m], s, m, p.voterSet[best], bestScore, best) {
				best, bestScore = m, s
			}
		}
		if best != id {
			return best, true
		}
		// id stands in for parent at level lvl+1: it joins the group that
		// parent's level-lvl group reports to.
		lvl++
		if p.Levels[parent] <= lvl {
			parent = p.Parents[parent]
		}
	}
	return "", true
}

// Check verifies the structural invariants a committed plan must keep: one
// root, no cycles, no aggregator receiving from more than GroupSize nodes
// of one level, levels consistent, depth equal to the root's level. The agent can run it on a
// plan read from Raft before trusting it.
func (p *Plan) Check() error {
	if len(p.Parents) == 0 {
		if p.RootID != "" || p.Depth != 0 {
			return fmt.Errorf("%w: empty plan with root %q depth %d", ErrInvalidPlan, p.RootID, p.Depth)
		}
		return nil
	}
	if p.GroupSize < 2 {
		return fmt.Errorf("%w: group size %d", ErrInvalidPlan, p.GroupSize)
	}
	roots := 0
	for id, parent := range p.Parents {
		if parent == "" {
			roots++
			if id != p.RootID {
				return fmt.Errorf("%w: %q has no parent but root is %q", ErrInvalidPlan, id, p.RootID)
			}
			continue
		}
		if _, ok := p.Parents[parent]; !ok {
			return fmt.Errorf("%w: %q reports to unplanned %q", ErrInvalidPlan, id, parent)
		}
		cl, pl := p.Levels[id], p.Levels[parent]
		if cl < 0 || pl <= cl {
			return fmt.Errorf("%w: %q (level %d) reports to %q (level %d)", ErrInvalidPlan, id, cl, parent, pl)
		}
	}
	if roots != 1 {
		return fmt.Errorf("%w: %d roots", ErrInvalidPlan, roots)
	}
	if p.Levels[p.RootID] != p.Depth {
		return fmt.Errorf("%w: root level %d but depth %d", ErrInvalidPlan, p.Levels[p.RootID], p.Depth)
	}
	for agg := range p.Levels {
		if _, ok := p.Parents[agg]; !ok {
			return fmt.Errorf("%w: level for unplanned %q", ErrInvalidPlan, agg)
		}
		// Counted per level of the children, so that plans committed
		// before aggregators led one group each (the root then led a
		// group at every level) still pass on replay of an old log.
		perLevel := make(map[int]int)
		for _, c := range p.Children(agg) {
			perLevel[p.Levels[c]]++
		}
		for j, n := range perLevel {
			if n > p.GroupSize {
				return fmt.Errorf("%w: %q receives from %d > %d level-%d nodes", ErrInvalidPlan, agg, n, p.GroupSize, j)
			}
		}
	}
	// Levels strictly increase towards the parent, so there is no cycle.
	return nil
}

// DepthFor is ⌈log_K n⌉ in integers: the smallest d with K^d ≥ n; 0 for
// n ≤ 1.
func DepthFor(n, k int) int {
	d, span := 0, 1
	for span < n {
		span *= k
		d++
	}
	return d
}

// item is one thing being grouped at some level: a node at level 0, a
// group (slot) of the level below otherwise.
type item struct {
	id   string
	zone string
	h    uint64
	node *candidate // the node, at level 0
	sub  *slot      // the group of the level below, above level 0
}

// candidate is a node as a possible aggregator.
type candidate struct {
	id    string
	score uint64
	voter bool
}

func (a *candidate) better(b *candidate) bool {
	return betterAggregator(a.voter, a.score, a.id, b.voter, b.score, b.id)
}

type slot struct {
	id    string
	h     uint64
	items []*item
	// best holds the best-ranked nodes of the slot's whole subtree, best
	// first, as many as there are slots above it plus one: each slot above
	// takes at most one of them as its own aggregator.
	best []*candidate
}

// ComputePlan builds the monitoring tree for the alive members.
//
// Level by level, items (nodes, then groups of the level below) are split
// into pools (one per zone big enough, one mixed pool for the rest), each
// pool gets ⌈n/TargetGroupSize⌉ slots named by level, zone and index, and
// every item goes to its highest rendezvous-weight slot that still has room
// for K members (bounded-load rendezvous hashing, items visited in hash
// order). Because slot names do not depend on who is in them, one join or
// leave moves that node, plus a group's worth of nodes in the rare cases
// where a pool's slot count changes or a group's aggregator changes.
//
// Aggregators are then chosen top-down, so that no node leads more than
// one group: the root group takes the best-ranked node of the whole tree
// (non-voters first, then a per-ID hash), and every group below takes the
// best-ranked node of its own subtree that no group above it has taken. A
// level-1 group's aggregator is one of its members, so it receives at most
// K−1 summaries; a higher group's aggregator receives one from each of its
// at most K subgroups. No node, the root included, has a fan-in above K.
//
// The result depends only on the set of members, not their order.
func ComputePlan(members []Member, cfg Config) (*Plan, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	k := cfg.GroupSize
	seen := make(map[string]bool, len(members))
	var items []*item
	var voters []string
	for _, m := range members {
		if m.ID == "" {
			return nil, fmt.Errorf("member with empty id: %w", ErrDuplicateMember)
		}
		if seen[m.ID] {
			return nil, fmt.Errorf("%w: %q", ErrDuplicateMember, m.ID)
		}
		seen[m.ID] = true
		if !m.Alive {
			continue
		}
		items = append(items, &item{
			id: m.ID, zone: m.Zone, h: hashString(m.ID),
			node: &candidate{id: m.ID, score: aggregatorScore(m.ID), voter: m.Voter},
		})
		if m.Voter {
			voters = append(voters, m.ID)
		}
	}
	slices.Sort(voters)
	p := &Plan{
		GroupSize: k,
		Parents:   make(map[string]string, len(items)),
		Levels:    make(map[string]int),
		Voters:    voters,
		Depth:     DepthFor(len(items), k),
	}
	switch len(items) {
	case 0:
		return p, nil
	case 1:
		p.RootID = items[0].id
		p.Parents[p.RootID] = ""
		return p, nil
	}
	budget := 1
	for range p.Depth - 1 {
		budget *= k
	}
	var slots []*slot
	for lvl := range p.Depth {
		slots = assignLevel(items, lvl, cfg, budget)
		items = items[:0:0]
		for _, s := range slots {
			s.best = bestOf(s, p.Depth+1)
			items = append(items, &item{id: s.id, zone: s.items[0].zone, h: s.h, sub: s})
		}
		budget /= k
	}
	// After Depth levels exactly one group is left (each level's slot
	// count fits the budget K^(levels left)): the root's.
	root := slots[0]
	p.RootID = root.best[0].id
	p.Parents[p.RootID] = ""
	p.place(root, p.Depth, nil)
	return p, nil
}

// bestOf ranks the best n nodes of a slot's subtree, from its members'
// (nodes at level 0, subgroups' best lists above).
func bestOf(s *slot, n int) []*candidate {
	var all []*candidate
	for _, it := range s.items {
		if it.node != nil {
			all = append(all, it.node)
		} else {
			all = append(all, it.sub.best...)
		}
	}
	slices.SortFunc(all, func(a, b *candidate) int {
		if a.better(b) {
			return -1
		}
		if b.better(a) {
			return 1
		}
		return 0
	})
	return all[:min(n, len(all))]
}

// place gives slot s (a group of level lvl) the best node of its subtree
// that the groups above (taken, their aggregators) have not taken, makes
// it report to the group above (whose aggregator is the last of taken),
// and places the subtree. A group whose every node leads a group above it
// is left without an aggregator: its nodes report in those roles.
func (p *Plan) place(s *slot, lvl int, taken []string) {
	agg := ""
	for _, c := range s.best {
		if !slices.Contains(taken, c.id) {
			agg = c.id
			break
		}
	}
	if agg == "" {
		return
	}
	if len(taken) > 0 {
		p.Parents[agg] = taken[len(taken)-1]
	}
	p.Levels[agg] = lvl
	taken = append(taken, agg)
	for _, it := range s.items {
		switch {
		case it.sub != nil:
			p.place(it.sub, lvl-1, taken)
		case !slices.Contains(taken, it.id):
			p.Parents[it.id] = agg
		}
	}
}

// slotCounts decides how many slots each pool gets at one level, keeping the
// total within budget so that depth stays ⌈log_K N⌉. Zone-pure pools are
// preferred; if they do not fit, the target size grows towards K, and as a
// last resort everything shares one mixed pool of ⌈n/K⌉ slots (which always
// fits because n ≤ K·budget). The returned map is keyed by pool zone, ""
// being the mixed pool; pure reports which zones got their own pool.
func slotCounts(items []*item, cfg Config, budget int) (counts map[string]int, pure map[string]bool) {
	k := cfg.GroupSize
	perZone := make(map[string]int)
	for _, it := range items {
		perZone[it.zone]++
	}
	for t := cfg.TargetGroupSize; t <= k; t++ {
		counts, pure = make(map[string]int), make(map[string]bool)
		mixed, total := 0, 0
		for z, c := range perZone {
			if z != "" && c >= cfg.MinZoneNodes {
				counts[z] = ceilDiv(c, t)
				pure[z] = true
				total += counts[z]
			} else {
				mixed += c
			}
		}
		if mixed > 0 {
			counts[""] = ceilDiv(mixed, t)
			total += counts[""]
		}
		if total <= budget {
			return counts, pure
		}
	}
	return map[string]int{"": ceilDiv(len(items), k)}, map[string]bool{}
}

func assignLevel(items []*item, lvl int, cfg Config, budget int) []*slot {
	counts, pure := slotCounts(items, cfg, budget)
	pools := make(map[string][]*item)
	for _, it := range items {
		z := it.zone
		if !pure[z] {
			z = ""
		}
		pools[z] = append(pools[z], it)
	}
	zones := make([]string, 0, len(pools))
	for z := range pools {
		zones = append(zones, z)
	}
	slices.Sort(zones)
	var out []*slot
	prefix := strconv.Itoa(lvl+1) + "/"
	for _, z := range zones {
		pool := pools[z]
		slots := make([]*slot, counts[z])
		for j := range slots {
			id := prefix + z + "/" + strconv.Itoa(j)
			slots[j] = &slot{id: id, h: hashString(id)}
		}
		// Visiting items in hash order (not input order) keeps the
		// bounded-load assignment a function of the member set alone.
		slices.SortFunc(pool, func(a, b *item) int {
			return cmp.Or(cmp.Compare(a.h, b.h), cmp.Compare(a.id, b.id))
		})
		for _, it := range pool {
			var best *slot
			var bestW uint64
			for _, s := range slots {
				if len(s.items) >= cfg.GroupSize {
					continue
				}
				if w := weight(it.h, s.h); best == nil || w > bestW {
					best, bestW = s, w
				}
			}
			// best is never nil: pools hold at most slots·K items.
			best.items = append(best.items, it)
		}
		for _, s := range slots {
			if len(s.items) > 0 {
				// Mixed groups carry zone "" upward so the next level mixes
				// them too; pure groups keep their zone.
				for _, it := range s.items {
					it.zone = z
				}
				out = append(out, s)
			}
		}
	}
	return out
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }
