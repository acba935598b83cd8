package monitor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
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
	// Re-append the alarm section by hand (the only part the cases mutate).
	b = b[:len(b)-1]
	b = binary.AppendUvarint(b, uint64(len(s.Alarms)))
	for _, al := range s.Alarms {
		b = appendString(b, al.Kind)
		b = appendString(b, al.Subject)
		b = binary.AppendVarint(b, al.Since)
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
		{[]byte{2}, false},                              // unknown version
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
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := DecodeSummary(data, 0)
		if err != nil {
			return
		}
		// Whatever decodes must be valid, re-encode identically and merge
		// without trouble.
		b, err := EncodeSummary(s, 0)
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
