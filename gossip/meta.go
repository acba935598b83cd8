package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"sort"

	"github.com/google/uuid"
)

// MetaMaxSize is memberlist's hard limit on node metadata (memberlist.MetaMaxSize).
const MetaMaxSize = 512

// MetaVersion is the wire format version of Meta. A decoder refuses any other
// version: fields that older agents may ignore go into the extension section
// instead, so the version only changes on an incompatible layout change.
const MetaVersion byte = 1

// Length limits keep one node's metadata far below MetaMaxSize even with
// several labels, and bound what a hostile peer can make us allocate.
const (
	maxShortString = 64  // arch, os, agent version
	maxKernel      = 64  // kernel release
	maxLabelKey    = 63  // like a DNS label
	maxLabelValue  = 63  // like a DNS label
	maxLabels      = 32  // far more than fit in 512 bytes anyway
	maxExtensions  = 16  // future fields
	maxExtension   = 256 // bytes of one future field
)

// Extension tags: optional fields appended after the fixed layout. Decoders
// skip tags they do not know, which is how the format grows without breaking
// older agents in a rolling upgrade.
const (
	extAPIPort  uint64 = 1 // uvarint: HTTP API port on the node's gossip address
	extRaftAddr uint64 = 2 // string: host:port of the Raft transport, when the node runs Raft
	extRole     uint64 = 3 // uvarint bit set of Role flags
	extExpect   uint64 = 4 // uvarint: the node's --bootstrap-expect
	extVoters   uint64 = 5 // 16-byte node IDs: the Raft voters a voter knows of
	extTerm     uint64 = 6 // uvarint: the Raft term of a leader
)

// MaxMetaVoters bounds the voter list a node gossips (Colony keeps 3 or 5).
const MaxMetaVoters = 7

// Role flags advertised through gossip so every node can find the leader and
// the voters without running Raft itself.
type Role uint64

// Role bits.
const (
	RoleVoter  Role = 1 << iota // the node is a Raft voter
	RoleLeader                  // the node believes it is the Raft leader
)

// Meta is the compact, versioned description of a node carried in memberlist
// node metadata: identity, detected capabilities and operator labels.
type Meta struct {
	ID           uuid.UUID         // permanent node ID, created on first boot
	CPUs         uint32            // logical CPUs
	MemoryMiB    uint64            // total memory in MiB
	Arch         string            // e.g. amd64
	OS           string            // e.g. linux
	Kernel       string            // kernel release
	AgentVersion string            // colony version
	Labels       map[string]string // operator labels (zone=eu-1)
	APIPort      uint16            // HTTP API port, 0 when unknown
	RaftAddr     string            // Raft transport address, empty when the node runs no Raft
	Roles        Role              // Raft roles this node holds
	// BootstrapExpect is the node's --bootstrap-expect (0: not set), so
	// that nodes booted together agree on who bootstraps Raft.
	BootstrapExpect uint32
	// Voters is the Raft configuration as this node (a voter) knows it, so
	// that nodes without Raft can tell when quorum is lost.
	Voters []uuid.UUID
	// Term is the Raft term of a node holding RoleLeader: when a deposed
	// leader still looks alive, the higher term names the real one.
	Term uint64
}

// ErrMetaTooLarge is returned when encoded metadata exceeds MetaMaxSize.
var ErrMetaTooLarge = errors.New("node metadata too large")

var (
	labelKeyRe   = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9._/-]*[a-zA-Z0-9])?$`)
	labelValueRe = regexp.MustCompile(`^[a-zA-Z0-9._:/-]*$`)
)

// ValidateLabel reports whether k=v is an acceptable label.
func ValidateLabel(k, v string) error {
	if k == "" || len(k) > maxLabelKey || !labelKeyRe.MatchString(k) {
		return fmt.Errorf("label key %q: must be 1-%d characters of letters, digits, '.', '_', '-', '/', starting and ending with a letter or digit", k, maxLabelKey)
	}
	if len(v) > maxLabelValue || !labelValueRe.MatchString(v) {
		return fmt.Errorf("label %q value %q: must be at most %d characters of letters, digits, '.', '_', '-', ':', '/'", k, v, maxLabelValue)
	}
	return nil
}

// Encode returns the wire form of m. It fails with ErrMetaTooLarge (wrapped,
// with the sizes) when the result would not fit in memberlist metadata, and
// on invalid labels or over-long strings.
func (m *Meta) Encode() ([]byte, error) {
	if len(m.Labels) > maxLabels {
		return nil, fmt.Errorf("%d labels: at most %d are allowed", len(m.Labels), maxLabels)
	}
	for _, s := range []struct {
		name, v string
		max     int
	}{{"arch", m.Arch, maxShortString}, {"os", m.OS, maxShortString}, {"kernel", m.Kernel, maxKernel}, {"agent version", m.AgentVersion, maxShortString}, {"raft address", m.RaftAddr, maxExtension}} {
		if len(s.v) > s.max {
			return nil, fmt.Errorf("%s %q: longer than %d bytes", s.name, s.v, s.max)
		}
	}
	b := make([]byte, 0, 128)
	b = append(b, MetaVersion)
	b = append(b, m.ID[:]...)
	b = binary.AppendUvarint(b, uint64(m.CPUs))
	b = binary.AppendUvarint(b, m.MemoryMiB)
	b = appendString(b, m.Arch)
	b = appendString(b, m.OS)
	b = appendString(b, m.Kernel)
	b = appendString(b, m.AgentVersion)
	keys := make([]string, 0, len(m.Labels))
	for k := range m.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	labelStart := len(b)
	for _, k := range keys {
		if err := ValidateLabel(k, m.Labels[k]); err != nil {
			return nil, err
		}
		b = appendString(b, k)
		b = appendString(b, m.Labels[k])
	}
	labelBytes := len(b) - labelStart
	var exts [][]byte
	if m.APIPort != 0 {
		exts = append(exts, appendExt(nil, extAPIPort, binary.AppendUvarint(nil, uint64(m.APIPort))))
	}
	if m.RaftAddr != "" {
		exts = append(exts, appendExt(nil, extRaftAddr, []byte(m.RaftAddr)))
	}
	if m.Roles != 0 {
		exts = append(exts, appendExt(nil, extRole, binary.AppendUvarint(nil, uint64(m.Roles))))
	}
	if m.BootstrapExpect != 0 {
		exts = append(exts, appendExt(nil, extExpect, binary.AppendUvarint(nil, uint64(m.BootstrapExpect))))
	}
	if m.Term != 0 {
		exts = append(exts, appendExt(nil, extTerm, binary.AppendUvarint(nil, m.Term)))
	}
	if len(m.Voters) > MaxMetaVoters {
		return nil, fmt.Errorf("%d voters: at most %d are gossiped", len(m.Voters), MaxMetaVoters)
	}
	if len(m.Voters) > 0 {
		body := make([]byte, 0, 16*len(m.Voters))
		for _, v := range m.Voters {
			body = append(body, v[:]...)
		}
		exts = append(exts, appendExt(nil, extVoters, body))
	}
	b = binary.AppendUvarint(b, uint64(len(exts)))
	for _, e := range exts {
		b = append(b, e...)
	}
	if len(b) > MetaMaxSize {
		return nil, fmt.Errorf("%w: %d bytes, over the %d-byte gossip limit (labels take %d bytes): use fewer or shorter labels", ErrMetaTooLarge, len(b), MetaMaxSize, labelBytes)
	}
	return b, nil
}

// DecodeMeta parses the wire form produced by Encode. It never panics and
// rejects anything malformed, truncated, oversized or of another version.
func DecodeMeta(b []byte) (*Meta, error) {
	if len(b) == 0 {
		return nil, errors.New("empty node metadata")
	}
	if len(b) > MetaMaxSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrMetaTooLarge, len(b))
	}
	if b[0] != MetaVersion {
		return nil, fmt.Errorf("node metadata version %d is not supported (this agent speaks version %d)", b[0], MetaVersion)
	}
	r := reader{b: b[1:]}
	m := &Meta{}
	id := r.bytes(16, "node id")
	if r.err == nil {
		copy(m.ID[:], id)
	}
	cpus := r.uvarint("cpus")
	if cpus > 1<<20 {
		r.fail(fmt.Errorf("cpus %d out of range", cpus))
	}
	m.CPUs = uint32(cpus)
	m.MemoryMiB = r.uvarint("memory")
	m.Arch = r.string(maxShortString, "arch")
	m.OS = r.string(maxShortString, "os")
	m.Kernel = r.string(maxKernel, "kernel")
	m.AgentVersion = r.string(maxShortString, "agent version")
	n := r.uvarint("label count")
	if n > maxLabels {
		r.fail(fmt.Errorf("%d labels: at most %d are allowed", n, maxLabels))
	}
	if r.err == nil && n > 0 {
		m.Labels = make(map[string]string, n)
		for i := uint64(0); i < n && r.err == nil; i++ {
			k := r.string(maxLabelKey, "label key")
			v := r.string(maxLabelValue, "label value")
			if r.err != nil {
				break
			}
			if err := ValidateLabel(k, v); err != nil {
				r.fail(err)
				break
			}
			if _, dup := m.Labels[k]; dup {
				r.fail(fmt.Errorf("label %q appears twice", k))
				break
			}
			m.Labels[k] = v
		}
	}
	next := r.uvarint("extension count")
	if next > maxExtensions {
		r.fail(fmt.Errorf("%d extensions: at most %d are allowed", next, maxExtensions))
	}
	for i := uint64(0); i < next && r.err == nil; i++ {
		tag := r.uvarint("extension tag")
		l := r.uvarint("extension length")
		if l > maxExtension {
			r.fail(fmt.Errorf("extension %d: %d bytes, at most %d", tag, l, maxExtension))
			break
		}
		body := r.bytes(int(l), "extension body")
		if r.err != nil {
			break
		}
		switch tag {
		case extAPIPort:
			p, k := binary.Uvarint(body)
			if k <= 0 || k != len(body) || p == 0 || p > 65535 {
				r.fail(errors.New("extension api port: not a valid port"))
			}
			m.APIPort = uint16(p)
		case extRaftAddr:
			m.RaftAddr = string(body)
		case extRole:
			v, k := binary.Uvarint(body)
			if k <= 0 || k != len(body) {
				r.fail(errors.New("extension roles: malformed"))
			}
			m.Roles = Role(v)
		case extExpect:
			v, k := binary.Uvarint(body)
			if k <= 0 || k != len(body) || v > 1<<16 {
				r.fail(errors.New("extension bootstrap expect: malformed"))
			}
			m.BootstrapExpect = uint32(v)
		case extTerm:
			v, k := binary.Uvarint(body)
			if k <= 0 || k != len(body) {
				r.fail(errors.New("extension term: malformed"))
			}
			m.Term = v
		case extVoters:
			if len(body)%16 != 0 || len(body)/16 > MaxMetaVoters {
				r.fail(errors.New("extension voters: malformed"))
				break
			}
			for i := 0; i < len(body); i += 16 {
				var id uuid.UUID
				copy(id[:], body[i:i+16])
				m.Voters = append(m.Voters, id)
			}
		default:
			// A newer agent's field: skip it.
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("malformed node metadata: %w", r.err)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("malformed node metadata: %d unexpected trailing bytes", len(r.b))
	}
	return m, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendExt(b []byte, tag uint64, body []byte) []byte {
	b = binary.AppendUvarint(b, tag)
	b = binary.AppendUvarint(b, uint64(len(body)))
	return append(b, body...)
}

// reader decodes with a sticky error so the decoder reads straight through.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(fmt.Errorf("%s: truncated or invalid varint", what))
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.fail(fmt.Errorf("%s: truncated", what))
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) string(max int, what string) string {
	l := r.uvarint(what + " length")
	if r.err != nil {
		return ""
	}
	if l > uint64(max) {
		r.fail(fmt.Errorf("%s: %d bytes, at most %d", what, l, max))
		return ""
	}
	return string(r.bytes(int(l), what))
}
