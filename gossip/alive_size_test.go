package gossip

import (
	"bytes"
	"net"
	"testing"

	"github.com/google/uuid"
	"github.com/hashicorp/go-msgpack/v2/codec"
)

// aliveMsg mirrors memberlist's alive message (memberlist v0.7.0 net.go),
// which memberlist encodes with msgpack and field names after a one-byte
// message type.
type aliveMsg struct {
	Incarnation uint32
	Node        string
	Addr        []byte
	Port        uint16
	Meta        []byte
	Vsn         []uint8
}

func aliveSize(t *testing.T, node string, meta []byte) int {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteByte(0)
	m := aliveMsg{Incarnation: 1, Node: node, Addr: net.ParseIP("127.2.0.1").To4(), Port: 7946, Meta: meta, Vsn: []uint8{1, 5, 2, 0, 0, 0}}
	if err := codec.NewEncoder(&buf, &codec.MsgpackHandle{}).Encode(&m); err != nil {
		t.Fatal(err)
	}
	return buf.Len()
}

// TestAliveMessageSize measures what Colony's metadata adds to every alive
// message, the unit of gossip a join spreads: how many fit in a 1,400-byte
// gossip packet decides how fast a burst of joins spreads (README, scale
// harness). Run with -v for the figures.
func TestAliveMessageSize(t *testing.T) {
	meta := Meta{
		ID: uuid.New(), CPUs: 2, MemoryMiB: 24 << 10, Arch: "amd64", OS: "linux", Kernel: "6.8.0-1019-aws",
		AgentVersion: "dev", APIPort: 7070, RaftAddr: "127.2.0.1:7947",
	}
	plain, err := meta.Encode()
	if err != nil {
		t.Fatal(err)
	}
	meta.Labels = map[string]string{"zone": "eu-west-1a", "rack": "r12", "tier": "web"}
	labelled, err := meta.Encode()
	if err != nil {
		t.Fatal(err)
	}
	bare := aliveSize(t, "b00001", nil)
	colony := aliveSize(t, "c00001", plain)
	withLabels := aliveSize(t, "c00001", labelled)
	compact := aliveSize(t, "c00001", makeStub(meta.ID, labelled))
	// msgpack adds a length prefix of 1-3 bytes to the metadata bytes.
	if d := colony - bare - len(plain); d < 0 || d > 3 {
		t.Fatalf("bare %d bytes, colony %d with %d bytes of metadata", bare, colony, len(plain))
	}
	// A 1,400-byte gossip packet is a compound message: 2 header bytes,
	// then 2 length bytes a message.
	perPacket := func(n int) int { return (1400 - 2) / (n + 2) }
	t.Logf("alive message: bare %d bytes (%d a packet), Colony %d bytes with %d bytes of metadata (%d a packet), %d with 3 labels (%d a packet), compact (dense profile) %d bytes (%d a packet)",
		bare, perPacket(bare), colony, len(plain), perPacket(colony), withLabels, perPacket(withLabels), compact, perPacket(compact))
	// The compact stub is what keeps a dense cluster's joins spreading
	// nearly as fast as bare memberlist's: at most one message a packet
	// fewer in ten.
	if perPacket(compact)*10 < perPacket(bare)*8 {
		t.Errorf("compact alive message %d bytes: %d a packet against bare %d", compact, perPacket(compact), perPacket(bare))
	}
}
