package monitor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
)

// SummaryVersion is the first byte of every encoded summary, the version
// EncodeSummary writes. A receiver refuses versions it does not know
// instead of guessing, and decodes every older one, so nodes of two
// releases can share a tree during a rolling upgrade.
//
//	1: the original layout
//	2: adds the busiest nodes after the alarms
const SummaryVersion byte = 2

// MinSummaryVersion is the oldest version still decoded and encodable.
const MinSummaryVersion byte = 1

// DefaultMaxSummaryBytes is the default encoded size limit (64 KiB).
const DefaultMaxSummaryBytes = 64 << 10

// Sentinel errors callers branch on (the Receiver counts them by reason).
var (
	ErrOversized  = errors.New("summary too large")
	ErrMalformed  = errors.New("malformed summary")
	ErrBadVersion = errors.New("unknown summary version")
)

// The binary layout (version 1), all integers as varints, floats as 8 bytes
// little-endian, strings as uvarint length + bytes, every keyed list sorted
// strictly ascending (so a summary has exactly one encoding and duplicate
// keys are impossible):
//
//	version byte
//	origin string, epoch uvarint, seq uvarint, time varint, truncated byte
//	node states: count, then (name, uvarint)…
//	workload states: count, then (name, uvarint)…
//	metrics: count, then per metric: name, dimension count, then per dimension:
//	    key string, count uvarint, sum, min, max float64,
//	    buckets uvarint, then first key varint + count, then (key delta uvarint, count)…
//	alarms: count, then (kind, subject, since varint)…
//	busiest (version 2 on): count, then (node, cpu, mem)…, percentages as
//	    uvarint hundredths (0–10000)
//
// Sketch keys are delta-encoded, so a typical bucket costs 2–3 bytes.

// EncodeSummary validates s and returns its canonical encoding, or
// ErrOversized if it exceeds maxBytes (≤ 0 means DefaultMaxSummaryBytes);
// Shrink first to fit.
func EncodeSummary(s *Summary, maxBytes int) ([]byte, error) {
	return EncodeSummaryVersion(s, SummaryVersion, maxBytes)
}

// EncodeSummaryVersion encodes s in an older layout, for a parent that
// refused the current one (version 1 drops the busiest nodes).
func EncodeSummaryVersion(s *Summary, version byte, maxBytes int) ([]byte, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxSummaryBytes
	}
	if version < MinSummaryVersion || version > SummaryVersion {
		return nil, fmt.Errorf("%w: cannot encode version %d", ErrBadVersion, version)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	b := []byte{version}
	b = appendString(b, s.Origin)
	b = binary.AppendUvarint(b, s.Epoch)
	b = binary.AppendUvarint(b, s.Seq)
	b = binary.AppendVarint(b, s.Time)
	if s.Truncated {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = appendCounts(b, s.Nodes)
	b = appendCounts(b, s.Workloads)
	b = binary.AppendUvarint(b, uint64(len(s.Metrics)))
	for _, name := range sortedKeys(s.Metrics) {
		dims := s.Metrics[name]
		b = appendString(b, name)
		b = binary.AppendUvarint(b, uint64(len(dims)))
		for _, d := range sortedKeys(dims) {
			a := dims[d]
			b = appendString(b, d)
			b = binary.AppendUvarint(b, a.Count)
			b = appendFloat(b, a.Sum)
			b = appendFloat(b, a.Min)
			b = appendFloat(b, a.Max)
			keys := a.Sketch.keys()
			b = binary.AppendUvarint(b, uint64(len(keys)))
			for i, k := range keys {
				if i == 0 {
					b = binary.AppendVarint(b, int64(k))
				} else {
					b = binary.AppendUvarint(b, uint64(k-keys[i-1]))
				}
				b = binary.AppendUvarint(b, a.Sketch.bins[k])
			}
		}
	}
	b = binary.AppendUvarint(b, uint64(len(s.Alarms)))
	for _, al := range s.Alarms {
		b = appendString(b, al.Kind)
		b = appendString(b, al.Subject)
		b = binary.AppendVarint(b, al.Since)
	}
	if version >= 2 {
		// Re-sorted after rounding: two nodes a hair apart may swap.
		busiest := mergeBusiest(s.Busiest, nil)
		b = binary.AppendUvarint(b, uint64(len(busiest)))
		for _, l := range busiest {
			b = appendString(b, l.Node)
			b = binary.AppendUvarint(b, hundredths(l.CPU))
			b = binary.AppendUvarint(b, hundredths(l.Mem))
		}
	}
	if len(b) > maxBytes {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrOversized, len(b), maxBytes)
	}
	return b, nil
}

// DecodeSummary parses and validates an encoded summary. It never panics
// and allocates at most a small multiple of len(data): every count is
// checked against the limits and the bytes left before anything is
// allocated.
func DecodeSummary(data []byte, maxBytes int) (*Summary, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxSummaryBytes
	}
	if len(data) > maxBytes {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrOversized, len(data), maxBytes)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrMalformed)
	}
	version := data[0]
	if version < MinSummaryVersion || version > SummaryVersion {
		return nil, fmt.Errorf("%w: %d", ErrBadVersion, version)
	}
	r := &reader{b: data[1:]}
	s := &Summary{}
	s.Origin = r.str(MaxValueLen)
	s.Epoch = r.uvarint()
	s.Seq = r.uvarint()
	s.Time = r.varint()
	switch r.byte() {
	case 0:
	case 1:
		s.Truncated = true
	default:
		r.fail("bad truncated flag")
	}
	s.Nodes = r.counts()
	s.Workloads = r.counts()
	if n := r.length(MaxMetrics, 2); n > 0 {
		s.Metrics = make(map[string]map[string]*Agg, n)
		prev := ""
		for i := range n {
			name := r.str(MaxNameLen)
			if i > 0 && name <= prev {
				r.fail("metrics unsorted")
			}
			prev = name
			nd := r.length(MaxDimensions, 30)
			dims := make(map[string]*Agg, nd)
			prevDim := ""
			for j := range nd {
				d := r.str(MaxValueLen)
				if j > 0 && d <= prevDim {
					r.fail("dimensions unsorted")
				}
				prevDim = d
				a := &Agg{Count: r.uvarint(), Sum: r.float(), Min: r.float(), Max: r.float()}
				nb := r.length(MaxSketchBuckets, 2)
				var key int64
				for l := range nb {
					if l == 0 {
						key = r.varint()
					} else {
						delta := r.uvarint()
						if delta == 0 || delta > 4*indexOffset {
							r.fail("bad bucket delta")
						}
						key += int64(delta)
					}
					if key < math.MinInt32 || key > math.MaxInt32 {
						r.fail("bucket key out of range")
					}
					n := r.uvarint()
					if r.err != nil {
						break
					}
					a.Sketch.addKey(int32(key), n)
				}
				dims[d] = a
			}
			s.Metrics[name] = dims
		}
	}
	if n := r.length(MaxAlarms, 3); n > 0 {
		s.Alarms = make([]Alarm, 0, n)
		for range n {
			s.Alarms = append(s.Alarms, Alarm{Kind: r.str(MaxNameLen), Subject: r.str(MaxSubjectLen), Since: r.varint()})
		}
	}
	if version >= 2 {
		if n := r.length(MaxBusiest, 3); n > 0 {
			s.Busiest = make([]NodeLoad, 0, n)
			for range n {
				s.Busiest = append(s.Busiest, NodeLoad{Node: r.str(MaxValueLen), CPU: r.percent(), Mem: r.percent()})
			}
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("trailing bytes")
	}
	if r.err != nil {
		return nil, r.err
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return s, nil
}

// Shrink drops detail until the encoding fits maxBytes: sketches of label,
// deployment and zone breakdowns first, then those breakdowns, then the
// remaining sketches, then the busiest nodes, then alarms. It sets
// Truncated when it drops anything and returns the encoding.
func (s *Summary) Shrink(maxBytes int) ([]byte, error) {
	return s.ShrinkVersion(SummaryVersion, maxBytes)
}

// ShrinkVersion is Shrink for an older wire version.
func (s *Summary) ShrinkVersion(version byte, maxBytes int) ([]byte, error) {
	b, err := EncodeSummaryVersion(s, version, maxBytes)
	if !errors.Is(err, ErrOversized) {
		return b, err
	}
	steps := []func(){
		func() { s.dropDims(dimLabelPrefix, true) },
		func() { s.dropDims(dimDeploymentPrefix, true) },
		func() { s.dropDims(dimZonePrefix, true) },
		func() { s.dropDims(dimLabelPrefix, false) },
		func() { s.dropDims(dimDeploymentPrefix, false) },
		func() { s.dropDims(dimZonePrefix, false) },
		func() { s.dropDims(DimAll, true) },
		func() { s.Busiest = nil },
		func() { s.Alarms = nil },
	}
	for _, step := range steps {
		step()
		s.Truncated = true
		b, err = EncodeSummaryVersion(s, version, maxBytes)
		if !errors.Is(err, ErrOversized) {
			return b, err
		}
	}
	return nil, err
}

// dropDims removes the sketches (sketchOnly) or whole aggregates of the
// dimensions starting with prefix.
func (s *Summary) dropDims(prefix string, sketchOnly bool) {
	for _, dims := range s.Metrics {
		for d, a := range dims {
			if len(d) < len(prefix) || d[:len(prefix)] != prefix {
				continue
			}
			if sketchOnly {
				a.Sketch = Sketch{}
			} else {
				delete(dims, d)
			}
		}
	}
	for name, dims := range s.Metrics {
		if len(dims) == 0 {
			delete(s.Metrics, name)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendFloat(b []byte, f float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
}

// hundredths quantises a validated percentage for the wire.
func hundredths(p float64) uint64 { return uint64(math.Round(p * 100)) }

func appendCounts(b []byte, m map[string]uint64) []byte {
	b = binary.AppendUvarint(b, uint64(len(m)))
	for _, k := range sortedKeys(m) {
		b = appendString(b, k)
		b = binary.AppendUvarint(b, m[k])
	}
	return b
}

// reader is a sticky-error cursor: after the first error every read
// returns zero values, so the decoder reads straight through and checks
// once.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(msg string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrMalformed, msg)
	}
	r.b = nil
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.fail("truncated")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || n != uvarintLen(v) {
		r.fail("bad uvarint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 || n != varintLen(v) {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) float() float64 {
	if r.err != nil || len(r.b) < 8 {
		r.fail("truncated float")
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(r.b))
	r.b = r.b[8:]
	return v
}

// percent reads a percentage in hundredths, refusing more than 100%.
func (r *reader) percent() float64 {
	v := r.uvarint()
	if v > 10000 {
		r.fail("percentage above 100")
		return 0
	}
	return float64(v) / 100
}

func (r *reader) str(limit int) string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(limit) || n > uint64(len(r.b)) {
		r.fail("string too long")
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// uvarintLen and varintLen give the minimal encoding length: overlong
// varints are refused so that every summary has exactly one encoding.
func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func varintLen(v int64) int {
	u := uint64(v) << 1
	if v < 0 {
		u = ^u
	}
	return uvarintLen(u)
}

// length reads a list length, refusing more than limit entries or more
// than the bytes left could hold at minBytes each.
func (r *reader) length(limit, minBytes int) int {
	n := r.uvarint()
	if r.err != nil {
		return 0
	}
	if n > uint64(limit) || n*uint64(minBytes) > uint64(len(r.b)) {
		r.fail("list too long")
		return 0
	}
	return int(n)
}

func (r *reader) counts() map[string]uint64 {
	n := r.length(MaxStates, 2)
	if n == 0 {
		return nil
	}
	m := make(map[string]uint64, n)
	prev := ""
	for i := range n {
		k := r.str(MaxNameLen)
		if i > 0 && k <= prev {
			r.fail("states unsorted")
		}
		prev = k
		m[k] = r.uvarint()
	}
	return m
}
