package placement

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sort"
)

// Config tunes the engine. The zero value is the default.
type Config struct {
	// CandidateLimit is how many nodes that fit are scored, per spread
	// bucket, for each placement (Nomad's limited candidate iteration).
	// 0 picks ⌈log2(feasible nodes)⌉, at least 2. Larger finds slightly
	// better packings at a proportional cost.
	CandidateLimit int
	// BucketLimit is how many spread buckets (attribute values) are
	// searched per placement, best upper bound first. 0 means 4.
	BucketLimit int
}

// DefaultConfig returns the default configuration (automatic limits).
func DefaultConfig() Config { return Config{} }

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.CandidateLimit < 0 || c.BucketLimit < 0 {
		return errors.New("placement config: limits must be >= 0")
	}
	return nil
}

// Input is everything a plan depends on. Order of the slices does not
// matter except that, of two deployments with the same name, the first wins.
type Input struct {
	Nodes []Node
	// Placements are all current placements, of every deployment: they
	// reserve resources on their nodes. Placements of deployments not in
	// Deployments are stopped (the deployment was removed).
	Placements  []Placement
	Deployments []*Spec
	Config      Config
}

// StopReason says why a placement is to be stopped.
type StopReason string

// Stop reasons.
const (
	StopScaleDown         StopReason = "scale_down"          // its index is >= count
	StopNodeDown          StopReason = "node_down"           // its node is down
	StopNodeDraining      StopReason = "node_draining"       // its node is draining (or not eligible)
	StopNodeGone          StopReason = "node_gone"           // its node is not in the node list
	StopConstraints       StopReason = "constraints_not_met" // its node no longer satisfies the constraints
	StopDistinctHosts     StopReason = "distinct_hosts"      // another instance of the deployment is on the node
	StopStale             StopReason = "stale"               // a newer generation holds the same index
	StopDeploymentRemoved StopReason = "deployment_removed"  // no spec for its deployment
)

// Keys of Metrics.NodesExhausted: the resource a node ran out of. The
// autoscaler can tell "no capacity" (exhausted) from "no matching node"
// (constraint filtered) with them.
const (
	ExhaustedCPU    = "cpu"
	ExhaustedMemory = "memory"
)

const defaultBucketLimit = 4

// Stop is a placement to remove, with the reason.
type Stop struct {
	Placement Placement  `json:"placement"`
	Reason    StopReason `json:"reason"`
}

// Metrics explains why instances could not be placed, like Nomad's
// placement failure metrics. Every node is counted once, under the first
// filter that rejected it, in this order: status, constraints (in spec
// order), distinct_hosts, resources (cpu before memory).
type Metrics struct {
	NodesEvaluated        int            `json:"nodes_evaluated"`
	NodesIneligible       int            `json:"nodes_ineligible"`              // draining or down
	ConstraintFiltered    map[string]int `json:"constraint_filtered,omitempty"` // constraint string → nodes
	DistinctHostsFiltered int            `json:"distinct_hosts_filtered,omitempty"`
	NodesExhausted        map[string]int `json:"nodes_exhausted,omitempty"` // "cpu" or "memory" → nodes
}

// Pending reports a deployment's instances that could not be placed.
type Pending struct {
	Deployment string  `json:"deployment"`
	Count      int     `json:"count"` // the deployment's lowest missing indexes
	Metrics    Metrics `json:"metrics"`
}

// InvalidDeployment is a spec Plan refused; its existing placements are
// left alone (they still reserve resources) until the spec is fixed.
type InvalidDeployment struct {
	Name   string       `json:"name"`
	Errors []FieldError `json:"errors"`
}

// Result is a plan: commit it, then act on it.
type Result struct {
	Place   []Placement         `json:"place,omitempty"`   // by deployment, then index
	Stop    []Stop              `json:"stop,omitempty"`    // by deployment, then index, then ID
	Pending []Pending           `json:"pending,omitempty"` // by deployment
	Invalid []InvalidDeployment `json:"invalid,omitempty"`
}

// Empty reports whether the plan changes nothing.
func (r *Result) Empty() bool { return len(r.Place) == 0 && len(r.Stop) == 0 }

// Feasibility cache values per (deployment, node): 0 unknown, 1 feasible,
// 2+i the first constraint that failed was constraints[i].
const (
	feasUnknown uint8 = 0
	feasOK      uint8 = 1
	feasFail0   uint8 = 2
)

type deployment struct {
	spec    *Spec
	ask     Resources
	cons    []*compiled
	prefs   []*compiled
	prefW   []float64
	spreadW float64
	feas    []uint8 // per node, lazily filled
	slots   []int32 // index → position in Input.Placements, -1 if empty
	slotNi  []int32 // index → node of the placement in slots
	maxGen  []uint64
}

type planner struct {
	cfg   Config
	in    *Input
	nodes []*Node // by ID
	idx   map[string]int32
	used  []Resources
	mark  []uint32 // distinct_hosts scratch, stamped per deployment
	stamp uint32
	res   Result
}

// Plan computes placements to add, placements to stop and instances left
// pending. It is pure and deterministic: the same input gives the same
// result, whatever the order of Nodes and Placements.
func Plan(in Input) Result {
	p := &planner{cfg: in.Config, in: &in}
	p.indexNodes()
	deps := p.compile()
	p.reconcile(deps)
	p.res.Place = make([]Placement, 0, p.missing(deps))
	names := make([]string, 0, len(deps))
	for name := range deps {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p.place(deps[name])
	}
	sort.Slice(p.res.Stop, func(i, j int) bool {
		a, b := &p.res.Stop[i].Placement, &p.res.Stop[j].Placement
		if a.Deployment != b.Deployment {
			return a.Deployment < b.Deployment
		}
		if a.Index != b.Index {
			return a.Index < b.Index
		}
		if a.ID != b.ID {
			return a.ID < b.ID
		}
		return a.NodeID < b.NodeID
	})
	return p.res
}

func (p *planner) indexNodes() {
	nodes := make([]*Node, len(p.in.Nodes))
	for i := range p.in.Nodes {
		nodes[i] = &p.in.Nodes[i]
	}
	sort.SliceStable(nodes, func(i, j int) bool { return nodes[i].ID < nodes[j].ID })
	p.idx = make(map[string]int32, len(nodes))
	out := nodes[:0]
	for _, n := range nodes {
		if _, dup := p.idx[n.ID]; dup {
			continue // first in input order wins
		}
		p.idx[n.ID] = int32(len(out))
		out = append(out, n)
	}
	p.nodes = out
	p.used = make([]Resources, len(out))
	p.mark = make([]uint32, len(out))
}

func (p *planner) compile() map[string]*deployment {
	deps := make(map[string]*deployment, len(p.in.Deployments))
	seen := make(map[string]bool, len(p.in.Deployments))
	for _, s := range p.in.Deployments {
		if s == nil {
			continue
		}
		if seen[s.Name] {
			// The first spec of a name decides; later ones are refused.
			p.res.Invalid = append(p.res.Invalid, InvalidDeployment{Name: s.Name,
				Errors: []FieldError{{Field: "name", Reason: fmt.Sprintf("duplicate deployment %q", s.Name)}}})
			continue
		}
		seen[s.Name] = true
		if errs := s.validate(); len(errs) > 0 {
			p.res.Invalid = append(p.res.Invalid, InvalidDeployment{Name: s.Name, Errors: errs})
			continue
		}
		d := &deployment{spec: s, ask: s.Ask(), spreadW: float64(s.SpreadWeight()) / MaxWeight}
		for _, c := range s.Constraints {
			cc, _ := compileConstraint(c)
			d.cons = append(d.cons, cc)
		}
		for _, pr := range s.Preferences {
			cc, _ := compileConstraint(pr.Constraint)
			d.prefs = append(d.prefs, cc)
			d.prefW = append(d.prefW, float64(pr.Weight)/MaxWeight)
		}
		d.slots = make([]int32, s.Count)
		for i := range d.slots {
			d.slots[i] = -1
		}
		d.slotNi = make([]int32, s.Count)
		d.maxGen = make([]uint64, s.Count)
		deps[s.Name] = d
	}
	sort.SliceStable(p.res.Invalid, func(i, j int) bool { return p.res.Invalid[i].Name < p.res.Invalid[j].Name })
	return deps
}

// feasible returns the cached feasibility code of node ni for d.
func (p *planner) feasible(d *deployment, ni int32) uint8 {
	if d.feas == nil {
		d.feas = make([]uint8, len(p.nodes))
	}
	f := d.feas[ni]
	if f != feasUnknown {
		return f
	}
	f = feasOK
	n := p.nodes[ni]
	for i, c := range d.cons {
		if !c.match(n) {
			f = feasFail0 + uint8(i)
			break
		}
	}
	d.feas[ni] = f
	return f
}

// better orders two placements of the same slot: the newest generation
// wins, then the smallest ID and node ID, so the input order never matters.
func better(a, b *Placement) bool {
	if a.Generation != b.Generation {
		return a.Generation > b.Generation
	}
	if a.ID != b.ID {
		return a.ID < b.ID
	}
	return a.NodeID < b.NodeID
}

// reconcile decides which existing placements stay, stops the others and
// accounts the resources of those that stay.
func (p *planner) reconcile(deps map[string]*deployment) {
	pls := p.in.Placements
	// Placements of a deployment whose spec is invalid stay as they are
	// (and keep their resources) until the spec is fixed.
	invalid := make(map[string]bool, len(p.res.Invalid))
	for _, iv := range p.res.Invalid {
		if deps[iv.Name] == nil {
			invalid[iv.Name] = true
		}
	}
	var lastName string
	var last *deployment
	for i := range pls {
		pl := &pls[i]
		d := last
		if pl.Deployment != lastName || last == nil {
			d = deps[pl.Deployment]
			lastName, last = pl.Deployment, d
		}
		ni, known := p.idx[pl.NodeID]
		if d == nil {
			if invalid[pl.Deployment] {
				if known {
					p.used[ni] = p.used[ni].add(pl.Resources)
				}
				continue
			}
			p.stop(pl, StopDeploymentRemoved)
			continue
		}
		if pl.Index >= 0 && pl.Index < len(d.maxGen) && pl.Generation > d.maxGen[pl.Index] {
			d.maxGen[pl.Index] = pl.Generation
		}
		switch {
		case !known:
			p.stop(pl, StopNodeGone)
			continue
		case p.nodes[ni].Status == StatusDown:
			p.stop(pl, StopNodeDown)
			continue
		case !p.nodes[ni].Status.eligible():
			p.stop(pl, StopNodeDraining)
			continue
		case pl.Index < 0 || pl.Index >= len(d.slots):
			p.stop(pl, StopScaleDown)
			continue
		case p.feasible(d, ni) != feasOK:
			p.stop(pl, StopConstraints)
			continue
		}
		cur := d.slots[pl.Index]
		switch {
		case cur < 0:
			d.slots[pl.Index], d.slotNi[pl.Index] = int32(i), ni
		case better(pl, &pls[cur]):
			p.stop(&pls[cur], StopStale)
			d.slots[pl.Index], d.slotNi[pl.Index] = int32(i), ni
		default:
			p.stop(pl, StopStale)
		}
	}
	names := make([]string, 0, len(deps))
	for name := range deps {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		d := deps[name]
		p.stamp++
		for idx, at := range d.slots {
			if at < 0 {
				continue
			}
			pl := &pls[at]
			ni := d.slotNi[idx]
			if d.spec.DistinctHosts {
				if p.mark[ni] == p.stamp {
					p.stop(pl, StopDistinctHosts)
					d.slots[idx] = -1
					continue
				}
				p.mark[ni] = p.stamp
			}
			p.used[ni] = p.used[ni].add(pl.Resources)
		}
	}
}

// missing counts the empty slots of all deployments, to size the plan once.
func (p *planner) missing(deps map[string]*deployment) int {
	n := 0
	for _, d := range deps {
		for _, at := range d.slots {
			if at < 0 {
				n++
			}
		}
	}
	return n
}

func (p *planner) stop(pl *Placement, why StopReason) {
	p.res.Stop = append(p.res.Stop, Stop{Placement: *pl, Reason: why})
}

// cand is a node in a spread bucket, with its static preference score.
type cand struct {
	ni   int32
	pref float64
	hash uint64
}

// bucket holds the candidate nodes sharing one value of the spread
// attribute (or all candidates when there is no spread), best first:
// preference score, then a per-deployment hash of the node ID so that
// deployments start packing on different nodes, then node order.
type bucket struct {
	value   string
	missing bool // nodes lacking the spread attribute: a last resort
	count   int  // instances of the deployment on nodes with this value
	nodes   []cand
	head    int     // nodes[:head] no longer fit
	term    float64 // spread term for the next instance
	bound   float64 // upper bound of any score in the bucket
}

func (b *bucket) live() bool { return b.head < len(b.nodes) }

// placer is the per-deployment placement state.
type placer struct {
	p     *planner
	d     *deployment
	coll  []int32 // instances of the deployment per node
	bkts  []*bucket
	top   []*bucket // scratch: the buckets searched for one instance
	limit int
	blim  int
}

func (p *planner) place(d *deployment) {
	var missing []int
	for idx, at := range d.slots {
		if at < 0 {
			missing = append(missing, idx)
		}
	}
	if len(missing) == 0 {
		return
	}
	pl := p.newPlacer(d)
	name := d.spec.Name
	first := len(p.res.Place)
	defer p.nameInstances(first, name)
	for k, idx := range missing {
		ni := pl.choose()
		if ni < 0 {
			p.res.Pending = append(p.res.Pending, Pending{
				Deployment: name,
				Count:      len(missing) - k,
				Metrics:    pl.metrics(),
			})
			return
		}
		gen := d.maxGen[idx] + 1
		p.used[ni] = p.used[ni].add(d.ask)
		pl.coll[ni]++
		p.res.Place = append(p.res.Place, Placement{
			Deployment: name,
			Index:      idx,
			Generation: gen,
			NodeID:     p.nodes[ni].ID,
			Resources:  d.ask,
		})
	}
}

// nameInstances sets the IDs of the placements made from first on. The IDs
// share one allocation (one per deployment and plan instead of one per
// instance); the price is that a retained ID keeps that block alive.
func (p *planner) nameInstances(first int, name string) {
	placed := p.res.Place[first:]
	if len(placed) == 0 {
		return
	}
	buf := make([]byte, 0, len(placed)*(len(name)+12))
	ends := make([]int, len(placed))
	for i := range placed {
		buf = appendInstanceID(buf, name, placed[i].Index, placed[i].Generation)
		ends[i] = len(buf)
	}
	all, start := string(buf), 0
	for i := range placed {
		placed[i].ID = all[start:ends[i]]
		start = ends[i]
	}
}

func (p *planner) newPlacer(d *deployment) *placer {
	pl := &placer{p: p, d: d, coll: make([]int32, len(p.nodes))}
	var spreadCounts map[string]int
	spread := d.spec.Spread
	if spread != nil {
		spreadCounts = map[string]int{}
	}
	for idx, at := range d.slots {
		if at < 0 {
			continue
		}
		ni := d.slotNi[idx]
		pl.coll[ni]++
		if spread != nil {
			v, _ := p.nodes[ni].Lookup(spread.Attribute)
			spreadCounts[v]++
		}
	}
	byValue := map[string]*bucket{}
	var missingB *bucket
	total := 0
	for i, n := range p.nodes {
		ni := int32(i)
		if !pl.alive(ni) || !n.Status.eligible() || p.feasible(d, ni) != feasOK {
			continue
		}
		b := pl.bucketFor(n, byValue, &missingB, spreadCounts)
		c := cand{ni: ni, hash: hashNode(d.spec.Name, n.ID)}
		for k, pc := range d.prefs {
			if pc.match(n) {
				c.pref += d.prefW[k]
			}
		}
		b.nodes = append(b.nodes, c)
		total++
	}
	for _, b := range byValue {
		pl.bkts = append(pl.bkts, b)
	}
	sort.Slice(pl.bkts, func(i, j int) bool { return pl.bkts[i].value < pl.bkts[j].value })
	if missingB != nil {
		pl.bkts = append(pl.bkts, missingB)
	}
	for _, b := range pl.bkts {
		sort.Slice(b.nodes, func(i, j int) bool {
			x, y := &b.nodes[i], &b.nodes[j]
			if x.pref != y.pref {
				return x.pref > y.pref
			}
			if x.hash != y.hash {
				return x.hash < y.hash
			}
			return x.ni < y.ni
		})
	}
	pl.limit = p.cfg.CandidateLimit
	if pl.limit <= 0 {
		pl.limit = max(2, bits.Len(uint(total)))
	}
	pl.blim = p.cfg.BucketLimit
	if pl.blim <= 0 {
		pl.blim = defaultBucketLimit
	}
	return pl
}

func (pl *placer) bucketFor(n *Node, byValue map[string]*bucket, missingB **bucket, counts map[string]int) *bucket {
	spread := pl.d.spec.Spread
	if spread == nil {
		if len(pl.bkts) == 0 {
			pl.bkts = append(pl.bkts, &bucket{})
		}
		return pl.bkts[0]
	}
	v, ok := n.Lookup(spread.Attribute)
	if !ok {
		if *missingB == nil {
			*missingB = &bucket{missing: true}
		}
		return *missingB
	}
	b := byValue[v]
	if b == nil {
		b = &bucket{value: v, count: counts[v]}
		byValue[v] = b
	}
	return b
}

// hashNode is FNV-1a over the deployment name and node ID: a stable,
// per-deployment pseudo-random order of nodes.
func hashNode(dep, node string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(dep); i++ {
		h = (h ^ uint64(dep[i])) * 1099511628211
	}
	h = (h ^ 0xff) * 1099511628211
	for i := 0; i < len(node); i++ {
		h = (h ^ uint64(node[i])) * 1099511628211
	}
	return h
}

// alive reports whether node ni can take one more instance: enough free
// resources, and no instance of the deployment already if distinct_hosts.
// Both only get worse during a plan, so a node found dead stays dead.
func (pl *placer) alive(ni int32) bool {
	if pl.d.spec.DistinctHosts && pl.coll[ni] > 0 {
		return false
	}
	n := pl.p.nodes[ni]
	return n.Capacity.sub(pl.p.used[ni]).fits(pl.d.ask)
}

// score ranks node ni for the next instance: bin-pack (fuller is better,
// 0..0.5), static preferences (sum of matched weight/100), the bucket's
// spread term and an anti-affinity penalty (0..-0.5) for instances of the
// same deployment already there.
func (pl *placer) score(c *cand, spreadTerm float64) float64 {
	n := pl.p.nodes[c.ni]
	u := pl.p.used[c.ni]
	ask := pl.d.ask
	fit := 0.0
	if n.Capacity.CPUMillis > 0 {
		fit += float64(u.CPUMillis+ask.CPUMillis) / float64(n.Capacity.CPUMillis)
	} else {
		fit++
	}
	if n.Capacity.MemoryMiB > 0 {
		fit += float64(u.MemoryMiB+ask.MemoryMiB) / float64(n.Capacity.MemoryMiB)
	} else {
		fit++
	}
	s := 0.25*fit + c.pref + spreadTerm
	if k := pl.coll[c.ni]; k > 0 {
		s -= 0.5 * float64(k) / float64(k+1)
	}
	return s
}

// rankBuckets computes each live bucket's spread term and upper bound and
// keeps the BucketLimit best bounds in pl.top (ties: bucket order). Values
// at the lowest count get +weight, values above it a penalty growing to
// -weight at the highest count; no preference when all are equal. Nodes
// lacking the attribute always get -weight. It reports whether any bucket
// is live.
func (pl *placer) rankBuckets() bool {
	lo, hi := math.MaxInt, math.MinInt
	for _, b := range pl.bkts {
		if b.live() && !b.missing {
			lo = min(lo, b.count)
			hi = max(hi, b.count)
		}
	}
	pl.top = pl.top[:0]
	for _, b := range pl.bkts {
		if !b.live() {
			continue
		}
		t := 0.0
		switch {
		case pl.d.spec.Spread == nil:
		case b.missing:
			t = -1
		case hi == lo:
		case b.count == lo:
			t = 1
		default:
			t = -float64(b.count-lo) / float64(hi-lo)
		}
		// head's preference is the bucket's best (sorted); 0.5 is the
		// best possible bin-pack term.
		b.term = t * pl.d.spreadW
		b.bound = b.term + b.nodes[b.head].pref + 0.5
		if len(pl.top) == pl.blim && b.bound <= pl.top[len(pl.top)-1].bound {
			continue
		}
		if len(pl.top) < pl.blim {
			pl.top = append(pl.top, b)
		}
		k := len(pl.top) - 1
		for ; k > 0 && pl.top[k-1].bound < b.bound; k-- {
			pl.top[k] = pl.top[k-1]
		}
		pl.top[k] = b
	}
	return len(pl.top) > 0
}

// choose returns the best node for the next instance, or -1. Scanning a
// live bucket either finds a node or empties the bucket for good, so the
// retry loop ends.
func (pl *placer) choose() int32 {
	for pl.rankBuckets() {
		best, bestNi := math.Inf(-1), int32(-1)
		var bestB *bucket
		for _, b := range pl.top {
			if bestNi >= 0 && b.bound <= best {
				break
			}
			if pl.scan(b, b.term, &best, &bestNi) {
				bestB = b
			}
		}
		if bestB != nil {
			bestB.count++
			return bestNi
		}
	}
	return -1
}

// scan scores up to limit fitting nodes from the front of b, dropping the
// nodes that no longer fit (order kept), and reports whether it improved
// best.
func (pl *placer) scan(b *bucket, term float64, best *float64, bestNi *int32) bool {
	improved := false
	i, found, dead := b.head, 0, 0
	for ; i < len(b.nodes) && found < pl.limit; i++ {
		c := &b.nodes[i]
		if !pl.alive(c.ni) {
			dead++
			continue
		}
		found++
		s := pl.score(c, term)
		if s > *best || (s == *best && c.ni < *bestNi) {
			*best, *bestNi = s, c.ni
			improved = true
		}
	}
	if dead > 0 {
		j := i
		for k := i - 1; k >= b.head; k-- {
			if pl.alive(b.nodes[k].ni) {
				j--
				b.nodes[j] = b.nodes[k]
			}
		}
		b.head = j
	}
	return improved
}

// metrics explains, node by node, why nothing more fits.
func (pl *placer) metrics() Metrics {
	p, d := pl.p, pl.d
	m := Metrics{NodesEvaluated: len(p.nodes)}
	for i, n := range p.nodes {
		ni := int32(i)
		if !n.Status.eligible() {
			m.NodesIneligible++
			continue
		}
		if f := p.feasible(d, ni); f != feasOK {
			if m.ConstraintFiltered == nil {
				m.ConstraintFiltered = map[string]int{}
			}
			m.ConstraintFiltered[d.cons[f-feasFail0].key]++
			continue
		}
		if d.spec.DistinctHosts && pl.coll[ni] > 0 {
			m.DistinctHostsFiltered++
			continue
		}
		free := n.Capacity.sub(p.used[ni])
		dim := ""
		switch {
		case free.CPUMillis < d.ask.CPUMillis:
			dim = ExhaustedCPU
		case free.MemoryMiB < d.ask.MemoryMiB:
			dim = ExhaustedMemory
		default:
			continue
		}
		if m.NodesExhausted == nil {
			m.NodesExhausted = map[string]int{}
		}
		m.NodesExhausted[dim]++
	}
	return m
}

// String summarises the metrics on one line for logs and the CLI.
func (m Metrics) String() string {
	s := fmt.Sprintf("%d nodes evaluated", m.NodesEvaluated)
	if m.NodesIneligible > 0 {
		s += fmt.Sprintf(", %d not eligible", m.NodesIneligible)
	}
	for _, k := range sortedIntKeys(m.ConstraintFiltered) {
		s += fmt.Sprintf(", %d filtered by %q", m.ConstraintFiltered[k], k)
	}
	if m.DistinctHostsFiltered > 0 {
		s += fmt.Sprintf(", %d already run an instance (distinct_hosts)", m.DistinctHostsFiltered)
	}
	for _, k := range sortedIntKeys(m.NodesExhausted) {
		s += fmt.Sprintf(", %d out of %s", m.NodesExhausted[k], k)
	}
	return s
}

func sortedIntKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
