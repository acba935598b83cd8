package gossip

import (
	"encoding/binary"
	"hash/crc32"
	"hash/maphash"
	"time"
)

// memberlist's packet framing (net.go in memberlist v0.7.0; the numbers are
// part of its wire protocol and only ever appended to).
const (
	wireSuspect  = 3   // suspectMsg
	wireAlive    = 4   // aliveMsg
	wireDead     = 5   // deadMsg
	wireCompound = 7   // compoundMsg: count byte, count big-endian uint16 lengths, parts
	wireCRC      = 12  // hasCrcMsg: big-endian CRC-32 (IEEE) of the rest
	wireLabel    = 244 // hasLabelMsg: label length byte, label, then the packet
)

// gossipDedup drops the copies of alive, suspect and dead messages a node
// has already received, before memberlist decodes them.
//
// Every member passes each such message on RetransmitMult·log(N) times, so
// a node receives each one that many times (24 at 1,000 members on the
// dense profile), and a joiner also passes on every member its seed's full
// state taught it. memberlist decodes each copy (msgpack through a fresh
// handle) only to find it tells nothing new: at ~450 agents on one machine
// decoding alive messages was a fifth of all CPU, and in a suspicion storm
// suspect messages took more. A copy is byte-for-byte the same message
// (each relay encodes the same struct), so a hash of its bytes recognises
// it.
//
// Dropping a copy changes nothing memberlist would have done. It ignores an
// alive message whose incarnation is not newer than the one it holds; a
// suspect message it has already applied either finds the suspicion
// confirmed by that sender, or an incarnation since refuted, or a member
// no longer alive; a dead message finds the member dead, or refuted. A copy
// is dropped only while the first is remembered, less than half of
// GossipToTheDeadTime, so memberlist cannot have forgotten (reaped) the
// member in between. The one difference: a member that came back at a new
// address under its old incarnation (memberlist reclaims dead names) is not
// suspected or killed again by a stale copy of the old news.
//
// Only plain packets are read, with or without a cluster label: compressed
// or encrypted ones (a lan cluster compresses) pass through as they are,
// and so does anything malformed, for memberlist to report.
//
// It is used by the one goroutine that reads a transport's socket.
type gossipDedup struct {
	seed      maphash.Seed
	cur, prev map[uint64]struct{}
	gen       time.Duration // a message is remembered for less than 2·gen
	genNo     int64         // the clock's generation number cur belongs to
	parts     [][]byte      // scratch: the parts kept
}

func newGossipDedup(gen time.Duration) *gossipDedup {
	return &gossipDedup{seed: maphash.MakeSeed(), cur: map[uint64]struct{}{}, prev: map[uint64]struct{}{}, gen: gen}
}

// dedupGeneration is how long a generation of remembered messages lasts
// for a memberlist that forgets dead members after gossipToTheDead: a
// quarter of it (so a message is remembered for less than half), at most
// 10 seconds and at least a millisecond.
func dedupGeneration(gossipToTheDead time.Duration) time.Duration {
	return min(max(gossipToTheDead/4, time.Millisecond), 10*time.Second)
}

// filter returns the packet to hand to memberlist (pkt itself when nothing
// was dropped, nil when every message in it was) and how many messages it
// dropped.
func (d *gossipDedup) filter(pkt []byte, now time.Time) ([]byte, int) {
	// Generations follow the clock: what arrived in one is remembered
	// until the next one ends.
	switch no := now.UnixNano() / int64(d.gen); {
	case no == d.genNo+1:
		d.prev, d.cur = d.cur, d.prev
		clear(d.cur)
		d.genNo = no
	case no != d.genNo:
		clear(d.prev)
		clear(d.cur)
		d.genNo = no
	}
	// A cluster label comes first, outside everything else: kept as it is.
	if len(pkt) < 2 || pkt[0] != wireLabel {
		return d.filterPlain(pkt)
	}
	n := 2 + int(pkt[1])
	if pkt[1] == 0 || len(pkt) < n {
		return pkt, 0
	}
	out, dropped := d.filterPlain(pkt[n:])
	switch {
	case dropped == 0:
		return pkt, 0
	case out == nil:
		return nil, dropped
	}
	return append(append(make([]byte, 0, n+len(out)), pkt[:n]...), out...), dropped
}

// filterPlain is filter for a packet without a label.
func (d *gossipDedup) filterPlain(pkt []byte) ([]byte, int) {
	body, crc := pkt, false
	if len(pkt) >= 5 && pkt[0] == wireCRC {
		if crc32.ChecksumIEEE(pkt[5:]) != binary.BigEndian.Uint32(pkt[1:5]) {
			return pkt, 0
		}
		body, crc = pkt[5:], true
	}
	if len(body) < 1 {
		return pkt, 0
	}
	if dedupable(body[0]) {
		if d.seen(body) {
			return nil, 1
		}
		return pkt, 0
	}
	if body[0] != wireCompound || len(body) < 2 {
		return pkt, 0
	}
	n := int(body[1])
	lens, rest := body[2:], body[2:]
	if len(lens) < 2*n {
		return pkt, 0
	}
	rest = rest[2*n:]
	d.parts = d.parts[:0]
	dropped, size := 0, 0
	for i := range n {
		l := int(binary.BigEndian.Uint16(lens[2*i:]))
		if len(rest) < l {
			return pkt, 0 // truncated: memberlist reports it
		}
		part := rest[:l]
		rest = rest[l:]
		if l > 0 && dedupable(part[0]) && d.seen(part) {
			dropped++
			continue
		}
		d.parts = append(d.parts, part)
		size += l
	}
	switch {
	case dropped == 0:
		return pkt, 0
	case len(d.parts) == 0:
		return nil, dropped
	}
	out := make([]byte, 0, 5+2+2*len(d.parts)+size)
	if crc {
		out = append(out, wireCRC, 0, 0, 0, 0)
	}
	start := len(out)
	out = append(out, wireCompound, byte(len(d.parts)))
	for _, p := range d.parts {
		out = binary.BigEndian.AppendUint16(out, uint16(len(p)))
	}
	for _, p := range d.parts {
		out = append(out, p...)
	}
	if crc {
		binary.BigEndian.PutUint32(out[1:5], crc32.ChecksumIEEE(out[start:]))
	}
	return out, dropped
}

// seen reports whether msg was received in this generation or the last,
// and remembers it for the rest of this generation and the next.
func (d *gossipDedup) seen(msg []byte) bool {
	h := maphash.Bytes(d.seed, msg)
	if _, ok := d.cur[h]; ok {
		return true
	}
	if _, ok := d.prev[h]; ok {
		return true // not refreshed: remembered for at most 2·gen from the first
	}
	d.cur[h] = struct{}{}
	return false
}

func dedupable(msgType byte) bool {
	return msgType == wireAlive || msgType == wireSuspect || msgType == wireDead
}
