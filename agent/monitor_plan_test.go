package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"testing"
	"time"

	"colony/scaling/monitor"
	"colony/test/retry"
)

// Large-plan tests use 127.0.150.0-127.0.159.255.

// TestMonitorLargePlanFetch: a plan of 10,000 nodes (0.8 MB, more than one
// Raft command) committed on the leader reaches a non-voter whole over
// the HTTP long poll, which used to cut it at one command's size.
func TestMonitorLargePlanFetch(t *testing.T) {
	c := newCluster(t, 150)
	// The leader's own tick replaces the synthetic plan with the real one;
	// a slower tick leaves the non-voter time to fetch it first.
	n1 := c.start(1, func(cfg *Config) { cfg.RaftTick = time.Second })
	n2 := c.start(2)
	c.agreeOnLeader(1, 60*time.Second)
	if n2.raftNode() != nil {
		t.Fatal("n2 runs Raft: the test needs a non-voter")
	}
	r := rand.New(rand.NewPCG(1, 2))
	ms := make([]monitor.Member, 10000)
	for i := range ms {
		ms[i] = monitor.Member{ID: fmt.Sprintf("%016x%016x", r.Uint64(), r.Uint64()), Zone: fmt.Sprintf("z%d", i%10), Alive: true}
	}
	p, err := monitor.ComputePlan(ms, monitor.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	p.Version = 1 << 40
	raw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var gzipped []byte
	retry.Until(t, 60*time.Second, func() error {
		n := n1.raftNode()
		if n == nil {
			return fmt.Errorf("n1 runs no Raft")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		idx, parts, err := n.CommitMonitorPlan(ctx, raw)
		if err != nil {
			return err
		}
		if parts < 2 {
			t.Fatalf("a %d-byte plan went in %d command", len(raw), parts)
		}
		got, at, err := n2.mon().fetchPlan(idx - 1)
		if err != nil {
			return err
		}
		if at != idx {
			return fmt.Errorf("fetched the plan at %d, committed at %d (replaced by the leader first)", at, idx)
		}
		if !bytes.Equal(got, raw) {
			t.Fatalf("fetched %d bytes, committed %d", len(got), len(raw))
		}
		// It travels gzipped to a client that asks for it.
		req, err := http.NewRequest("GET", "http://"+n1.HTTPAddr()+"/v1/monitor/plan?consistency=stale", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.Header.Get(HeaderIndex) != strconv.FormatUint(idx, 10) {
			return fmt.Errorf("the plan at %s replaced the one committed at %d", resp.Header.Get(HeaderIndex), idx)
		}
		if gzipped, err = io.ReadAll(resp.Body); err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("status %d, encoding %q, %v", resp.StatusCode, resp.Header.Get("Content-Encoding"), err)
		}
		return nil
	})
	t.Logf("a %d-byte plan is sent as %d bytes gzipped", len(raw), len(gzipped))
}
