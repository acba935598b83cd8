package gossip

import (
	"fmt"
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

// NotifyMsg implements memberlist.Delegate; Colony sends no user messages.
func (d *delegate) NotifyMsg([]byte) {}

// GetBroadcasts implements memberlist.Delegate.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState implements memberlist.Delegate.
func (d *delegate) LocalState(join bool) []byte { return nil }

// MergeRemoteState implements memberlist.Delegate.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {}

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
	meta, err := DecodeMeta(n.Meta)
	g.mu.Lock()
	prev, known := g.members[n.Name]
	if err != nil {
		// NotifyAlive refuses such nodes; this is only reachable for the
		// metadata of a node we already knew, so keep what we had.
		if !known {
			g.mu.Unlock()
			return
		}
		meta = &prev.Meta
	}
	m := &Member{Name: n.Name, Addr: append([]byte(nil), n.Addr...), Port: n.Port, Status: st, Since: time.Now(), Meta: *meta}
	if known && prev.Status == st {
		m.Since = prev.Since
	}
	g.members[n.Name] = m
	g.mu.Unlock()
	if !known || prev.Status != st {
		g.logger.Info("member "+st.String(), "member", n.Name, "addr", m.Address())
	}
	if g.cfg.OnChange != nil {
		g.cfg.OnChange()
	}
}

// NotifyAlive implements memberlist.AliveDelegate: it keeps nodes with
// undecodable metadata or a stolen identity out of this node's view.
func (d *delegate) NotifyAlive(n *memberlist.Node) error {
	g := d.g()
	meta, err := DecodeMeta(n.Meta)
	if err != nil {
		g.ctr.rejected.Add(1)
		return fmt.Errorf("node %q: %w", n.Name, err)
	}
	if err := d.checkIdentity(n.Name, n.Address(), meta); err != nil {
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
		meta, err := DecodeMeta(p.Meta)
		if err != nil {
			// NotifyAlive keeps this one node out when the state is merged;
			// refusing the whole merge would let one bad peer block every join.
			continue
		}
		if err := d.checkIdentity(p.Name, p.Address(), meta); err != nil {
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
// the ID of another live member under a different name.
func (d *delegate) checkIdentity(name, addr string, meta *Meta) error {
	g := d.g()
	g.mu.Lock()
	defer g.mu.Unlock()
	local := g.cfg.Meta.ID
	switch {
	case name == g.cfg.NodeName && meta.ID != local:
		return fmt.Errorf("%w: %q is already used by node %s at %s (this node is %s): give one of them another --node-name", ErrDuplicateName, name, meta.ID, addr, local)
	case name != g.cfg.NodeName && meta.ID == local:
		return fmt.Errorf("%w: node %q at %s already has ID %s, which this node (%q) also has; the data dir was probably copied from another node (e.g. baked into an image)", ErrDuplicateID, name, addr, local, g.cfg.NodeName)
	}
	for other, m := range g.members {
		if other != name && m.Meta.ID == meta.ID && (m.Status == StatusAlive || m.Status == StatusSuspect) {
			return fmt.Errorf("%w: node %q at %s claims ID %s, already used by live node %q at %s", ErrDuplicateID, name, addr, meta.ID, other, m.Address())
		}
	}
	return nil
}

// NotifyConflict implements memberlist.ConflictDelegate.
func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	d.g().logger.Warn("two nodes claim the same name", "node", existing.Name, "existing_addr", existing.Address(), "other_addr", other.Address())
}
