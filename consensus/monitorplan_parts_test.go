package consensus

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"colony/scaling/monitor"
)

// uuidMembers returns n alive members with UUID-shaped IDs (as agents
// have) over 10 zones, the first 5 being voters.
func uuidMembers(n int) []monitor.Member {
	r := rand.New(rand.NewPCG(uint64(n), 7))
	ms := make([]monitor.Member, n)
	for i := range ms {
		a, b := r.Uint64(), r.Uint64()
		ms[i] = monitor.Member{
			ID:    fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", a>>32, a>>16&0xffff, a&0xfff, b>>48&0xfff, b&0xffffffffffff),
			Zone:  fmt.Sprintf("zone-%d", i%10),
			Voter: i < 5,
			Alive: true,
		}
	}
	return ms
}

func planJSON(t testing.TB, n int) json.RawMessage {
	t.Helper()
	p, err := monitor.ComputePlan(uuidMembers(n), monitor.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	p.Version = 7
	raw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// smallParts splits raw like MonitorPlanCommands but into slices of size
// bytes, so that FSM tests get many parts from a small plan.
func smallParts(t *testing.T, raw []byte, stage uint64, size int) []*SetMonitorPlanPart {
	t.Helper()
	data := deflate(t, raw)
	var out []*SetMonitorPlanPart
	total := (len(data) + size - 1) / size
	for seq := range total {
		out = append(out, &SetMonitorPlanPart{Stage: stage, Seq: seq, Total: total, Data: data[seq*size : min(len(data), (seq+1)*size)]})
	}
	return out
}

func deflate(t *testing.T, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.BestSpeed)
	_, _ = w.Write(raw)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// planFSM applies commands at consecutive indexes from 1.
type planFSM struct {
	t   *testing.T
	fsm *FSM
}

func newPlanFSM(t *testing.T) *planFSM { return &planFSM{t: t, fsm: NewFSM(NewState(), nil)} }

func (p *planFSM) apply(c Command) error {
	p.t.Helper()
	r := p.fsm.Apply(&raft.Log{Index: p.fsm.State().Index() + 1, Data: mustEncode(p.t, c)}).(ApplyResult)
	return r.Err
}

func (p *planFSM) mustApply(c Command) {
	p.t.Helper()
	if err := p.apply(c); err != nil {
		p.t.Fatalf("apply %s: %v", c.CommandType(), err)
	}
}

func (p *planFSM) wantPlan(raw []byte, at uint64) {
	p.t.Helper()
	got, gotAt, idx := p.fsm.State().MonitorPlan()
	if !bytes.Equal(got, raw) || gotAt != at || idx != max(at, 1) {
		p.t.Fatalf("plan of %d bytes at %d (table %d), want %d bytes at %d", len(got), gotAt, idx, len(raw), at)
	}
}

func (p *planFSM) wantRefused(c Command, msg string) {
	p.t.Helper()
	err := p.apply(c)
	if err == nil || !strings.Contains(err.Error(), msg) {
		p.t.Fatalf("apply %s: %v, want an error with %q", c.CommandType(), err, msg)
	}
}

func TestMonitorPlanPartsInOrder(t *testing.T) {
	small := planJSON(t, 40)
	big := planJSON(t, 300)
	f := newPlanFSM(t)
	f.mustApply(&SetMonitorPlan{Plan: small})
	parts := smallParts(t, big, 42, 1000)
	if len(parts) < 3 {
		t.Fatalf("%d parts, want several", len(parts))
	}
	for i, p := range parts {
		// Other writes between the parts change nothing.
		f.mustApply(&SetSetting{Key: "k", Value: fmt.Sprint(i)})
		f.mustApply(p)
		if i < len(parts)-1 {
			f.wantPlan(small, 1) // the old plan stays in force
			if stage, staged, total := f.fsm.State().MonitorPlanStaging(); stage != 42 || staged != i+1 || total != len(parts) {
				t.Fatalf("staging %x %d/%d after part %d", stage, staged, total, i)
			}
		}
	}
	f.wantPlan(big, f.fsm.State().Index())
	if stage, _, _ := f.fsm.State().MonitorPlanStaging(); stage != 0 {
		t.Fatalf("staging %x left after the plan was installed", stage)
	}
	// A single part is a whole plan too.
	one := smallParts(t, small, 43, MaxMonitorPlanPartBytes)
	if len(one) != 1 {
		t.Fatalf("%d parts", len(one))
	}
	f.mustApply(one[0])
	f.wantPlan(small, f.fsm.State().Index())
}

func TestMonitorPlanPartsMissingAndStale(t *testing.T) {
	small, big := planJSON(t, 40), planJSON(t, 300)
	f := newPlanFSM(t)
	f.mustApply(&SetMonitorPlan{Plan: small})
	a := smallParts(t, big, 0xa, 1000)
	f.wantRefused(a[1], "no staging in progress")
	f.mustApply(a[0])
	f.wantRefused(a[2], "part 2 arrived, part 1 expected")
	f.wantRefused(a[0].withSeq(len(a)-1), "expected")
	f.wantPlan(small, 1)
	f.mustApply(a[1])
	f.wantRefused(&SetMonitorPlanPart{Stage: 0xa, Seq: 2, Total: a[2].Total + 1, Data: a[2].Data}, "total")

	// A new leader starts stage b over: a's later parts are refused.
	b := smallParts(t, big, 0xb, 700)
	f.mustApply(b[0])
	f.wantRefused(a[2], "stage b is in progress")
	for _, p := range b[1:] {
		f.mustApply(p)
	}
	f.wantPlan(big, f.fsm.State().Index())
	f.wantRefused(a[len(a)-1], "no staging in progress")
	f.wantPlan(big, f.fsm.State().Index()-1)

	// A complete plan ends a staging in progress.
	f.mustApply(a[0])
	f.mustApply(&SetMonitorPlan{Plan: small})
	f.wantRefused(a[1], "no staging in progress")
}

func (p *SetMonitorPlanPart) withSeq(seq int) *SetMonitorPlanPart {
	c := *p
	c.Seq = seq
	return &c
}

func TestMonitorPlanPartsGarbage(t *testing.T) {
	data := []byte("x")
	for _, c := range []struct {
		part SetMonitorPlanPart
		msg  string
	}{
		{SetMonitorPlanPart{Stage: 0, Seq: 0, Total: 1, Data: data}, "stage id is 0"},
		{SetMonitorPlanPart{Stage: 1, Seq: 0, Total: 0, Data: data}, "total 0 parts"},
		{SetMonitorPlanPart{Stage: 1, Seq: 0, Total: MaxMonitorPlanParts + 1, Data: data}, "total 65 parts"},
		{SetMonitorPlanPart{Stage: 1, Seq: -1, Total: 2, Data: data}, "part -1 of 2 out of range"},
		{SetMonitorPlanPart{Stage: 1, Seq: 2, Total: 2, Data: data}, "part 2 of 2 out of range"},
		{SetMonitorPlanPart{Stage: 1, Seq: 0, Total: 2}, "empty"},
		{SetMonitorPlanPart{Stage: 1, Seq: 0, Total: 2, Data: make([]byte, MaxMonitorPlanPartBytes+1)}, "more than"},
	} {
		_, err := EncodeCommand(&c.part)
		if !errors.Is(err, ErrInvalidCommand) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%+v: %v, want %q", c.part, err, c.msg)
		}
	}
	for _, body := range []string{
		`{"stage":1,"seq":0,"total":1,"data":"not base64!"}`,
		`{"stage":1,"seq":0,"total":1,"data":"eA==","plan":"x"}`,
		`{"stage":-1,"seq":0,"total":1,"data":"eA=="}`,
		`{"stage":1,"seq":0,"total":1}`,
	} {
		if c, err := DecodeCommand(append([]byte{CommandFormatV1, byte(CmdSetMonitorPlanPart)}, body...)); !errors.Is(err, ErrInvalidCommand) || c != nil {
			t.Errorf("%s: %v, %v", body, c, err)
		}
	}

	// Last parts whose assembly is not a plan are refused, never installed,
	// and drop the staging.
	small := planJSON(t, 40)
	f := newPlanFSM(t)
	f.mustApply(&SetMonitorPlan{Plan: small})
	bomb := deflate(t, make([]byte, MaxMonitorPlanBytes+10))
	for _, c := range []struct {
		data []byte
		msg  string
	}{
		{[]byte("not deflate at all"), "inflate plan"},
		{deflate(t, small)[:20], "inflate plan"},
		{deflate(t, []byte(`{"root":"x","parents":{"y":"z"}}`)), "invalid monitoring plan"},
		{deflate(t, []byte(`[1,2]`)), "plan: json"},
		{bomb, "inflates past"},
	} {
		f.wantRefused(&SetMonitorPlanPart{Stage: 5, Seq: 0, Total: 1, Data: c.data}, c.msg)
		if stage, _, _ := f.fsm.State().MonitorPlanStaging(); stage != 0 {
			t.Fatalf("staging %x kept after a refused plan", stage)
		}
		f.wantPlan(small, 1)
	}
	if _, err := MonitorPlanCommands(json.RawMessage(`{"root":"x","parents":{"y":"z"}}`)); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("a broken plan was split: %v", err)
	}
}

func snapshotBytes(t *testing.T, fsm *FSM) []byte {
	t.Helper()
	snap, err := fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

func restored(t *testing.T, b []byte) *planFSM {
	t.Helper()
	f := newPlanFSM(t)
	if err := f.fsm.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestMonitorPlanPartsSnapshot: a voter restored from a snapshot taken
// between two parts must finish the plan like the voters that applied
// every part, and a snapshot without staging reads as before.
func TestMonitorPlanPartsSnapshot(t *testing.T) {
	small, big := planJSON(t, 40), planJSON(t, 300)
	f := newPlanFSM(t)
	f.mustApply(&SetMonitorPlan{Plan: small})
	parts := smallParts(t, big, 0xc, 900)
	f.mustApply(parts[0])
	f.mustApply(parts[1])
	mid := snapshotBytes(t, f.fsm)
	if !bytes.Contains(mid, []byte(`"staging":{"stage":12,"total":`)) {
		t.Fatalf("snapshot without the staging: %.300s", mid)
	}
	// Applying after a snapshot must not change what it holds.
	f.mustApply(parts[2])
	if again := snapshotBytes(t, restored(t, mid).fsm); !bytes.Equal(again, mid) {
		t.Fatal("the snapshot changed after it was taken")
	}
	g := restored(t, mid)
	g.wantPlan(small, 1)
	for _, p := range parts[2:] {
		g.mustApply(p)
	}
	for _, p := range parts[3:] {
		f.mustApply(p)
	}
	g.wantPlan(big, g.fsm.State().Index())
	f.wantPlan(big, f.fsm.State().Index())
	if !bytes.Equal(snapshotBytes(t, f.fsm), snapshotBytes(t, g.fsm)) {
		t.Fatal("the restored voter's state differs from the others'")
	}

	after := snapshotBytes(t, f.fsm)
	if bytes.Contains(after, []byte(`"staging"`)) {
		t.Fatal("snapshot holds a finished staging")
	}
	restored(t, after).wantPlan(big, f.fsm.State().Index())

	// A snapshot whose staging is not consistent is refused.
	for _, bad := range []string{`"stage":0,`, `"next":0,`, `"next":99,`} {
		b := bytes.Replace(mid, []byte(`"stage":12,`), []byte(bad), 1)
		if bad != `"stage":0,` {
			b = bytes.Replace(mid, []byte(`"next":2,`), []byte(bad), 1)
		}
		if bytes.Equal(b, mid) {
			t.Fatalf("%s: nothing replaced", bad)
		}
		if err := NewFSM(NewState(), nil).Restore(io.NopCloser(bytes.NewReader(b))); err == nil || !strings.Contains(err.Error(), "staging") {
			t.Fatalf("%s: restore gave %v", bad, err)
		}
	}
}

func TestMonitorPlanCommandsSplit(t *testing.T) {
	small := planJSON(t, 40)
	cmds, err := MonitorPlanCommands(small)
	if err != nil || len(cmds) != 1 || cmds[0].CommandType() != CmdSetMonitorPlan {
		t.Fatalf("a small plan gave %d commands (%v)", len(cmds), err)
	}
	big := planJSON(t, 10000)
	cmds, err = MonitorPlanCommands(big)
	if err != nil {
		t.Fatal(err)
	}
	f := newPlanFSM(t)
	stage := cmds[0].(*SetMonitorPlanPart).Stage
	for i, c := range cmds {
		p := c.(*SetMonitorPlanPart)
		if p.Stage != stage || p.Seq != i || p.Total != len(cmds) {
			t.Fatalf("part %d: %x %d/%d", i, p.Stage, p.Seq, p.Total)
		}
		b := mustEncode(t, c)
		if len(b) > MaxCommandSize {
			t.Fatalf("part %d encodes to %d bytes", i, len(b))
		}
		back, err := DecodeCommand(b)
		if err != nil || !bytes.Equal(mustEncode(t, back), b) {
			t.Fatalf("part %d round trip: %v", i, err)
		}
		f.mustApply(back)
	}
	f.wantPlan(big, uint64(len(cmds)))
}

// TestCommitMonitorPlanLarge commits 10,000- and 20,000-node plans on a
// real single-voter node, reads them back byte-identical, and again after
// a restart (the parts replayed from the log).
func TestCommitMonitorPlanLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("large plans")
	}
	cfg := testConfig("plan-a", t.TempDir())
	n := startNode(t, cfg)
	if err := n.BootstrapSelf(); err != nil {
		t.Fatal(err)
	}
	waitLeader(t, n)
	var last json.RawMessage
	for _, size := range []int{10000, 20000} {
		raw := planJSON(t, size)
		if len(raw) <= MaxCommandSize {
			t.Fatalf("%d nodes: %d bytes would fit one command", size, len(raw))
		}
		start := time.Now()
		idx, parts, err := n.CommitMonitorPlan(ctxT(t), raw)
		if err != nil {
			t.Fatalf("%d nodes: %v", size, err)
		}
		got, at, tbl := n.State().MonitorPlan()
		if !bytes.Equal(got, raw) || at != idx || tbl != idx {
			t.Fatalf("%d nodes: read back %d bytes at %d (table %d), committed %d bytes at %d", size, len(got), at, tbl, len(raw), idx)
		}
		t.Logf("%d nodes: plan %d bytes, %d parts, committed in %v", size, len(raw), parts, time.Since(start))
		last = raw
	}
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	n2 := startNode(t, cfg)
	waitLeader(t, n2)
	waitFor(t, waitLong, func() error {
		if got, _, _ := n2.State().MonitorPlan(); !bytes.Equal(got, last) {
			return fmt.Errorf("after restart: plan of %d bytes, want %d", len(got), len(last))
		}
		return nil
	})
}

// BenchmarkCommitMonitorPlan commits a whole plan on a single fsync'd
// voter, as the leader does when the tree changes.
func BenchmarkCommitMonitorPlan(b *testing.B) {
	for _, size := range []int{1000, 10000, 20000} {
		b.Run(fmt.Sprintf("nodes=%d", size), func(b *testing.B) {
			raw := planJSON(b, size)
			cmds, err := MonitorPlanCommands(raw)
			if err != nil {
				b.Fatal(err)
			}
			sent := 0
			for _, c := range cmds {
				enc, _ := EncodeCommand(c)
				sent += len(enc)
			}
			n := benchVoter(b)
			ctx := context.Background()
			b.ResetTimer()
			for b.Loop() {
				if _, _, err := n.CommitMonitorPlan(ctx, raw); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(raw)), "plan-bytes")
			b.ReportMetric(float64(sent), "log-bytes")
			b.ReportMetric(float64(len(cmds)), "commands")
		})
	}
}
