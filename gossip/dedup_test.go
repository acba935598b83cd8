package gossip

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-msgpack/v2/codec"
)

// encodeAlive encodes an alive message as memberlist does: its type byte,
// then the struct in msgpack.
func encodeAlive(t testing.TB, node string, inc uint32) []byte {
	t.Helper()
	buf := bytes.NewBuffer([]byte{wireAlive})
	m := aliveMsg{Incarnation: inc, Node: node, Addr: net.ParseIP("127.2.0.1").To4(), Port: 7946, Meta: []byte("stub12345"), Vsn: []uint8{1, 5, 2, 0, 0, 0}}
	if err := codec.NewEncoder(buf, &codec.MsgpackHandle{}).Encode(&m); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// compound frames parts as memberlist's makeCompoundMessage does, with
// memberlist's CRC header when crc is set.
func compound(crc bool, parts ...[]byte) []byte {
	out := []byte{wireCompound, byte(len(parts))}
	for _, p := range parts {
		out = binary.BigEndian.AppendUint16(out, uint16(len(p)))
	}
	for _, p := range parts {
		out = append(out, p...)
	}
	if crc {
		out = append(binary.BigEndian.AppendUint32([]byte{wireCRC}, crc32.ChecksumIEEE(out)), out...)
	}
	return out
}

// parseCompound undoes compound, checking the CRC; it fails the test on
// anything memberlist would refuse.
func parseCompound(t *testing.T, pkt []byte) [][]byte {
	t.Helper()
	if len(pkt) >= 5 && pkt[0] == wireCRC {
		if crc32.ChecksumIEEE(pkt[5:]) != binary.BigEndian.Uint32(pkt[1:5]) {
			t.Fatalf("bad CRC in %x", pkt)
		}
		pkt = pkt[5:]
	}
	if len(pkt) < 2 || pkt[0] != wireCompound {
		t.Fatalf("not a compound message: %x", pkt)
	}
	n, rest := int(pkt[1]), pkt[2:]
	lens, rest := rest[:2*n], rest[2*n:]
	var parts [][]byte
	for i := range n {
		l := int(binary.BigEndian.Uint16(lens[2*i:]))
		parts, rest = append(parts, rest[:l]), rest[l:]
	}
	if len(rest) != 0 {
		t.Fatalf("%d bytes after the parts", len(rest))
	}
	return parts
}

func TestGossipDedupFilter(t *testing.T) {
	a, b := encodeAlive(t, "c00001", 1), encodeAlive(t, "c00002", 1)
	user := []byte{8, 'r', 'e', 'c'} // a user message (Colony's records) is never dropped
	for _, crc := range []bool{false, true} {
		t.Run(fmt.Sprintf("crc=%v", crc), func(t *testing.T) {
			d := newGossipDedup(time.Second)
			now := time.Unix(1000, 0)
			first := compound(crc, a, user, b)
			if out, n := d.filter(first, now); n != 0 || &out[0] != &first[0] {
				t.Fatalf("first receipt: %d dropped, packet changed", n)
			}
			out, n := d.filter(compound(crc, a, user, b), now)
			if n != 2 {
				t.Fatalf("second receipt: %d dropped, want 2", n)
			}
			if parts := parseCompound(t, out); len(parts) != 1 || !bytes.Equal(parts[0], user) {
				t.Fatalf("kept %q, want the user message alone", parts)
			}
			// A newer incarnation is news; an all-copies packet goes away.
			a2 := encodeAlive(t, "c00001", 2)
			if out, n := d.filter(compound(crc, a2, b), now); n != 1 || !bytes.Equal(parseCompound(t, out)[0], a2) {
				t.Fatalf("new incarnation: %d dropped, kept %x", n, out)
			}
			if out, n := d.filter(compound(crc, a, b, a2), now); out != nil || n != 3 {
				t.Fatalf("all copies: kept %x, %d dropped", out, n)
			}
			// Remembered for one to two generations from the first receipt.
			if _, n := d.filter(compound(crc, a), now.Add(1500*time.Millisecond)); n != 1 {
				t.Fatalf("copy in the next generation: %d dropped", n)
			}
			if _, n := d.filter(compound(crc, a), now.Add(2100*time.Millisecond)); n != 0 {
				t.Fatalf("copy two generations on: %d dropped, want it passed to memberlist", n)
			}
		})
	}

	d := newGossipDedup(time.Second)
	now := time.Unix(1000, 0)
	if out, n := d.filter(a, now); n != 0 || out == nil {
		t.Fatalf("a lone alive message, first: %d dropped", n)
	}
	if out, n := d.filter(a, now); n != 1 || out != nil {
		t.Fatalf("a lone alive message, again: %d dropped", n)
	}
	suspect, dead := []byte{wireSuspect, 0x83, 1}, []byte{wireDead, 0x83, 1}
	if out, n := d.filter(compound(true, suspect, dead, user), now); n != 0 || out == nil {
		t.Fatalf("suspect and dead, first: %d dropped", n)
	}
	if out, n := d.filter(compound(true, suspect, dead, user), now); n != 2 || len(parseCompound(t, out)) != 1 {
		t.Fatalf("suspect and dead, again: %d dropped", n)
	}
	// A cluster label is kept in front of what is left.
	label := []byte{wireLabel, 2, 'c', '1'}
	c1, c2 := encodeAlive(t, "c00003", 1), encodeAlive(t, "c00004", 1)
	if out, n := d.filter(append(label[:4:4], compound(true, c1, c2)...), now); n != 0 || out == nil {
		t.Fatalf("labelled, first: %d dropped", n)
	}
	out, n := d.filter(append(label[:4:4], compound(true, c1, user)...), now)
	if n != 1 || !bytes.Equal(out[:4], label) || !bytes.Equal(parseCompound(t, out[4:])[0], user) {
		t.Fatalf("labelled, again: %d dropped, out %x", n, out)
	}
	if out, n := d.filter(append(label[:4:4], c2...), now); n != 1 || out != nil {
		t.Fatalf("labelled lone copy: %d dropped, out %x", n, out)
	}
	// What it does not read passes as it is, even when it holds a copy.
	bad := compound(true, a)
	bad[1] ^= 0xff
	trunc := compound(false, a, b)
	trunc = trunc[:len(trunc)-1]
	for name, pkt := range map[string][]byte{
		"bad CRC":     bad,
		"truncated":   trunc,
		"compressed":  append([]byte{9}, compound(false, a)...),
		"bad label":   append([]byte{wireLabel, 0}, compound(false, a)...),
		"short label": {wireLabel, 9, 'x'},
		"encrypted":   append([]byte{1}, compound(false, a)...),
		"empty":       {},
		"ping":        {0, 0x80},
		"no count":    {wireCompound},
		"no lengths":  {wireCompound, 3, 0},
	} {
		if out, n := d.filter(pkt, now); n != 0 || !bytes.Equal(out, pkt) {
			t.Errorf("%s: %d dropped, out %x", name, n, out)
		}
	}
}

func FuzzGossipDedup(f *testing.F) {
	a := encodeAlive(f, "c00001", 1)
	f.Add(compound(true, a, []byte{8, 1}))
	f.Add(compound(false, a, a))
	f.Add(a)
	f.Add(append([]byte{wireLabel, 1, 'x'}, compound(true, a, a)...))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		d := newGossipDedup(time.Second)
		now := time.Unix(1000, 0)
		for range 2 {
			out, n := d.filter(pkt, now)
			switch {
			case n == 0 && !bytes.Equal(out, pkt):
				t.Fatalf("nothing dropped but the packet changed: %x -> %x", pkt, out)
			case n > 0 && out != nil:
				if out[0] == wireLabel {
					out = out[2+int(out[1]):]
				}
				parseCompound(t, out) // well formed, CRC included
			}
		}
	})
}

// TestDuplicatesDroppedInCluster: in a real dense cluster (memberlist
// uncompressed) copies of alive messages are recognised and dropped, and
// every member still learns every other.
func TestDuplicatesDroppedInCluster(t *testing.T) {
	const n = 8
	var nodes []*Gossip
	for i := range n {
		cfg := DefaultConfig()
		cfg.NodeName = fmt.Sprintf("d%d", i)
		cfg.BindAddr = fmt.Sprintf("127.2.202.%d", i+1)
		cfg.BindPort = 0
		cfg.Profile = ProfileDense
		cfg.Label = "dedup-test" // labelled packets are read too
		cfg.Meta = Meta{ID: uuid.New(), CPUs: 1, OS: "linux"}
		cfg.Tune = fastTimers
		g, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.Shutdown() })
		nodes = append(nodes, g)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, g := range nodes[1:] {
		if _, err := g.Join(ctx, []string{addr(nodes[0])}, quickRetry()); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, func() error {
		for _, g := range nodes {
			if c := g.CountAlive(); c != n {
				return fmt.Errorf("%s lists %d alive, want %d", g.LocalName(), c, n)
			}
		}
		return nil
	})
	waitFor(t, 10*time.Second, func() error {
		var dropped uint64
		for _, g := range nodes {
			dropped += g.Stats().Duplicates
		}
		if dropped == 0 {
			return fmt.Errorf("no copy of a gossip message dropped")
		}
		t.Logf("%d copies of gossip dropped across %d members", dropped, n)
		return nil
	})
	gone := nodes[n-1]
	_ = gone.Shutdown() // no leave: it has to be found dead
	waitFor(t, 20*time.Second, func() error {
		for _, g := range nodes[:n-1] {
			if err := expect(g, map[string]Status{gone.LocalName(): StatusDead}); err != nil {
				return err
			}
		}
		return nil
	})
}
