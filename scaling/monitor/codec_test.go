package monitor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func sampleSummary() *Summary {
	s := &Summary{
		Origin: "node-1", Epoch: 3, Seq: 17, Time: 1_700_000_000_000,
		Nodes:     map[string]uint64{"alive": 30, "suspect": 1},
		Workloads: map[string]uint64{"running": 12, "failed": 1},
		Alarms:    []Alarm{{Kind: KindNodeDown, Subject: "node-9", Since: 1_699_999_990_000}},
		Busiest:   []NodeLoad{{"node-7", 97.5, 40.25}, {"node-2", 97.5, 12}, {"node-3", 3.07, 99.99}},
	}
	for i := range 32 {
		s.Observe("cpu_percent", float64(i*3), DimZone("eu-1"), DimLabel("rack", fmt.Sprint(i%4)))
		s.Observe("mem_used_bytes", float64(i)*1e9, DimDeployment("web"))
	}
	return s
}

func TestCodecRoundTrip(t *testing.T) {
	s := sampleSummary()
	b, err := EncodeSummary(s, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("32-node summary with 2 metrics and 7 dimensions: %d bytes", len(b))
	got, err := DecodeSummary(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Origin != s.Origin || got.Seq != s.Seq || got.Epoch != s.Epoch {
		t.Fatalf("header %+v", got)
	}
	if err := sameSummary(s, got); err != nil {
		t.Fatal(err)
	}
	again, _ := EncodeSummary(got, 0)
	if string(again) != string(b) {
		t.Fatal("encoding is not canonical")
	}
}

// TestCodecVersion1 is the rolling upgrade: a node of the previous release
// sends version 1 (no busiest nodes) and a new aggregator still decodes
// it; a new node can speak version 1 to an old parent. Version 1 is the
// current layout without the trailing busiest section.
func TestCodecVersion1(t *testing.T) {
	s := sampleSummary()
	v2, err := EncodeSummary(s, 0)
	if err != nil {
		t.Fatal(err)
	}
	v1, err := EncodeSummaryVersion(s, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if v1[0] != 1 || v2[0] != 2 {
		t.Fatalf("version bytes %d %d", v1[0], v2[0])
	}
	// The version-1 bytes are exactly what the previous release wrote:
	// the shared prefix, and no busiest section.
	if string(v1[1:]) != string(v2[1:len(v1)]) {
		t.Fatal("version 1 layout changed")
	}
	got, err := DecodeSummary(v1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Busiest != nil {
		t.Fatalf("version 1 carried busiest nodes: %v", got.Busiest)
	}
	want := *s
	want.Busiest = nil
	if err := sameSummary(&want, got); err != nil {
		t.Fatal(err)
	}
	if again, _ := EncodeSummaryVersion(got, 1, 0); string(again) != string(v1) {
		t.Fatal("version 1 encoding is not canonical")
	}
	// A v1 summary merges with v2 ones: the busiest list comes from the
	// v2 side only.
	full, _ := DecodeSummary(v2, 0)
	if m := Merge(got, full); len(m.Busiest) != 3 || m.Validate() != nil {
		t.Fatalf("mixed merge: %v %v", m.Busiest, m.Validate())
	}
	// A version-2 busiest section appended to version-1 data is trailing
	// garbage, and versions outside [1, 2] are refused both ways.
	if _, err := DecodeSummary(append([]byte{1}, v2[1:]...), 0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("v1 header with a v2 body: %v", err)
	}
	for _, v := range []byte{0, SummaryVersion + 1} {
		if _, err := EncodeSummaryVersion(s, v, 0); !errors.Is(err, ErrBadVersion) {
			t.Errorf("encode version %d: %v", v, err)
		}
		if _, err := DecodeSummary(append([]byte{v}, v2[1:]...), 0); !errors.Is(err, ErrBadVersion) {
			t.Errorf("decode version %d: %v", v, err)
		}
	}
	// ShrinkVersion keeps to the old layout.
	if b, err := sampleSummary().ShrinkVersion(1, 0); err != nil || string(b) != string(v1) {
		t.Fatalf("shrink to version 1: %v", err)
	}
}

func TestMergeBusiest(t *testing.T) {
	// Twelve children of one aggregator report one node each; any
	// grouping and order of merges keeps exactly the five busiest.
	rng := rand.New(rand.NewPCG(3, 4))
	var kids []*Summary
	for i := range 12 {
		kids = append(kids, &Summary{Busiest: []NodeLoad{{Node: fmt.Sprintf("n%02d", i), CPU: float64(i * 8), Mem: 50}}})
	}
	for range 20 {
		rng.Shuffle(len(kids), func(i, j int) { kids[i], kids[j] = kids[j], kids[i] })
		left, right := &Summary{}, &Summary{}
		for i, k := range kids {
			if i%3 == 0 {
				left = Merge(left, k)
			} else {
				right = Merge(k, right)
			}
		}
		m := Merge(left, right)
		var names []string
		for _, l := range m.Busiest {
			names = append(names, l.Node)
		}
		if got := strings.Join(names, " "); got != "n11 n10 n09 n08 n07" {
			t.Fatalf("busiest %s", got)
		}
		if err := m.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	// Ties on CPU go to memory, then the name; a node reported twice (a
	// failover moment) keeps its busiest reading.
	m := Merge(&Summary{Busiest: []NodeLoad{{"b", 50, 10}, {"a", 40, 0}}}, &Summary{Busiest: []NodeLoad{{"c", 50, 20}, {"a", 45, 1}}})
	want := []NodeLoad{{"c", 50, 20}, {"b", 50, 10}, {"a", 45, 1}}
	if !slices.Equal(m.Busiest, want) {
		t.Fatalf("got %v want %v", m.Busiest, want)
	}
	// Readings a hair apart round to the wire's two decimals before
	// sorting, so the merged list always encodes and decodes.
	m = Merge(&Summary{Origin: "x", Busiest: []NodeLoad{{"p", 50.004, 10}}}, &Summary{Busiest: []NodeLoad{{"q", 50.001, 20}}})
	b, err := EncodeSummary(m, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeSummary(b, 0); err != nil || got.Busiest[0].Node != "q" {
		t.Fatalf("after rounding: %v %v", got, err)
	}
}

func TestCodecRejects(t *testing.T) {
	good, _ := EncodeSummary(sampleSummary(), 0)
	cases := map[string]struct {
		data []byte
		want error
	}{
		"empty":         {nil, ErrMalformed},
		"version":       {append([]byte{9}, good[1:]...), ErrBadVersion},
		"truncated":     {good[:len(good)/2], ErrMalformed},
		"trailing":      {append(append([]byte{}, good...), 0), ErrMalformed},
		"oversized":     {make([]byte, DefaultMaxSummaryBytes+1), ErrOversized},
		"huge list":     {append([]byte{1, 0, 0, 0, 0, 0, 0, 0}, binary.AppendUvarint(nil, 1<<40)...), ErrMalformed},
		"bad flag":      {[]byte{1, 0, 0, 0, 0, 7}, ErrMalformed},
		"long origin":   {append([]byte{1}, binary.AppendUvarint(nil, 5000)...), ErrMalformed},
		"only version":  {[]byte{1}, ErrMalformed},
		"unsorted keys": {encodeRaw(t, func(s *Summary) { s.Alarms = []Alarm{{"b", "x", 0}, {"a", "x", 0}} }), ErrMalformed},
		"too many busiest": {encodeRaw(t, func(s *Summary) {
			for i := range MaxBusiest + 1 {
				s.Busiest = append(s.Busiest, NodeLoad{fmt.Sprintf("n%d", i), float64(100 - i), 0})
			}
		}), ErrMalformed},
		"busiest above 100%": {encodeRaw(t, func(s *Summary) { s.Busiest = []NodeLoad{{"n", 10001, 0}} }), ErrMalformed},
		"busiest unsorted":   {encodeRaw(t, func(s *Summary) { s.Busiest = []NodeLoad{{"a", 100, 0}, {"b", 200, 0}} }), ErrMalformed},
		"busiest twice":      {encodeRaw(t, func(s *Summary) { s.Busiest = []NodeLoad{{"a", 200, 0}, {"a", 100, 0}} }), ErrMalformed},
		"busiest no name":    {encodeRaw(t, func(s *Summary) { s.Busiest = []NodeLoad{{"", 200, 0}} }), ErrMalformed},
		"busiest bad name":   {encodeRaw(t, func(s *Summary) { s.Busiest = []NodeLoad{{"a b", 200, 0}} }), ErrMalformed},
		"busiest huge count": {append(encodeRaw(t, func(*Summary) {})[:len(encodeRaw(t, func(*Summary) {}))-1], binary.AppendUvarint(nil, 1<<40)...), ErrMalformed},
		"busiest truncated":  {encodeRaw(t, func(s *Summary) { s.Busiest = []NodeLoad{{"abc", 200, 0}} })[:len(encodeRaw(t, func(s *Summary) { s.Busiest = []NodeLoad{{"abc", 200, 0}} }))-1], ErrMalformed},
		"busiest bad varint": {append(encodeRaw(t, func(*Summary) {})[:len(encodeRaw(t, func(*Summary) {}))-1], 1, 1, 'a', 0x80, 0x00, 0), ErrMalformed},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeSummary(c.data, 0); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

// encodeRaw encodes a summary bypassing validation, to produce invalid
// wire data.
func encodeRaw(t *testing.T, mutate func(*Summary)) []byte {
	t.Helper()
	s := &Summary{Origin: "n"}
	b, err := EncodeSummary(s, 0)
	if err != nil {
		t.Fatal(err)
	}
	mutate(s)
	// Re-append the alarm and busiest sections by hand (the only parts
	// the cases mutate), percentages as raw hundredths.
	b = b[:len(b)-2]
	b = binary.AppendUvarint(b, uint64(len(s.Alarms)))
	for _, al := range s.Alarms {
		b = appendString(b, al.Kind)
		b = appendString(b, al.Subject)
		b = binary.AppendVarint(b, al.Since)
	}
	b = binary.AppendUvarint(b, uint64(len(s.Busiest)))
	for _, l := range s.Busiest {
		b = appendString(b, l.Node)
		b = binary.AppendUvarint(b, uint64(l.CPU))
		b = binary.AppendUvarint(b, uint64(l.Mem))
	}
	return b
}

func TestValidateRejects(t *testing.T) {
	agg := func(mut func(a *Agg)) *Summary {
		s := &Summary{Origin: "n"}
		s.Observe("cpu", 5)
		s.Observe("cpu", 7)
		mut(s.Metrics["cpu"][DimAll])
		return s
	}
	cases := map[string]*Summary{
		"nan sum":       agg(func(a *Agg) { a.Sum = math.NaN() }),
		"inf max":       agg(func(a *Agg) { a.Max = math.Inf(1) }),
		"min above max": agg(func(a *Agg) { a.Min = 10 }),
		"mean outside":  agg(func(a *Agg) { a.Sum = 1000 }),
		"zero count":    agg(func(a *Agg) { a.Count = 0 }),
		"sketch count":  agg(func(a *Agg) { a.Count = 3 }),
		"bad bucket":    agg(func(a *Agg) { a.Sketch.bins[1] = 1 }),
		"bad name":      {Origin: "n", Nodes: map[string]uint64{"Alive!": 1}},
		"bad origin":    {Origin: "has space"},
		"bad dimension": {Origin: "n", Metrics: map[string]map[string]*Agg{"cpu": {"colour:red": {Count: 1}}}},
		"no dimensions": {Origin: "n", Metrics: map[string]map[string]*Agg{"cpu": {}}},
		"too many alarms": func() *Summary {
			s := &Summary{Origin: "n"}
			for i := range MaxAlarms + 1 {
				s.Alarms = append(s.Alarms, Alarm{Kind: "node_down", Subject: fmt.Sprintf("n%03d", i)})
			}
			return s
		}(),
		"busiest nan":      {Origin: "n", Busiest: []NodeLoad{{"a", math.NaN(), 1}}},
		"busiest negative": {Origin: "n", Busiest: []NodeLoad{{"a", 5, -1}}},
		"busiest over 100": {Origin: "n", Busiest: []NodeLoad{{"a", 100.5, 1}}},
		"busiest no name":  {Origin: "n", Busiest: []NodeLoad{{"", 5, 1}}},
		"busiest unsorted": {Origin: "n", Busiest: []NodeLoad{{"a", 5, 1}, {"b", 6, 1}}},
		"busiest twice":    {Origin: "n", Busiest: []NodeLoad{{"a", 6, 1}, {"a", 5, 1}}},
		"busiest too many": {Origin: "n", Busiest: []NodeLoad{{"a", 6, 1}, {"b", 5, 1}, {"c", 4, 1}, {"d", 3, 1}, {"e", 2, 1}, {"f", 1, 1}}},
		"too many metrics": func() *Summary {
			s := &Summary{Origin: "n", Metrics: map[string]map[string]*Agg{}}
			for i := range MaxMetrics + 1 {
				a := &Agg{}
				a.Add(1)
				s.Metrics[fmt.Sprintf("m%d", i)] = map[string]*Agg{DimAll: a}
			}
			return s
		}(),
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			if err := s.Validate(); !errors.Is(err, ErrInvalidSummary) {
				t.Fatalf("accepted: %v", err)
			}
			if _, err := EncodeSummary(s, 0); err == nil {
				t.Fatal("encoded an invalid summary")
			}
		})
	}
}

func TestShrink(t *testing.T) {
	// A root-level summary with wide distributions in many dimensions
	// does not fit 64 KiB; Shrink makes it fit, dropping detail in order.
	rng := rand.New(rand.NewPCG(8, 9))
	s := &Summary{Origin: "root"}
	for m := range 40 {
		name := fmt.Sprintf("metric_%d", m)
		for i := range 3000 {
			v := math.Exp(rng.NormFloat64() * 3)
			s.Observe(name, v, DimZone(fmt.Sprint(i%10)), DimDeployment(fmt.Sprint(i%20)))
		}
	}
	if _, err := EncodeSummary(s, 0); !errors.Is(err, ErrOversized) {
		t.Fatalf("expected oversized, got %v", err)
	}
	b, err := s.Shrink(DefaultMaxSummaryBytes)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeSummary(b, 0)
	if err != nil || !got.Truncated {
		t.Fatalf("decode after shrink: %v truncated=%v", err, got != nil && got.Truncated)
	}
	a, _ := got.Metric("metric_0", DimAll)
	if _, ok := a.Quantile(0.99); !ok {
		t.Fatal("whole-cluster sketch dropped before breakdowns")
	}
	t.Logf("shrunk to %d bytes", len(b))
}

func TestReceiver(t *testing.T) {
	ms := synthetic(200, 1, 3)
	p := mustPlan(t, ms, DefaultConfig())
	var agg, child, stranger string
	for id, lvl := range p.Levels {
		if lvl == 1 && p.FanIn(id) > 1 {
			agg = id
			break
		}
	}
	child = p.Children(agg)[0]
	for _, m := range ms {
		if parent, _ := p.Parent(m.ID); parent != agg && m.ID != agg {
			stranger = m.ID
			break
		}
	}
	var reasons []string
	r, err := NewReceiver(ReceiverConfig{Self: agg, Monitor: DefaultConfig(), OnReject: func(s string) { reasons = append(reasons, s) }})
	if err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(1_700_000_000_000)
	enc := func(origin string, seq uint64, at time.Time) []byte {
		s := &Summary{Origin: origin, Seq: seq, Time: at.UnixMilli()}
		s.Observe("cpu_percent", 12)
		b, err := EncodeSummary(s, 0)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if _, err := r.Accept(enc(child, 1, now), now); !errors.Is(err, ErrRejected) {
		t.Fatal("accepted before any plan")
	}
	r.SetPlan(p)
	steps := []struct {
		data []byte
		ok   bool
	}{
		{enc(child, 1, now), true},
		{enc(child, 1, now), false},                     // replayed
		{enc(child, 0, now), false},                     // older seq
		{enc(child, 2, now.Add(-time.Hour)), false},     // stale
		{enc(child, 3, now.Add(time.Hour)), false},      // from the future
		{enc(stranger, 5, now), false},                  // not a child
		{[]byte{1, 2, 3}, false},                        // malformed
		{[]byte{SummaryVersion + 1}, false},             // unknown version
		{make([]byte, DefaultMaxSummaryBytes+1), false}, // oversized
		{enc(child, 4, now), true},
	}
	for i, st := range steps {
		_, err := r.Accept(st.data, now)
		if (err == nil) != st.ok {
			t.Fatalf("step %d: err=%v want ok=%v", i, err, st.ok)
		}
	}
	want := map[string]uint64{RejectReplayed: 2, RejectStale: 2, RejectNotMember: 2, RejectMalformed: 1, RejectVersion: 1, RejectOversized: 1}
	got := r.Rejections()
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("rejections %v, want %v", got, want)
		}
	}
	if len(reasons) != 9 {
		t.Fatalf("callback saw %d rejections", len(reasons))
	}

	// With liveness, the dead aggregator's group fails over here.
	parent, _ := p.Parent(agg)
	if parent != "" {
		r2, _ := NewReceiver(ReceiverConfig{Self: agg, Monitor: DefaultConfig(), Alive: func(string) bool { return true }})
		r2.SetPlan(p)
		if _, err := r2.Accept(enc(parent, 1, now), now); !errors.Is(err, ErrRejected) {
			t.Fatal("accepted from own parent")
		}
	}
}

func FuzzDecodeSummary(f *testing.F) {
	good, _ := EncodeSummary(sampleSummary(), 0)
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(good[:len(good)-3])
	f.Add([]byte(strings.Repeat("\xff", 64)))
	empty, _ := EncodeSummary(&Summary{Origin: "x"}, 0)
	f.Add(empty)
	v1, _ := EncodeSummaryVersion(sampleSummary(), 1, 0)
	f.Add(v1)
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := DecodeSummary(data, 0)
		if err != nil {
			return
		}
		// Whatever decodes must be valid, re-encode identically (in its
		// version) and merge without trouble.
		b, err := EncodeSummaryVersion(s, data[0], 0)
		if err != nil {
			t.Fatalf("decoded summary does not re-encode: %v", err)
		}
		if string(b) != string(data) {
			t.Fatal("decoding accepted a non-canonical encoding")
		}
		m := Merge(s, s)
		if err := m.Validate(); err != nil {
			t.Fatalf("self-merge invalid: %v", err)
		}
	})
}
