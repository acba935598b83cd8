package gossip

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/memberlist"
)

// Compact metadata. memberlist puts a node's metadata in every alive
// message, the unit of gossip a join spreads, and a burst of joins spreads
// as fast as alive messages fit in gossip packets: 21 bare ones fit in a
// 1,400-byte packet, 9 with Colony's ~75 bytes of metadata, and 250 joins
// took 2.3 times as long to converge (a bare memberlist given the same 74
// bytes of metadata took as long as Colony). A node in compact mode (the
// dense profile, or Config.CompactMeta) that holds no Raft role (all but
// the 3 or 5 voters) therefore gossips a 9-byte stub in its alive
// messages: the first 6 bytes of its node ID, enough for the identity
// checks, and a checksum of its full metadata. The full metadata
// (a record) travels separately: in push/pull syncs (so a joiner learns
// every record from its seed, and the seed gossips the joiner's on), and
// as Colony broadcasts that fill the room memberlist's messages leave in
// gossip packets, passed on by every node that learns one as news (a third
// as many sends as memberlist's). A member whose stub has no matching
// record yet is pending: memberlist counts it, Colony's view lists it once
// its record arrives, and one pending for two repair rounds is asked for
// its record directly (repairLoop).
//
// Every node reads stubs and records whatever its own mode, so nodes of
// this release can switch to compact mode by a rolling restart.

// stubSize is the length of compact metadata: the first idBytes bytes of
// the node ID and 3 bytes of a CRC-32 of the full metadata. Full metadata
// is never this short (version byte, 16-byte ID, ...), which is how a
// decoder tells them apart. Each byte counts: 9 bytes make an alive
// message of 71 bytes, 19 to a gossip packet against bare memberlist's 21.
const (
	stubSize = idBytes + 3
	idBytes  = 6
)

// idPrefix is the part of a node ID every alive message carries: what the
// identity checks compare. Two of 10,000 random IDs share one (a false
// duplicate-ID refusal) with probability about 2·10^-7.
type idPrefix uint64

func prefixOf(id uuid.UUID) idPrefix { return prefixBytes(id[:]) }

// prefixBytes reads an ID prefix from the first idBytes bytes of b.
func prefixBytes(b []byte) idPrefix {
	var v uint64
	for _, c := range b[:idBytes] {
		v = v<<8 | uint64(c)
	}
	return idPrefix(v)
}

func (p idPrefix) String() string { return fmt.Sprintf("%012x…", uint64(p)) }

// checksum is the 3 bytes of a record's CRC-32 a stub carries.
func checksum(full []byte) uint32 { return crc32.ChecksumIEEE(full) >> 8 }

// makeStub returns the compact metadata for full, the encoding of meta.
func makeStub(id uuid.UUID, full []byte) []byte {
	b := make([]byte, stubSize)
	copy(b, id[:idBytes])
	c := checksum(full)
	b[idBytes], b[idBytes+1], b[idBytes+2] = byte(c>>16), byte(c>>8), byte(c)
	return b
}

func isStub(b []byte) bool { return len(b) == stubSize }

// stubMatches reports whether full is the record stub stands for.
func stubMatches(stub, full []byte) bool {
	if !isStub(stub) || len(full) <= 1+idBytes || full[0] != MetaVersion || !bytes.Equal(stub[:idBytes], full[1:1+idBytes]) {
		return false
	}
	c := checksum(full)
	return stub[idBytes] == byte(c>>16) && stub[idBytes+1] == byte(c>>8) && stub[idBytes+2] == byte(c)
}

// identityOf returns the ID prefix gossiped metadata carries. It validates
// full metadata completely.
func identityOf(raw []byte) (idPrefix, error) {
	if isStub(raw) {
		return prefixBytes(raw), nil
	}
	m, err := DecodeMeta(raw)
	if err != nil {
		return 0, err
	}
	return prefixOf(m.ID), nil
}

// pendingMember is a member whose stub has no matching record yet.
type pendingMember struct {
	addr   net.IP
	port   uint16
	status Status
	stub   []byte
	since  time.Time // when the stub was first seen
	asked  time.Time // when this node last asked the member for its record
}

// Records limits: what a peer can make this node hold.
const (
	maxRecords    = 1 << 17 // records kept for stubs not yet seen
	maxStateBytes = 64 << 20
	recordMsg     = 1 // user message: a member's record (name, metadata)
	wantMsg       = 2 // user message: a member asks this node for its record (asker's name)
	memberStateV2 = 2 // push/pull user state: gone members and records
	stateOwnFirst = 1 // push/pull state flag: the first record is the sender's own
	maxRecordName = 512
)

var errPending = errors.New("metadata record not received yet")

// metaFor returns the full metadata raw stands for: raw itself decoded,
// or for a stub the matching record (errPending when there is none yet).
// g.mu must be held.
func (g *Gossip) metaFor(name string, raw []byte) (*Meta, []byte, error) {
	if !isStub(raw) {
		m, err := DecodeMeta(raw)
		return m, raw, err
	}
	var full []byte
	if m, ok := g.members[name]; ok && stubMatches(raw, m.full) {
		full = m.full
	} else if e, ok := g.early[name]; ok && stubMatches(raw, e) {
		full = e
	} else {
		return nil, nil, errPending
	}
	m, err := DecodeMeta(full)
	return m, full, err
}

// setPending records that name gossips stub without a known record.
// g.mu must be held.
func (g *Gossip) setPending(n *memberlist.Node, st Status) {
	p, ok := g.pending[n.Name]
	if ok && bytes.Equal(p.stub, n.Meta) && p.status == st {
		p.addr, p.port = append(net.IP(nil), n.Addr...), n.Port
		return
	}
	g.dropPending(n.Name)
	g.pending[n.Name] = &pendingMember{addr: append(net.IP(nil), n.Addr...), port: n.Port, status: st, stub: append([]byte(nil), n.Meta...), since: time.Now()}
	g.index(prefixBytes(n.Meta), n.Name)
	g.recount()
}

// dropPending forgets a pending member; g.mu must be held.
func (g *Gossip) dropPending(name string) {
	if p, ok := g.pending[name]; ok {
		delete(g.pending, name)
		if m, known := g.members[name]; !known || prefixOf(m.Meta.ID) != prefixBytes(p.stub) {
			g.unindexName(prefixBytes(p.stub), name)
		}
		g.recount()
	}
}

// learnRecord takes a member's full metadata from a broadcast or a
// push/pull. It reports whether the record was news (to gossip it on).
func (g *Gossip) learnRecord(name string, full []byte) bool {
	if name == "" || name == g.cfg.NodeName || len(name) > maxRecordName || len(full) > MetaMaxSize {
		return false
	}
	// Most records a node receives are ones it holds already: check that
	// before decoding.
	g.mu.Lock()
	m, known := g.members[name]
	held := known && bytes.Equal(m.full, full)
	g.mu.Unlock()
	if held {
		return false
	}
	meta, err := DecodeMeta(full)
	if err != nil {
		g.ctr.rejected.Add(1)
		return false
	}
	g.mu.Lock()
	m, known = g.members[name]
	p, pending := g.pending[name]
	if !pending || !stubMatches(p.stub, full) {
		// Its alive message is still on its way: keep the record for the
		// stub (an older record of a known member is kept too, and never
		// matches).
		// Only a record of a member not known at all is news to gossip
		// on; one of a known member may still come before its new stub.
		news := false
		if e, ok := g.early[name]; !bytes.Equal(e, full) && (ok || len(g.early) < maxRecords) {
			g.early[name] = append([]byte(nil), full...)
			news = !known
		}
		g.mu.Unlock()
		return news
	}
	g.dropPending(name)
	delete(g.early, name)
	g.listAndUnlock(&Member{Name: name, Addr: p.addr, Port: p.port, Status: p.status, Meta: *meta, raw: p.stub, full: append([]byte(nil), full...)})
	return true
}

// recordBroadcast is one member's record in Colony's broadcast queue; a
// newer record of the same member replaces an older one still queued.
type recordBroadcast struct {
	name string
	msg  []byte
}

func (b *recordBroadcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(*recordBroadcast)
	return ok && ob.name == b.name
}
func (b *recordBroadcast) Name() string    { return "record:" + b.name }
func (b *recordBroadcast) Message() []byte { return b.msg }
func (b *recordBroadcast) Finished()       {}

func encodeRecord(name string, full []byte) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(name)+len(full))
	b = append(b, recordMsg)
	b = appendString(b, name)
	return append(b, full...)
}

func decodeRecord(b []byte) (string, []byte, error) {
	if len(b) == 0 || (b[0] != recordMsg && b[0] != wantMsg) {
		return "", nil, errors.New("not a record message")
	}
	r := reader{b: b[1:]}
	name := r.string(maxRecordName, "record name")
	if r.err != nil {
		return "", nil, r.err
	}
	return name, r.b, nil
}

// queueRecord gossips a record; g.mu must not be held (the queue asks
// for the member count).
func (g *Gossip) queueRecord(name string, full []byte) {
	g.records.QueueBroadcast(&recordBroadcast{name: name, msg: encodeRecord(name, full)})
}

// encodeState is the push/pull user state: gone members (JSON, as in
// version 1) and the records of live members that gossip stubs. Without
// records it is version 1, which older agents read.
//
// Version 2: the version byte, a flags byte (stateOwnFirst: the first
// record is the sender's own), the gone members' JSON with its length,
// then each record as name and metadata, each with its length.
func encodeState(gone []goneMember, records [][2][]byte, flags byte) []byte {
	var gj []byte
	if len(gone) > 0 {
		var err error
		if gj, err = json.Marshal(gone); err != nil {
			gj = nil
		}
	}
	if len(records) == 0 {
		if gj == nil {
			return nil
		}
		return append([]byte{goneStateVersion}, gj...)
	}
	b := []byte{memberStateV2, flags}
	b = binary.AppendUvarint(b, uint64(len(gj)))
	b = append(b, gj...)
	for _, r := range records {
		b = appendString(b, string(r[0]))
		b = binary.AppendUvarint(b, uint64(len(r[1])))
		b = append(b, r[1]...)
	}
	return b
}

// decodeState parses encodeState's output, refusing anything malformed
// or oversized.
func decodeState(buf []byte) (gone []goneMember, records [][2][]byte, flags byte, err error) {
	if len(buf) == 0 {
		return nil, nil, 0, nil
	}
	switch buf[0] {
	case goneStateVersion:
		if len(buf) > maxGoneBytes {
			return nil, nil, 0, fmt.Errorf("%d bytes", len(buf))
		}
		if err := json.Unmarshal(buf[1:], &gone); err != nil {
			return nil, nil, 0, err
		}
	case memberStateV2:
		if len(buf) > maxStateBytes {
			return nil, nil, 0, fmt.Errorf("%d bytes", len(buf))
		}
		r := reader{b: buf[1:]}
		if f := r.bytes(1, "flags"); r.err == nil {
			flags = f[0]
		}
		l := r.uvarint("gone length")
		if l > maxGoneBytes {
			r.fail(fmt.Errorf("gone members: %d bytes", l))
		}
		gj := r.bytes(int(l), "gone members")
		if r.err == nil && len(gj) > 0 {
			if err := json.Unmarshal(gj, &gone); err != nil {
				return nil, nil, 0, err
			}
		}
		for r.err == nil && len(r.b) > 0 {
			name := r.string(maxRecordName, "record name")
			full := r.bytes(int(min(r.uvarint("record length"), MetaMaxSize+1)), "record")
			if r.err == nil && len(full) > MetaMaxSize {
				r.fail(fmt.Errorf("record of %q: %d bytes", name, len(full)))
			}
			if len(records) >= maxRecords {
				r.fail(fmt.Errorf("more than %d records", maxRecords))
			}
			records = append(records, [2][]byte{[]byte(name), full})
		}
		if r.err != nil {
			return nil, nil, 0, r.err
		}
	default:
		return nil, nil, 0, fmt.Errorf("unknown member state version %d", buf[0])
	}
	if len(gone) > maxGoneMembers {
		return nil, nil, 0, fmt.Errorf("%d gone members", len(gone))
	}
	return gone, records, flags, nil
}

// ownRecord is this node's record when it gossips a stub, else nil;
// g.mu must be held.
func (g *Gossip) ownRecord() []byte {
	if m, ok := g.members[g.cfg.NodeName]; ok && isStub(m.raw) {
		return m.full
	}
	if isStub(g.meta) {
		return g.early[g.cfg.NodeName]
	}
	return nil
}

// Record repair: a member pending longer than a few gossip intervals
// missed its record (a record spreads by gossip only from nodes that
// learn it as news, so one a node did not get in a burst of joins may
// never come), so this node asks the member itself, which answers with
// its record. At most repairBatch requests a round, each member asked
// again only after two rounds.
const repairBatch = 32

// repairLoop sends record requests for long-pending members and answers
// the requests NotifyMsg queued (memberlist's handler must not send).
func (g *Gossip) repairLoop(every time.Duration) {
	defer g.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case asker := <-g.wants:
			g.mu.Lock()
			own := g.ownRecord()
			to := g.addressOf(asker)
			g.mu.Unlock()
			if own != nil && to != "" {
				_ = g.ml.SendToAddress(memberlist.Address{Addr: to, Name: asker}, encodeRecord(g.cfg.NodeName, own))
			}
		case <-t.C:
			now := time.Now()
			var ask []memberlist.Address
			g.mu.Lock()
			for name, p := range g.pending {
				if len(ask) >= repairBatch {
					break
				}
				if p.status == StatusAlive && now.Sub(p.since) > 2*every && now.Sub(p.asked) > 2*every {
					p.asked = now
					ask = append(ask, memberlist.Address{Addr: net.JoinHostPort(p.addr.String(), fmt.Sprint(p.port)), Name: name})
				}
			}
			g.mu.Unlock()
			if len(ask) > 0 {
				g.ctr.recordRequests.Add(uint64(len(ask)))
			}
			want := encodeWant(g.cfg.NodeName)
			for _, a := range ask {
				_ = g.ml.SendToAddress(a, want)
			}
		}
	}
}

func encodeWant(asker string) []byte { return appendString([]byte{wantMsg}, asker) }
