package gossip

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
)

// compactMode makes newNode (and the tests that build their own configs)
// gossip compact metadata; TestCompact runs the cluster tests with it.
var compactMode bool

// TestCompact runs the membership and identity tests with every node in
// compact mode: stubs in alive messages, full metadata as records.
func TestCompact(t *testing.T) {
	compactMode = true
	defer func() { compactMode = false }()
	for name, f := range map[string]func(*testing.T){
		"AliveLeftDead":        TestClusterAliveLeftDead,
		"DuplicateID":          TestDuplicateIDRefused,
		"DuplicateName":        TestDuplicateNameRefused,
		"PartitionHeals":       TestPartitionHeals,
		"DeadNodeNewAddress":   TestDeadNodeReturnsAtNewAddress,
		"GarbageMetadata":      TestGarbageMetadataRejected,
		"EncryptionMismatch":   TestEncryptionMismatchDoesNotMerge,
		"MetadataUpdate":       testMetaUpdate,
		"ManyNodesFullRecords": testCompactMany,
	} {
		t.Run(name, f)
	}
}

// TestMetaUpdate: a metadata change (Raft roles) reaches every member.
func TestMetaUpdate(t *testing.T) { testMetaUpdate(t) }

func testMetaUpdate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nodes := []*Gossip{newNode(t, "a", uuid.New(), nil)}
	for _, n := range []string{"b", "c", "d"} {
		g := newNode(t, n, uuid.New(), nil)
		if _, err := g.Join(ctx, []string{addr(nodes[0])}, quickRetry()); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, g)
	}
	m := nodes[2].LocalMeta()
	m.Roles = RoleVoter | RoleLeader
	m.Term = 9
	m.RaftAddr = "127.0.0.1:7947"
	if err := nodes[2].UpdateMeta(m, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, g := range nodes {
		waitFor(t, 10*time.Second, func() error {
			got, ok := g.MemberByName("c")
			if !ok || got.Meta.Roles != RoleVoter|RoleLeader || got.Meta.Term != 9 || got.Meta.RaftAddr != m.RaftAddr || got.Meta.ID != m.ID {
				return fmt.Errorf("%s sees c as %+v", g.LocalName(), got.Meta)
			}
			return nil
		})
	}
}

// testCompactMany: 20 compact nodes joined through one seed each list all
// 20 with their full metadata, and nobody is left pending.
func testCompactMany(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 20
	nodes := []*Gossip{newNode(t, "n00", uuid.New(), nil)}
	for i := 1; i < n; i++ {
		g := newNode(t, fmt.Sprintf("n%02d", i), uuid.New(), nil)
		if _, err := g.Join(ctx, []string{addr(nodes[0])}, quickRetry()); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, g)
	}
	for _, g := range nodes {
		waitFor(t, 20*time.Second, func() error {
			ms := g.Members()
			if len(ms) != n || g.NumAlive() != n {
				return fmt.Errorf("%s lists %d, memberlist %d", g.LocalName(), len(ms), g.NumAlive())
			}
			for _, m := range ms {
				if m.Meta.Labels["zone"] != "z1" || m.Meta.ID == uuid.Nil || m.Status != StatusAlive {
					return fmt.Errorf("%s sees %s as %v %+v", g.LocalName(), m.Name, m.Status, m.Meta)
				}
			}
			g.mu.Lock()
			defer g.mu.Unlock()
			if len(g.pending) != 0 {
				return fmt.Errorf("%s has %d pending", g.LocalName(), len(g.pending))
			}
			return nil
		})
	}
}

// TestMixedModes: a compact node and a full-metadata node see each
// other's metadata (a cluster switching mode by a rolling restart).
func TestMixedModes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	full := newNode(t, "full", uuid.New(), nil)
	compactMode = true
	compact := newNode(t, "compact", uuid.New(), nil)
	compactMode = false
	if _, err := compact.Join(ctx, []string{addr(full)}, quickRetry()); err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]*Gossip{{full, compact}, {compact, full}} {
		waitFor(t, 10*time.Second, func() error {
			m, ok := pair[0].MemberByName(pair[1].LocalName())
			if !ok || m.Meta.ID != pair[1].LocalMeta().ID || m.Meta.Labels["zone"] != "z1" {
				return fmt.Errorf("%s sees %s as %+v", pair[0].LocalName(), pair[1].LocalName(), m)
			}
			return nil
		})
	}
}

func TestStub(t *testing.T) {
	m := sampleMeta()
	full, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	stub := makeStub(m.ID, full)
	if !isStub(stub) || !stubMatches(stub, full) {
		t.Fatalf("stub %x does not match its record", stub)
	}
	if isStub(full) {
		t.Fatal("full metadata taken for a stub")
	}
	if p, err := identityOf(stub); err != nil || p != prefixOf(m.ID) {
		t.Fatalf("identityOf(stub) = %v %v", p, err)
	}
	if p, err := identityOf(full); err != nil || p != prefixOf(m.ID) {
		t.Fatalf("identityOf(full) = %v %v", p, err)
	}
	if _, err := identityOf(full[:len(full)-1]); err == nil {
		t.Fatal("identityOf accepted truncated full metadata")
	}
	m.Term++
	newer, _ := m.Encode()
	if stubMatches(stub, newer) {
		t.Fatal("an older stub matches a newer record")
	}
	other := m
	other.ID = uuid.New()
	o, _ := other.Encode()
	if stubMatches(makeStub(m.ID, newer), o) {
		t.Fatal("a stub matches another node's record")
	}
}

func TestStateRoundTrip(t *testing.T) {
	m := sampleMeta()
	full, _ := m.Encode()
	gone := []goneMember{{Name: "x", Addr: "10.0.0.9", Port: 7946, Status: StatusDead, Since: 5, Meta: full}}
	recs := [][2][]byte{{[]byte("a"), full}, {[]byte("b"), full}}
	for _, c := range []struct {
		gone []goneMember
		recs [][2][]byte
		ver  byte
	}{{gone, nil, goneStateVersion}, {gone, recs, memberStateV2}, {nil, recs, memberStateV2}} {
		b := encodeState(c.gone, c.recs, 0)
		if b[0] != c.ver {
			t.Fatalf("version %d, want %d", b[0], c.ver)
		}
		g2, r2, _, err := decodeState(b)
		if err != nil || len(g2) != len(c.gone) || len(r2) != len(c.recs) {
			t.Fatalf("round trip: %v %v %v", g2, r2, err)
		}
		for i := range r2 {
			if !bytes.Equal(r2[i][0], c.recs[i][0]) || !bytes.Equal(r2[i][1], c.recs[i][1]) {
				t.Fatalf("record %d: %q", i, r2[i])
			}
		}
	}
	if b := encodeState(nil, nil, 0); b != nil {
		t.Fatalf("empty state encoded as %x", b)
	}
}

// FuzzDecodeState: push/pull user state from a peer never panics, and
// what decodes re-encodes to something that decodes the same.
func FuzzDecodeState(f *testing.F) {
	m := sampleMeta()
	full, _ := m.Encode()
	f.Add(encodeState([]goneMember{{Name: "x", Addr: "10.0.0.9", Status: StatusLeft, Meta: full}}, [][2][]byte{{[]byte("a"), full}}, stateOwnFirst))
	f.Add([]byte{2, 0})
	f.Add([]byte{2, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add(encodeRecord("n", full))
	f.Add(encodeWant("n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _, _ = decodeState(b)
		if name, body, err := decodeRecord(b); err == nil && len(name) > maxRecordName {
			t.Fatalf("record name of %d bytes accepted (%d body)", len(name), len(body))
		}
	})
}
