package gossip

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// countingTransport wraps memberlist's NetTransport to count stream bytes in
// both directions (memberlist itself reports only what it sends over TCP).
type countingTransport struct {
	*memberlist.NetTransport
	c        *counters
	drop     func(addr string) bool // fault injection; nil in production
	streamCh chan net.Conn
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

func newCountingTransport(nc *memberlist.NetTransportConfig, c *counters, drop func(string) bool) (*countingTransport, error) {
	// Binding TCP and UDP to the same kernel-chosen port can race with other
	// processes; memberlist retries the same way.
	tries := 1
	if nc.BindPort == 0 {
		tries = 10
	}
	var nt *memberlist.NetTransport
	var err error
	for range tries {
		if nt, err = memberlist.NewNetTransport(nc); err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bind %v port %d: %w", nc.BindAddrs, nc.BindPort, err)
	}
	t := &countingTransport{NetTransport: nt, c: c, drop: drop, streamCh: make(chan net.Conn), stop: make(chan struct{})}
	t.wg.Add(1)
	go t.forwardStreams()
	return t, nil
}

func (t *countingTransport) forwardStreams() {
	defer t.wg.Done()
	in := t.NetTransport.StreamCh()
	for {
		select {
		case conn := <-in:
			select {
			case t.streamCh <- &countingConn{Conn: conn, c: t.c}:
			case <-t.stop:
				conn.Close()
				return
			}
		case <-t.stop:
			return
		}
	}
}

// StreamCh implements memberlist.Transport.
func (t *countingTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// DialTimeout implements memberlist.Transport.
func (t *countingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.drop != nil && t.drop(addr) {
		return nil, fmt.Errorf("dial %s: %w", addr, ErrPartitioned)
	}
	conn, err := t.NetTransport.DialTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: FaultConn(conn, addr, t.drop), c: t.c}, nil
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *countingTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// WriteToAddress implements memberlist.NodeAwareTransport.
func (t *countingTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

// WriteTo implements memberlist.Transport; a partitioned packet is lost
// silently, as on a real network.
func (t *countingTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.drop != nil && t.drop(addr) {
		return time.Now(), nil
	}
	return t.NetTransport.WriteTo(b, addr)
}

// ErrPartitioned is returned for connections a fault-injection hook refuses.
var ErrPartitioned = errors.New("partitioned (fault injection)")

// FaultConn wraps a dialed connection so that a partition that begins while
// it is open also cuts it: each write asks drop about the remote address.
// With drop nil it returns conn unchanged.
func FaultConn(conn net.Conn, addr string, drop func(string) bool) net.Conn {
	if drop == nil {
		return conn
	}
	return &faultConn{Conn: conn, addr: addr, drop: drop}
}

type faultConn struct {
	net.Conn
	addr string
	drop func(string) bool
}

func (f *faultConn) Write(b []byte) (int, error) {
	if f.drop(f.addr) {
		f.Conn.Close()
		return 0, fmt.Errorf("write to %s: %w", f.addr, ErrPartitioned)
	}
	return f.Conn.Write(b)
}

// Shutdown implements memberlist.Transport.
func (t *countingTransport) Shutdown() error {
	err := t.NetTransport.Shutdown()
	t.stopOnce.Do(func() { close(t.stop) })
	t.wg.Wait()
	return err
}

type countingConn struct {
	net.Conn
	c *counters
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.c.tcpRecv.Add(uint64(n))
	return n, err
}

var _ memberlist.NodeAwareTransport = (*countingTransport)(nil)
