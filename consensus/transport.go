package consensus

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
)

// tcpStreamLayer is raft's plain TCP stream layer, written here so that a
// ":0" bind can advertise the port actually chosen and an advertise host
// can be combined with it.
type tcpStreamLayer struct {
	listener  net.Listener
	advertise net.Addr
}

var _ raft.StreamLayer = (*tcpStreamLayer)(nil)

func newTCPStreamLayer(bind, advertise string) (*tcpStreamLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("listen for raft on %s: %w", bind, err)
	}
	bound := ln.Addr().(*net.TCPAddr)
	adv := &net.TCPAddr{IP: bound.IP, Port: bound.Port}
	if advertise != "" {
		host, port, err := net.SplitHostPort(advertise)
		if err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("advertise address %q: %w", advertise, err)
		}
		ip := net.ParseIP(host)
		if ip == nil {
			_ = ln.Close()
			return nil, fmt.Errorf("advertise address %q: host must be an IP address", advertise)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65535 {
			_ = ln.Close()
			return nil, fmt.Errorf("advertise address %q: bad port", advertise)
		}
		if p == 0 {
			p = bound.Port
		}
		adv = &net.TCPAddr{IP: ip, Port: p}
	}
	if adv.IP == nil || adv.IP.IsUnspecified() {
		_ = ln.Close()
		return nil, errors.New("raft bind address is unspecified (0.0.0.0 or ::): set an advertise address other voters can reach")
	}
	return &tcpStreamLayer{listener: ln, advertise: adv}, nil
}

func (t *tcpStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(address), timeout)
}

func (t *tcpStreamLayer) Accept() (net.Conn, error) { return t.listener.Accept() }

func (t *tcpStreamLayer) Close() error { return t.listener.Close() }

func (t *tcpStreamLayer) Addr() net.Addr { return t.advertise }
