package antfarm

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// Config tunes the ant colony system. The defaults are den Besten et al.'s.
type Config struct {
	// Ants is the number of schedules built per iteration.
	Ants int
	// Iterations to run; 0 runs until the context ends (or a zero-cost
	// schedule is found).
	Iterations int
	// Seed makes the run reproducible.
	Seed uint64
	// Beta weighs the heuristic against the pheromone.
	Beta float64
	// Q0 is the probability of taking the best-looking job outright rather
	// than drawing one in proportion to its attractiveness.
	Q0 float64
	// Rho is the global evaporation rate (the best-so-far schedule's pairs
	// get rho/cost).
	Rho float64
	// Xi is the local evaporation rate applied as ants use a pair, which
	// pushes later ants towards other schedules.
	Xi float64
	// LocalSearch polishes every ant's schedule with pairwise interchanges.
	LocalSearch bool
}

// DefaultConfig returns the usual ACS settings with local search on.
func DefaultConfig() Config {
	return Config{Ants: 10, Seed: 1, Beta: 2, Q0: 0.9, Rho: 0.1, Xi: 0.1, LocalSearch: true}
}

// Validate reports every invalid field.
func (c *Config) Validate() error {
	var errs []error
	if c.Ants < 1 || c.Ants > 10000 {
		errs = append(errs, fmt.Errorf("ants %d must be 1..10000", c.Ants))
	}
	if c.Iterations < 0 {
		errs = append(errs, fmt.Errorf("iterations %d must be >= 0 (0: until stopped)", c.Iterations))
	}
	if c.Beta < 0 || c.Beta > 20 || math.IsNaN(c.Beta) {
		errs = append(errs, fmt.Errorf("beta %v must be 0..20", c.Beta))
	}
	for name, v := range map[string]float64{"q0": c.Q0, "rho": c.Rho, "xi": c.Xi} {
		if !(v >= 0 && v <= 1) {
			errs = append(errs, fmt.Errorf("%s %v must be 0..1", name, v))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid antfarm config: %w", errors.Join(errs...))
	}
	return nil
}

// Result is the best schedule found.
type Result struct {
	Order []int // job indexes in processing order
	Cost  int64 // total weighted tardiness of Order
	// Iterations completed.
	Iterations int
	// HeuristicCost is the cost of the weighted modified due date schedule
	// the colony started from.
	HeuristicCost int64
}

// Solve runs the colony on inst and returns the best schedule. progress,
// if not nil, is called after every iteration with the iteration number
// (from 1) and the best cost so far. Solve stops after cfg.Iterations, when
// a schedule of cost 0 is found (nothing can beat it), or when ctx ends; in
// the last case it returns the best schedule so far together with
// ctx.Err().
func Solve(ctx context.Context, inst *Instance, cfg Config, progress func(iter int, best int64)) (Result, error) {
	if err := inst.Validate(); err != nil {
		return Result{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	s := newSolver(inst, cfg)
	res := Result{Order: slices.Clone(s.best), Cost: s.bestCost, HeuristicCost: s.heuristicCost}
	for iter := 1; s.bestCost > 0 && (cfg.Iterations == 0 || iter <= cfg.Iterations); iter++ {
		if err := ctx.Err(); err != nil {
			res.Order, res.Cost = slices.Clone(s.best), s.bestCost
			return res, err
		}
		s.iterate()
		res.Iterations = iter
		if progress != nil {
			progress(iter, s.bestCost)
		}
	}
	res.Order, res.Cost = slices.Clone(s.best), s.bestCost
	return res, nil
}

// solver holds one run's state; every slice is allocated once.
type solver struct {
	in  *Instance
	cfg Config
	n   int
	rng *rand.Rand

	tau  []float64 // tau[i*n+j]: pheromone for job j at position i
	tau0 float64

	best          []int
	bestCost      int64
	heuristicCost int64

	// Per-ant scratch.
	order   []int
	used    []bool
	sum     []float64 // summation rule: pheromone of job j over positions 0..i
	cand    []int
	weights []float64
	done    []int64 // completion times of order (local search)
	pre     []int64 // pre[k]: tardiness cost of positions 0..k-1 (local search)
}

func newSolver(in *Instance, cfg Config) *solver {
	n := in.N()
	s := &solver{
		in: in, cfg: cfg, n: n,
		rng:     rand.New(rand.NewPCG(cfg.Seed, 0x736d74777470)), // "smtwtp"
		tau:     make([]float64, n*n),
		order:   make([]int, n),
		used:    make([]bool, n),
		sum:     make([]float64, n),
		cand:    make([]int, 0, n),
		weights: make([]float64, n),
		done:    make([]int64, n),
		pre:     make([]int64, n+1),
	}
	s.best = in.heuristicOrder()
	s.bestCost = in.Cost(s.best)
	s.heuristicCost = s.bestCost
	if cfg.LocalSearch {
		copy(s.order, s.best)
		s.bestCost = s.localSearch(s.order)
		copy(s.best, s.order)
	}
	// τ0 = 1/(n·T_heuristic), as in ACS; T=0 means Solve stops at once.
	s.tau0 = 1 / (float64(n) * float64(max(s.bestCost, 1)))
	for i := range s.tau {
		s.tau[i] = s.tau0
	}
	return s
}

// iterate lets every ant build (and polish) a schedule, keeps the best and
// reinforces it.
func (s *solver) iterate() {
	for range s.cfg.Ants {
		s.construct()
		cost := s.in.Cost(s.order)
		if s.cfg.LocalSearch {
			cost = s.localSearch(s.order)
		}
		if cost < s.bestCost {
			s.bestCost = cost
			copy(s.best, s.order)
		}
	}
	// Global update on the best-so-far schedule only.
	deposit := s.cfg.Rho / float64(max(s.bestCost, 1))
	for i, j := range s.best {
		p := &s.tau[i*s.n+j]
		*p = (1-s.cfg.Rho)*(*p) + deposit
	}
}

// construct builds one ant's schedule into s.order.
func (s *solver) construct() {
	n := s.n
	clear(s.used)
	clear(s.sum)
	var t int64
	for i := range n {
		row := s.tau[i*n : (i+1)*n]
		s.cand = s.cand[:0]
		total, bestV, bestJ := 0.0, -1.0, -1
		for j := range n {
			if s.used[j] {
				continue
			}
			// Summation rule: a job that should have come earlier keeps
			// the pheromone of the earlier positions.
			s.sum[j] += row[j]
			v := s.sum[j] * s.pow(s.in.eta(j, t))
			s.cand = append(s.cand, j)
			s.weights[len(s.cand)-1] = v
			total += v
			if v > bestV {
				bestV, bestJ = v, j
			}
		}
		pick := bestJ
		if s.rng.Float64() >= s.cfg.Q0 && total > 0 {
			r := s.rng.Float64() * total
			for k, j := range s.cand {
				r -= s.weights[k]
				if r <= 0 {
					pick = j
					break
				}
			}
		}
		s.used[pick] = true
		s.order[i] = pick
		t += s.in.P[pick]
		// Local update: wear the trail so other ants explore.
		row[pick] = (1-s.cfg.Xi)*row[pick] + s.cfg.Xi*s.tau0
	}
}

func (s *solver) pow(x float64) float64 {
	switch s.cfg.Beta {
	case 0:
		return 1
	case 1:
		return x
	case 2:
		return x * x
	}
	return math.Pow(x, s.cfg.Beta)
}

// localSearch applies improving pairwise interchanges (first improvement)
// until none is left and returns the cost. Swapping positions a < b only
// changes the completion times of positions a..b, so a candidate swap is
// priced on that segment alone: the old segment cost comes from prefix
// sums of the tardiness per position, and pricing the new one stops as
// soon as it is no better (costs only add up).
func (s *solver) localSearch(order []int) int64 {
	n := s.n
	s.prefix(order, 0)
	for improved := true; improved; {
		improved = false
		for a := 0; a < n-1; a++ {
			for b := a + 1; b < n; b++ {
				if s.improves(order, a, b) {
					order[a], order[b] = order[b], order[a]
					s.prefix(order, a)
					improved = true
				}
			}
		}
	}
	return s.pre[n]
}

// prefix recomputes completion times and tardiness prefix sums from
// position from on.
func (s *solver) prefix(order []int, from int) {
	in, done, pre := s.in, s.done, s.pre
	var t int64
	if from > 0 {
		t = done[from-1]
	}
	for k := from; k < s.n; k++ {
		j := order[k]
		t += in.P[j]
		done[k] = t
		pre[k+1] = pre[k] + in.W[j]*max(t-in.D[j], 0)
	}
}

// improves reports whether swapping positions a < b lowers the cost.
func (s *solver) improves(order []int, a, b int) bool {
	in := s.in
	before := s.pre[b+1] - s.pre[a]
	if before == 0 {
		return false
	}
	var t int64
	if a > 0 {
		t = s.done[a-1]
	}
	// O(1) lower bound first: the two swapped jobs alone (the segment
	// still ends at done[b]; the jobs in between cost >= 0).
	ja, jb := order[a], order[b]
	if in.W[jb]*max(t+in.P[jb]-in.D[jb], 0)+in.W[ja]*max(s.done[b]-in.D[ja], 0) >= before {
		return false
	}
	var after int64
	for k := a; k <= b; k++ {
		j := order[k]
		switch k {
		case a:
			j = order[b]
		case b:
			j = order[a]
		}
		t += in.P[j]
		if after += in.W[j] * max(t-in.D[j], 0); after >= before {
			return false
		}
	}
	return true
}
