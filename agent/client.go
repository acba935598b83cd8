package agent

import (
	"bytes"
	"context"
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
	base string
	http *http.Client
}

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

// Do sends one request and decodes a JSON answer into out (when non-nil).
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) {
			return fmt.Errorf("cannot reach the colony agent at %s (is it running? point --http-addr or COLONY_HTTP_ADDR at a node's API): %w", c.base, err)
		}
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e APIError
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("agent refused (%d): %s", resp.StatusCode, e.Error)
		}
		return fmt.Errorf("agent refused (%d): %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: unexpected answer: %w", method, path, err)
	}
	return nil
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
	err := c.Do(ctx, http.MethodGet, "/v1/health", nil, &h)
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
