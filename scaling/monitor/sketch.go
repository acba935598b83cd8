package monitor

import (
	"math"
	"slices"
)

// Quantiles come from a small DDSketch-style log-bucketed histogram written
// here rather than taken from DataDog's sketches-go, because these sketches
// arrive from the network and are merged up a tree:
//   - counts are integers, so merging is exactly associative and
//     commutative (sketches-go keeps float64 bin weights);
//   - the bucket count has a hard bound enforced by construction and by the
//     decoder, and a decoded sketch is a sparse map no larger than that
//     bound (a dense store sized by attacker-chosen indexes could be made
//     to allocate a lot);
//   - the whole thing is ~150 lines with no new dependency or protobuf.
// The collapsing rule (fold the lowest buckets into the lowest kept one)
// is the one sketches-go's CollapsingLowestDenseStore uses.

const (
	// SketchRelativeAccuracy is the relative error of any quantile read
	// from a sketch whose buckets were not collapsed: the answer v' for
	// a true value v satisfies |v'-v| ≤ 2%·|v|.
	SketchRelativeAccuracy = 0.02

	// MaxSketchBuckets bounds a sketch. With 2% accuracy 256 buckets
	// span a factor of about 28,000 between the smallest and largest
	// distinct value; beyond that the lowest buckets are folded
	// together, so low quantiles of very wide distributions read high
	// while p50/p90/p99 stay accurate.
	MaxSketchBuckets = 256

	// minIndexable: magnitudes below this count as zero.
	minIndexable = 1e-9
	// indexOffset shifts log indexes so that positive values get keys
	// > 0, negative values keys < 0 and zero key 0, ordering keys like
	// the values they stand for.
	indexOffset = 1 << 15
	maxIndex    = 1 << 14
)

var (
	sketchGamma    = (1 + SketchRelativeAccuracy) / (1 - SketchRelativeAccuracy)
	sketchLogGamma = math.Log(sketchGamma)
)

// Sketch is a mergeable quantile sketch. The zero value is empty and ready.
type Sketch struct {
	bins map[int32]uint64
}

func sketchKey(v float64) int32 {
	a := math.Abs(v)
	if a < minIndexable {
		return 0
	}
	i := int32(math.Ceil(math.Log(a) / sketchLogGamma))
	i = min(max(i, -maxIndex), maxIndex)
	if v < 0 {
		return -(i + indexOffset)
	}
	return i + indexOffset
}

func validSketchKey(k int32) bool {
	a := k
	if a < 0 {
		a = -a
	}
	return k == 0 || (a >= indexOffset-maxIndex && a <= indexOffset+maxIndex)
}

func sketchValue(k int32) float64 {
	if k == 0 {
		return 0
	}
	sign := 1.0
	if k < 0 {
		sign, k = -1, -k
	}
	i := float64(k - indexOffset)
	return sign * 2 * math.Pow(sketchGamma, i) / (sketchGamma + 1)
}

// Add records one finite value.
func (s *Sketch) Add(v float64) {
	s.addKey(sketchKey(v), 1)
	s.collapse()
}

func (s *Sketch) addKey(k int32, n uint64) {
	if s.bins == nil {
		s.bins = make(map[int32]uint64)
	}
	s.bins[k] += n
}

// Merge adds o's counts into s.
func (s *Sketch) Merge(o *Sketch) {
	for k, n := range o.bins {
		s.addKey(k, n)
	}
	s.collapse()
}

// collapse keeps the MaxSketchBuckets highest buckets and folds all lower
// ones into the lowest kept bucket. The kept set is the top buckets of the
// union whatever the merge order, and folded mass always ends in that
// set's lowest bucket, so collapsing keeps Merge associative.
func (s *Sketch) collapse() {
	if len(s.bins) <= MaxSketchBuckets {
		return
	}
	keys := s.keys()
	cut := len(keys) - MaxSketchBuckets
	floor := keys[cut]
	for _, k := range keys[:cut] {
		s.bins[floor] += s.bins[k]
		delete(s.bins, k)
	}
}

// keys returns the bucket keys in ascending value order.
func (s *Sketch) keys() []int32 {
	keys := make([]int32, 0, len(s.bins))
	for k := range s.bins {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Count is the number of values recorded.
func (s *Sketch) Count() uint64 {
	var n uint64
	for _, c := range s.bins {
		n += c
	}
	return n
}

// Len is the number of non-empty buckets.
func (s *Sketch) Len() int { return len(s.bins) }

// Quantile returns the q-quantile (0 ≤ q ≤ 1) within the relative accuracy,
// and false for an empty sketch.
func (s *Sketch) Quantile(q float64) (float64, bool) {
	total := s.Count()
	if total == 0 || math.IsNaN(q) {
		return 0, false
	}
	q = min(max(q, 0), 1)
	rank := uint64(q * float64(total-1))
	var seen uint64
	keys := s.keys()
	for _, k := range keys {
		seen += s.bins[k]
		if seen > rank {
			return sketchValue(k), true
		}
	}
	return sketchValue(keys[len(keys)-1]), true
}

// Clone returns an independent copy.
func (s *Sketch) Clone() Sketch {
	c := Sketch{}
	if len(s.bins) > 0 {
		c.bins = make(map[int32]uint64, len(s.bins))
		for k, n := range s.bins {
			c.bins[k] = n
		}
	}
	return c
}

// equal reports identical buckets (tests and property checks).
func (s *Sketch) equal(o *Sketch) bool {
	if len(s.bins) != len(o.bins) {
		return false
	}
	for k, n := range s.bins {
		if o.bins[k] != n {
			return false
		}
	}
	return true
}
