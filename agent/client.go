package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client is a thin client of one agent's HTTP API (the CLI uses it).
type Client struct {
	base  string
	http  *http.Client
	token string
}

// SetToken makes every request carry tok in the X-Colony-Token header
// ("" sends none).
func (c *Client) SetToken(tok string) { c.token = tok }

// NewClient returns a client for the agent at addr ("host:port" or a URL).
func NewClient(addr string) (*Client, error) {
	if addr == "" {
		return nil, errors.New("no agent address: set --http-addr or COLONY_HTTP_ADDR")
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("agent address %q: want host:port or http://host:port", addr)
	}
	return &Client{base: strings.TrimRight(u.String(), "/"), http: &http.Client{Timeout: 60 * time.Second}}, nil
}

// NewTLSClient is NewClient over TLS (tc nil: plain NewClient); a bare
// host:port then means https://.
func NewTLSClient(addr string, tc *tls.Config) (*Client, error) {
	if tc == nil {
		return NewClient(addr)
	}
	if addr != "" && !strings.Contains(addr, "://") {
		addr = "https://" + addr
	}
	c, err := NewClient(addr)
	if err != nil {
		return nil, err
	}
	c.http = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}}
	return c, nil
}

// Do sends one request and decodes a JSON answer into out (when non-nil).
// A status of 300 or more is an error carrying the agent's message.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	_, err := c.do(ctx, method, path, body, out, false)
	return err
}

// Status is GET /v1/status. A critical cluster answers 503 with the status
// body: it is decoded all the same, and the code returned.
func (c *Client) Status(ctx context.Context) (*ClusterStatus, int, error) {
	var st ClusterStatus
	code, err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st, true)
	return &st, code, err
}

func (c *Client) do(ctx context.Context, method, path string, body, out any, anyStatus bool) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set(HeaderToken, c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if tlsError(err) {
			return 0, fmt.Errorf("TLS with the colony agent at %s failed (check --tls-ca, --tls-cert and --tls-key, or COLONY_TLS_*): %w", c.base, err)
		}
		var op *net.OpError
		if errors.As(err, &op) {
			return 0, fmt.Errorf("cannot reach the colony agent at %s (is it running? point --http-addr or COLONY_HTTP_ADDR at a node's API): %w", c.base, err)
		}
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return 0, fmt.Errorf("%s %s: reading answer: %w", method, path, err)
	}
	if resp.StatusCode == http.StatusBadRequest && strings.Contains(string(b), "HTTP request to an HTTPS server") {
		return resp.StatusCode, fmt.Errorf("the colony agent at %s serves TLS only: use https:// and set --tls-ca (and --tls-cert/--tls-key under mutual TLS), or COLONY_TLS_*", c.base)
	}
	if resp.StatusCode >= 300 && !(anyStatus && json.Unmarshal(b, out) == nil) {
		var e APIError
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return resp.StatusCode, fmt.Errorf("agent refused (%d): %s", resp.StatusCode, e.Error)
		}
		return resp.StatusCode, fmt.Errorf("agent refused (%d): %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if out == nil {
		return resp.StatusCode, nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: unexpected answer: %w", method, path, err)
	}
	return resp.StatusCode, nil
}

// tlsError reports whether err comes from a TLS handshake: a certificate
// refused by this side or by the agent.
func tlsError(err error) bool {
	var verr *tls.CertificateVerificationError
	var rec tls.RecordHeaderError
	var alert tls.AlertError
	return errors.As(err, &verr) || errors.As(err, &rec) || errors.As(err, &alert) || strings.Contains(err.Error(), "remote error: tls:")
}

// Self returns GET /v1/agent/self.
func (c *Client) Self(ctx context.Context) (*SelfInfo, error) {
	var s SelfInfo
	return &s, c.Do(ctx, http.MethodGet, "/v1/agent/self", nil, &s)
}

// Members returns GET /v1/members.
func (c *Client) Members(ctx context.Context) ([]MemberInfo, error) {
	var m []MemberInfo
	return m, c.Do(ctx, http.MethodGet, "/v1/members", nil, &m)
}

// Health returns GET /v1/health (an unhealthy agent answers too).
func (c *Client) Health(ctx context.Context) (*Health, error) {
	var h Health
	_, err := c.do(ctx, http.MethodGet, "/v1/health", nil, &h, true)
	return &h, err
}

// Join asks the agent to join the given addresses.
func (c *Client) Join(ctx context.Context, addrs []string) (int, error) {
	var r JoinResponse
	err := c.Do(ctx, http.MethodPut, "/v1/agent/join", JoinRequest{Addresses: addrs}, &r)
	return r.Contacted, err
}

// Leave asks the agent to leave the cluster gracefully and stop.
func (c *Client) Leave(ctx context.Context) error {
	return c.Do(ctx, http.MethodPut, "/v1/agent/leave", nil, nil)
}
