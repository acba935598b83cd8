package antfarm

import (
	"errors"
	"fmt"
	"math/rand/v2"
)

// Instance is an SMTWTP instance: job j takes P[j] time units, weighs W[j]
// and is due at D[j].
type Instance struct {
	P, W, D []int64
}

// Instance limits (they keep every cost well inside int64).
const (
	MaxJobs  = 10000
	maxValue = 1 << 20
)

// N is the number of jobs.
func (in *Instance) N() int { return len(in.P) }

// Validate checks lengths and ranges.
func (in *Instance) Validate() error {
	n := len(in.P)
	if n == 0 || n > MaxJobs {
		return fmt.Errorf("instance has %d jobs, want 1..%d", n, MaxJobs)
	}
	if len(in.W) != n || len(in.D) != n {
		return errors.New("instance: p, w and d must have the same length")
	}
	for j := range n {
		if in.P[j] < 1 || in.P[j] > maxValue || in.W[j] < 0 || in.W[j] > maxValue || in.D[j] < 0 || in.D[j] > maxValue*MaxJobs {
			return fmt.Errorf("instance: job %d has p=%d w=%d d=%d out of range", j, in.P[j], in.W[j], in.D[j])
		}
	}
	return nil
}

// Cost is the total weighted tardiness of processing the jobs in order
// (a permutation of 0..n-1).
func (in *Instance) Cost(order []int) int64 {
	var t, cost int64
	for _, j := range order {
		t += in.P[j]
		if late := t - in.D[j]; late > 0 {
			cost += in.W[j] * late
		}
	}
	return cost
}

// Generate returns a random instance of n jobs in the OR-Library style
// (Crauwels, Potts & Van Wassenhove): p uniform in 1..100, w uniform in
// 1..10, and d uniform in [P(1−TF−RDD/2), P(1−TF+RDD/2)] (floored at 0),
// where P is the total processing time, TF the tardiness factor and RDD the
// relative range of due dates (the library uses 0.2, 0.4, ..., 1.0 for
// both). The same arguments always give the same instance.
func Generate(n int, tf, rdd float64, seed uint64) *Instance {
	rng := rand.New(rand.NewPCG(seed, 0x616e746661726d)) // "antfarm"
	in := &Instance{P: make([]int64, n), W: make([]int64, n), D: make([]int64, n)}
	var total int64
	for j := range n {
		in.P[j] = 1 + rng.Int64N(100)
		total += in.P[j]
	}
	for j := range n {
		in.W[j] = 1 + rng.Int64N(10)
	}
	lo := int64(float64(total) * (1 - tf - rdd/2))
	hi := int64(float64(total) * (1 - tf + rdd/2))
	for j := range n {
		d := lo
		if hi > lo {
			d = lo + rng.Int64N(hi-lo+1)
		}
		in.D[j] = max(d, 0)
	}
	return in
}

// heuristicOrder is the greedy weighted modified due date schedule: at
// each step the job with the largest w / max(p, d − t).
func (in *Instance) heuristicOrder() []int {
	n := in.N()
	order := make([]int, 0, n)
	used := make([]bool, n)
	var t int64
	for range n {
		best, bestV := -1, -1.0
		for j := range n {
			if used[j] {
				continue
			}
			if v := in.eta(j, t); v > bestV {
				best, bestV = j, v
			}
		}
		used[best] = true
		order = append(order, best)
		t += in.P[best]
	}
	return order
}

// eta is the heuristic desirability of scheduling job j at time t.
func (in *Instance) eta(j int, t int64) float64 {
	w := float64(in.W[j])
	if w <= 0 {
		w = 1e-3 // a weightless job must still be scheduled somewhere
	}
	return w / float64(max(in.P[j], in.D[j]-t))
}
