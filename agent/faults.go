package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"colony/gossip"
)

// Fault injection for tests: Config.DropTo is asked before this node sends
// anything (gossip, Raft, API calls to other agents). Cutting both
// directions between two groups is a partition.

// streamLayer is the TCP stream layer Raft runs on. Its listener is opened
// when the agent starts, whether or not the node is a voter, so the port
// (even a kernel-chosen one) is known and gossiped before Raft runs. Dial
// refuses addresses DropTo names.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	drop      func(string) bool
	tls       *tls.Config // client side of TLS, nil without (the listener is wrapped)
}

func (f *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if f.drop != nil && f.drop(string(addr)) {
		return nil, fmt.Errorf("dial %s: %w", addr, gossip.ErrPartitioned)
	}
	conn, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	conn = gossip.FaultConn(conn, string(addr), f.drop)
	if f.tls == nil {
		return conn, nil
	}
	// Handshake here, so a refused certificate is Dial's error, not a
	// broken pipe later.
	tc := tls.Client(conn, f.tls)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("raft tls handshake with %s: %w", addr, err)
	}
	return tc, nil
}

func (f *streamLayer) Addr() net.Addr { return f.advertise }

// dialContext is the agent's dialer for agent-to-agent HTTP.
func (a *Agent) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if a.cfg.DropTo != nil && a.cfg.DropTo(addr) {
		return nil, fmt.Errorf("dial %s: %w", addr, gossip.ErrPartitioned)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return gossip.FaultConn(conn, addr, a.cfg.DropTo), nil
}
