package gossip

import (
	"bytes"
	"io"
	"log"
	"net"
	"strconv"
	"testing"
	"time"
)

// TestTransportPackets: packets read into the transport's one reused
// buffer reach memberlist intact and separate, with their sender, and are
// counted; sends work to ip:port and to a name.
func TestTransportPackets(t *testing.T) {
	recv, err := newCountingTransport("127.0.0.1", 0, log.New(io.Discard, "", 0), &counters{}, nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Shutdown()
	send, err := newCountingTransport("127.0.0.1", 0, log.New(io.Discard, "", 0), &counters{}, nil, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer send.Shutdown()
	port := strconv.Itoa(recv.GetAutoBindPort())
	big := bytes.Repeat([]byte{'b'}, 1400)
	if _, err := send.WriteTo(big, "127.0.0.1:"+port); err != nil {
		t.Fatal(err)
	}
	if _, err := send.WriteTo([]byte("small"), "localhost:"+port); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	var got [][]byte
	for len(got) < 2 {
		select {
		case p := <-recv.PacketCh():
			if a, ok := p.From.(*net.UDPAddr); !ok || a.Port != send.GetAutoBindPort() {
				t.Errorf("packet from %v, want port %d", p.From, send.GetAutoBindPort())
			}
			got = append(got, p.Buf)
		case <-timeout:
			t.Fatalf("received %d of 2 packets", len(got))
		}
	}
	// The first packet must not have been overwritten by the second.
	if !bytes.Equal(got[0], big) || string(got[1]) != "small" {
		t.Errorf("packets not kept apart: %d bytes %q..., then %q", len(got[0]), got[0][:min(8, len(got[0]))], got[1])
	}
	if n := recv.c.udpRecv.Load(); n != uint64(len(big)+len("small")) {
		t.Errorf("counted %d bytes received, want %d", n, len(big)+len("small"))
	}
	if err := recv.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := recv.Shutdown(); err != nil { // idempotent
		t.Fatal(err)
	}
}
