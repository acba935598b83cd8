package gossip

import (
	"bytes"
	"fmt"
	"net"
	"time"
	"unsafe"

	"github.com/hashicorp/memberlist"
)

// delegate implements memberlist's delegate interfaces on a Gossip. The
// methods run with memberlist's internal locks held: they must never call
// back into memberlist.
type delegate Gossip

func (d *delegate) g() *Gossip { return (*Gossip)(d) }

// NodeMeta implements memberlist.Delegate.
func (d *delegate) NodeMeta(limit int) []byte {
	g := d.g()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.meta) > limit {
		// Encode already refuses this; never hand memberlist an oversized value.
		return nil
	}
	return g.meta
}

// NotifyMsg implements memberlist.Delegate: the only user message is a
// member's record (compact metadata); news is gossiped on.
func (d *delegate) NotifyMsg(b []byte) {
	g := d.g()
	name, full, err := decodeRecord(b)
	if err != nil {
		g.ctr.rejected.Add(1)
		return
	}
	if b[0] == wantMsg {
		if len(full) == 0 {
			select {
			case g.wants <- name:
			default: // busy: the asker asks again
			}
		}
		return
	}
	full = append([]byte(nil), full...) // memberlist reuses b
	if g.learnRecord(name, full) {
		g.queueRecord(name, full)
	}
}

// GetBroadcasts implements memberlist.Delegate: records fill the room
// memberlist's own messages leave in a gossip packet.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.g().records.GetBroadcasts(overhead, limit)
}

// LocalState implements memberlist.Delegate. It adds to push/pull syncs
// the dead and left members this node remembers (memberlist forgets them
// and never teaches them to a newcomer, so without this a node that joined
// later would give a different answer to "who is in the cluster"), and the
// records of live members that gossip a stub, this node's own included.
func (d *delegate) LocalState(join bool) []byte {
	g := d.g()
	g.mu.Lock()
	gone := make([]goneMember, 0)
	var records [][2][]byte
	var flags byte
	if own := g.ownRecord(); own != nil {
		records = append(records, [2][]byte{[]byte(g.cfg.NodeName), own})
		flags = stateOwnFirst
	}
	for _, m := range g.members {
		if (m.Status == StatusDead || m.Status == StatusLeft) && len(gone) < maxGoneMembers {
			gone = append(gone, goneMember{Name: m.Name, Addr: m.Addr.String(), Port: m.Port, Status: m.Status, Since: m.Since.Unix(), Meta: m.full})
		} else if m.Name != g.cfg.NodeName && isStub(m.raw) && (m.Status == StatusAlive || m.Status == StatusSuspect) {
			records = append(records, [2][]byte{[]byte(m.Name), m.full})
		}
	}
	g.mu.Unlock()
	return encodeState(gone, records, flags)
}

// MergeRemoteState implements memberlist.Delegate: it learns dead and left
// members this node has never seen, and records. What this node already
// knows of a member (from memberlist itself) always wins.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	if len(buf) == 0 {
		return
	}
	g := d.g()
	gone, records, flags, err := decodeState(buf)
	if err != nil {
		g.logger.Warn("ignoring malformed member state from a peer", "bytes", len(buf), "error", err)
		return
	}
	// Only the peer's own record is gossiped on when it is news (a
	// joiner's record reaching its seed, as memberlist's seed gossips the
	// joiner's alive message): the rest is what the peer already holds,
	// and a joiner would otherwise re-gossip every record in the cluster.
	for i, r := range records {
		if g.learnRecord(string(r[0]), r[1]) && i == 0 && flags&stateOwnFirst != 0 {
			g.queueRecord(string(r[0]), r[1])
		}
	}
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, r := range gone {
		if r.Name == "" || r.Name == g.cfg.NodeName || (r.Status != StatusDead && r.Status != StatusLeft) {
			continue
		}
		if _, known := g.members[r.Name]; known {
			continue
		}
		meta, err := DecodeMeta(r.Meta)
		ip := net.ParseIP(r.Addr)
		since := time.Unix(r.Since, 0)
		if err != nil || ip == nil || since.After(now) || (g.cfg.ReapTimeout > 0 && now.Sub(since) > g.cfg.ReapTimeout) {
			continue
		}
		g.remember(&Member{Name: r.Name, Addr: ip, Port: r.Port, Status: r.Status, Since: since, Meta: *meta, raw: r.Meta})
	}
}

// goneMember is a dead or left member in push/pull user state.
type goneMember struct {
	Name   string `json:"n"`
	Addr   string `json:"a"`
	Port   uint16 `json:"p"`
	Status Status `json:"s"`
	Since  int64  `json:"t"`
	Meta   []byte `json:"m"`
}

const (
	goneStateVersion = 1 // gone members only, as JSON
	maxGoneMembers   = 4096
	maxGoneBytes     = 4 << 20
)

// NotifyJoin implements memberlist.EventDelegate.
func (d *delegate) NotifyJoin(n *memberlist.Node) { d.record(n, StatusAlive) }

// NotifyUpdate implements memberlist.EventDelegate.
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.record(n, StatusAlive) }

// NotifyLeave implements memberlist.EventDelegate: memberlist calls it both
// for failed and for departed nodes; the node state tells which.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	st := StatusDead
	if leftState(n) == memberlist.StateLeft {
		st = StatusLeft
	}
	d.record(n, st)
}

// nodeStateMirror mirrors memberlist v0.7.0's private nodeState, whose first
// field is the Node that NotifyLeave receives a pointer to.
type nodeStateMirror struct {
	memberlist.Node
	Incarnation uint32
	State       memberlist.NodeStateType
	StateChange time.Time
}

// leftState reads the state memberlist has just set for a node it reports
// gone. memberlist v0.7.0 updates nodeState.State ("left" when the node said
// so itself, "dead" when others declared it) but not the embedded
// Node.State it hands to NotifyLeave, so the only record of a graceful leave
// is the enclosing struct. Its one NotifyLeave call site passes &state.Node
// under its node lock, which is held while we read. The go.mod pins
// memberlist, and TestClusterAliveLeftDead fails if the layout moves.
func leftState(n *memberlist.Node) memberlist.NodeStateType {
	st := (*nodeStateMirror)(unsafe.Pointer(n)).State
	if st == memberlist.StateLeft {
		return st
	}
	return memberlist.StateDead
}

func (d *delegate) record(n *memberlist.Node, st Status) {
	g := d.g()
	g.mu.Lock()
	prev, known := g.members[n.Name]
	meta, full, err := g.metaFor(n.Name, n.Meta)
	raw := append([]byte(nil), n.Meta...)
	switch {
	case err == nil:
		g.dropPending(n.Name)
		delete(g.early, n.Name)
	case err == errPending && st == StatusAlive:
		// A stub whose record has not arrived: listed once it does.
		g.setPending(n, st)
	case err == errPending:
		g.dropPending(n.Name)
	}
	if err != nil {
		// NotifyAlive refuses undecodable metadata, so this is a known
		// member with new metadata not decoded yet, or a pending one: keep
		// what we had.
		if !known {
			g.mu.Unlock()
			return
		}
		meta, raw, full = &prev.Meta, prev.raw, prev.full
	}
	g.listAndUnlock(&Member{Name: n.Name, Addr: append([]byte(nil), n.Addr...), Port: n.Port, Status: st, Meta: *meta, raw: raw, full: full})
}

// listAndUnlock puts m in this node's view (keeping the time of the last
// status change while the status holds), releases g.mu, then logs a status
// change and tells OnChange. g.mu must be held.
func (g *Gossip) listAndUnlock(m *Member) {
	prev, known := g.members[m.Name]
	m.Since = time.Now()
	if known && prev.Status == m.Status {
		m.Since = prev.Since
	}
	g.remember(m)
	g.mu.Unlock()
	if !known || prev.Status != m.Status {
		g.logger.Info("member "+m.Status.String(), "member", m.Name, "addr", m.Address())
	}
	if g.cfg.OnChange != nil {
		g.cfg.OnChange()
	}
}

// NotifyAlive implements memberlist.AliveDelegate: it keeps nodes with
// undecodable metadata or a stolen identity out of this node's view.
func (d *delegate) NotifyAlive(n *memberlist.Node) error {
	g := d.g()
	// memberlist asks for every alive message and for every member of
	// every push/pull: a live member already known with the same address
	// and metadata passed these checks when it was first seen. Without
	// this, each push/pull costs O(N) decodes under memberlist's lock.
	g.mu.Lock()
	if m, ok := g.members[n.Name]; ok && (m.Status == StatusAlive || m.Status == StatusSuspect) &&
		m.Port == n.Port && m.Addr.Equal(n.Addr) && m.raw != nil && bytes.Equal(m.raw, n.Meta) {
		g.mu.Unlock()
		return nil
	}
	if p, ok := g.pending[n.Name]; ok && p.port == n.Port && p.addr.Equal(n.Addr) && bytes.Equal(p.stub, n.Meta) {
		g.mu.Unlock()
		return nil
	}
	g.mu.Unlock()
	id, err := identityOf(n.Meta)
	if err != nil {
		g.ctr.rejected.Add(1)
		return fmt.Errorf("node %q: %w", n.Name, err)
	}
	if err := d.checkIdentity(n.Name, n.Address(), id); err != nil {
		g.ctr.rejected.Add(1)
		return err
	}
	return nil
}

// NotifyMerge implements memberlist.MergeDelegate: during a join, both sides
// check the other's members before merging, so a node booted from a copied
// data dir (same ID) or with a taken name never enters the cluster.
func (d *delegate) NotifyMerge(peers []*memberlist.Node) error {
	g := d.g()
	for _, p := range peers {
		if p.State == memberlist.StateDead || p.State == memberlist.StateLeft {
			continue
		}
		id, err := identityOf(p.Meta)
		if err != nil {
			// NotifyAlive keeps this one node out when the state is merged;
			// refusing the whole merge would let one bad peer block every join.
			continue
		}
		if err := d.checkIdentity(p.Name, p.Address(), id); err != nil {
			g.ctr.rejected.Add(1)
			g.mu.Lock()
			if g.conflict == nil {
				g.conflict = err
			}
			g.mu.Unlock()
			return err
		}
	}
	return nil
}

// checkIdentity refuses a live node that claims this node's ID or name, or
// the ID of another live member under a different name. IDs are compared
// by the prefix every alive message carries (compact metadata).
func (d *delegate) checkIdentity(name, addr string, id idPrefix) error {
	g := d.g()
	g.mu.Lock()
	defer g.mu.Unlock()
	local := g.cfg.Meta.ID
	switch {
	case name == g.cfg.NodeName && id != prefixOf(local):
		return fmt.Errorf("%w: %q is already used by node %s at %s (this node is %s): give one of them another --node-name", ErrDuplicateName, name, id, addr, local)
	case name != g.cfg.NodeName && id == prefixOf(local):
		return fmt.Errorf("%w: node %q at %s already has ID %s, which this node (%q) also has; the data dir was probably copied from another node (e.g. baked into an image)", ErrDuplicateID, name, addr, local, g.cfg.NodeName)
	}
	for _, other := range g.byID[id] {
		if other != name && g.live(other) {
			return fmt.Errorf("%w: node %q at %s claims ID %s, already used by live node %q at %s", ErrDuplicateID, name, addr, id, other, g.addressOf(other))
		}
	}
	if m, ok := g.members[name]; ok && prefixOf(m.Meta.ID) != id && g.live(name) && m.Address() != addr {
		return fmt.Errorf("%w: %q at %s has ID %s, but live node %q at %s has ID %s", ErrDuplicateName, name, addr, id, name, m.Address(), m.Meta.ID)
	}
	return nil
}

// live reports whether name is a live member or a live pending one;
// g.mu must be held.
func (g *Gossip) live(name string) bool {
	if m, ok := g.members[name]; ok && (m.Status == StatusAlive || m.Status == StatusSuspect) {
		return true
	}
	p, ok := g.pending[name]
	return ok && p.status == StatusAlive
}

// addressOf is a member's or pending member's gossip address; g.mu must be held.
func (g *Gossip) addressOf(name string) string {
	if m, ok := g.members[name]; ok {
		return m.Address()
	}
	if p, ok := g.pending[name]; ok {
		return net.JoinHostPort(p.addr.String(), fmt.Sprint(p.port))
	}
	return ""
}

// NotifyConflict implements memberlist.ConflictDelegate.
func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	d.g().logger.Warn("two nodes claim the same name", "node", existing.Name, "existing_addr", existing.Address(), "other_addr", other.Address())
}
