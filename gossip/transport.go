package gossip

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// countingTransport is Colony's memberlist transport: UDP for packets, TCP
// for streams, as memberlist's NetTransport, plus byte counters in both
// directions (memberlist itself reports only what it sends) and the fault
// hook. It replaces NetTransport rather than wrapping it because
// NetTransport allocates a fresh 64 KiB buffer for every UDP packet it
// receives: in a join storm of hundreds of members per machine that was
// most of the bytes allocated, and the garbage collection it caused the
// largest single cost. Here one buffer per socket is reused and each packet
// is copied out at its own size (gossip packets are at most ~1.4 KB).
type countingTransport struct {
	c        *counters
	drop     func(addr string) bool // fault injection; nil in production
	logger   *log.Logger
	bindIP   net.IP
	tcp      *net.TCPListener
	udp      *net.UDPConn
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	dedup    *gossipDedup // owned by readPackets
}

const (
	// udpReadBuf is the largest UDP datagram accepted.
	udpReadBuf = 65536
	// udpSocketBuf is the kernel receive buffer asked for (halved until
	// the kernel accepts it), as memberlist's NetTransport does.
	udpSocketBuf = 2 << 20
)

// dedupGen is how long each generation of gossipDedup remembers a message
// (see dedupGeneration).
func newCountingTransport(bindAddr string, bindPort int, logger *log.Logger, c *counters, drop func(string) bool, dedupGen time.Duration) (*countingTransport, error) {
	ip := net.ParseIP(bindAddr)
	if ip == nil {
		return nil, fmt.Errorf("bind address %q is not an IP address", bindAddr)
	}
	// Binding TCP and UDP to the same kernel-chosen port can race with other
	// processes: retry with another port.
	tries := 1
	if bindPort == 0 {
		tries = 10
	}
	var tcp *net.TCPListener
	var udp *net.UDPConn
	var err error
	for range tries {
		if tcp, err = net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: bindPort}); err != nil {
			break
		}
		port := tcp.Addr().(*net.TCPAddr).Port
		if udp, err = net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port}); err == nil {
			break
		}
		_ = tcp.Close()
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bind %s port %d: %w", bindAddr, bindPort, err)
	}
	for size := udpSocketBuf; size > 0; size /= 2 {
		if udp.SetReadBuffer(size) == nil {
			break
		}
	}
	t := &countingTransport{
		c: c, drop: drop, logger: logger, bindIP: ip, tcp: tcp, udp: udp,
		packetCh: make(chan *memberlist.Packet), streamCh: make(chan net.Conn), stop: make(chan struct{}),
		dedup: newGossipDedup(dedupGen),
	}
	t.wg.Add(2)
	go t.acceptStreams()
	go t.readPackets()
	return t, nil
}

// GetAutoBindPort is the port bound (the same for TCP and UDP).
func (t *countingTransport) GetAutoBindPort() int { return t.tcp.Addr().(*net.TCPAddr).Port }

// FinalAdvertiseAddr implements memberlist.Transport.
func (t *countingTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		addr := net.ParseIP(ip)
		if addr == nil {
			return nil, 0, fmt.Errorf("advertise address %q is not an IP address", ip)
		}
		if ip4 := addr.To4(); ip4 != nil {
			addr = ip4
		}
		return addr, port, nil
	}
	if !t.bindIP.IsUnspecified() {
		return t.tcp.Addr().(*net.TCPAddr).IP, t.GetAutoBindPort(), nil
	}
	private, err := ChooseAdvertise(t.bindIP.String(), "")
	if err != nil {
		return nil, 0, err
	}
	return net.ParseIP(private).To4(), t.GetAutoBindPort(), nil
}

// PacketCh implements memberlist.Transport.
func (t *countingTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// StreamCh implements memberlist.Transport.
func (t *countingTransport) StreamCh() <-chan net.Conn { return t.streamCh }

func (t *countingTransport) stopping() bool {
	select {
	case <-t.stop:
		return true
	default:
		return false
	}
}

// readPackets hands every UDP packet to memberlist, copied out of one
// reused read buffer, less the gossip it has already received
// (gossipDedup).
func (t *countingTransport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, udpReadBuf)
	for {
		n, from, err := t.udp.ReadFromUDPAddrPort(buf)
		ts := time.Now()
		if err != nil {
			if t.stopping() {
				return
			}
			t.logger.Printf("[ERR] memberlist: Error reading UDP packet: %v", err)
			continue
		}
		if n < 1 {
			continue
		}
		t.c.udpRecv.Add(uint64(n))
		pkt, dropped := t.dedup.filter(buf[:n], ts)
		if dropped > 0 {
			t.c.dupMsgs.Add(uint64(dropped))
		}
		if pkt == nil {
			continue
		}
		if dropped == 0 { // pkt is still the read buffer
			pkt = bytes.Clone(pkt)
		}
		p := &memberlist.Packet{Buf: pkt, From: net.UDPAddrFromAddrPort(from), Timestamp: ts}
		select {
		case t.packetCh <- p:
		case <-t.stop:
			return
		}
	}
}

// acceptStreams hands every TCP connection to memberlist.
func (t *countingTransport) acceptStreams() {
	defer t.wg.Done()
	var delay time.Duration
	for {
		conn, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.stopping() {
				return
			}
			// Out of file descriptors and the like: back off (5 ms to 1 s).
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.logger.Printf("[ERR] memberlist: Error accepting TCP connection: %v", err)
			select {
			case <-time.After(delay):
			case <-t.stop:
				return
			}
			continue
		}
		delay = 0
		select {
		case t.streamCh <- &countingConn{Conn: conn, c: t.c}:
		case <-t.stop:
			_ = conn.Close()
			return
		}
	}
}

// DialTimeout implements memberlist.Transport.
func (t *countingTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.drop != nil && t.drop(addr) {
		return nil, fmt.Errorf("dial %s: %w", addr, ErrPartitioned)
	}
	conn, err := (&net.Dialer{Timeout: timeout}).Dial("tcp", addr)
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
	// Members' addresses are ip:port: parse without the resolver's allocations.
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		_, err = t.udp.WriteToUDPAddrPort(b, ap)
		return time.Now(), err
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.udp.WriteTo(b, ua)
	return time.Now(), err
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
	t.stopOnce.Do(func() {
		close(t.stop)
		_ = t.tcp.Close()
		_ = t.udp.Close()
	})
	t.wg.Wait()
	return nil
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
