package scale

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"colony/agent"
	"colony/agent/workload"
	"colony/scaling/monitor"
)

// api probes the Colony phases through the agents' HTTP APIs: the same
// calls for in-process agents and for processes.
type api struct {
	addrs   []string // HTTP address of every node, the seed first
	client  *http.Client
	planVer uint64 // the complete plan's version, once seen
	planOK  bool   // the seed's plan covers every node
}

func newAPI(addrs []string) *api {
	tr := &http.Transport{
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		// Few idle connections: in colony mode both ends of each one are
		// file descriptors of this process, whose hard limit (20,000 here)
		// 1,000 agents with their instances already all but fill.
		MaxIdleConnsPerHost: 1, MaxIdleConns: 64, IdleConnTimeout: 30 * time.Second,
	}
	return &api{addrs: addrs, client: &http.Client{Timeout: 20 * time.Second, Transport: tr}}
}

func (p *api) get(ctx context.Context, addr, path string, out any) error {
	b, err := p.do(ctx, "GET", addr, path, nil)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}

// do sends one request and returns the body of a 200 answer.
func (p *api) do(ctx context.Context, method, addr, path string, body io.Reader) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, body)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("%s %s%s: %d %s", method, addr, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	return b, nil
}

// sample picks the seed and up to k-1 other nodes at random.
func (p *api) sample(k int) []string {
	if len(p.addrs) <= k {
		return p.addrs
	}
	out := []string{p.addrs[0]}
	for _, i := range rand.Perm(len(p.addrs) - 1)[:k-1] {
		out = append(out, p.addrs[i+1])
	}
	return out
}

// leader: the seed and 15 other random nodes name the same leader, and it
// has its full set of voters (3, or fewer in a smaller cluster).
func (p *api) leader(ctx context.Context) (bool, error) {
	want := min(3, len(p.addrs))
	name := ""
	for _, a := range p.sample(16) {
		var st agent.ClusterStatus
		if err := p.get(ctx, a, "/v1/status?consistency=stale", &st); err != nil {
			return false, err
		}
		if st.Leader == nil || st.Leader.Name == "" {
			return false, fmt.Errorf("%s knows no leader", a)
		}
		if name != "" && st.Leader.Name != name {
			return false, fmt.Errorf("leaders differ: %s and %s", name, st.Leader.Name)
		}
		name = st.Leader.Name
		voters := 0
		for _, v := range st.Voters {
			if v.Voter && v.Status == "alive" {
				voters++
			}
		}
		if voters < want {
			return false, fmt.Errorf("%s sees %d voters, want %d", a, voters, want)
		}
	}
	return true, nil
}

// plan: the committed monitoring plan places every node, and every node
// follows that plan (or a newer one).
func (p *api) plan(ctx context.Context) (bool, error) {
	var pl monitor.Plan
	if err := p.get(ctx, p.addrs[0], "/v1/monitor/plan", &pl); err != nil {
		return false, err
	}
	if pl.Len() < len(p.addrs) {
		return false, fmt.Errorf("the plan places %d of %d nodes", pl.Len(), len(p.addrs))
	}
	var behind atomic.Int64
	forEach(len(p.addrs), 32, func(i int) {
		var st agent.MonitorStatus
		if err := p.get(ctx, p.addrs[i], "/v1/monitor/status", &st); err != nil || st.PlanVersion < pl.Version {
			behind.Add(1)
		}
	})
	if n := behind.Load(); n > 0 {
		return false, fmt.Errorf("%d nodes do not follow plan %d yet", n, pl.Version)
	}
	return true, nil
}

// deploySpec is one tiny instance on every node.
func deploySpec(n int) string {
	return fmt.Sprintf(`name: scale
count: %d
command: {argv: ["/bin/sleep", "100000"]}
resources: {cpu: 1m, memory: 1MiB}
distinct_hosts: true
`, n)
}

// put sends body to path on the first node.
func (p *api) put(ctx context.Context, path, body string) error {
	_, err := p.do(ctx, "PUT", p.addrs[0], path, strings.NewReader(body))
	return err
}

func (p *api) deploy(ctx context.Context) error {
	return p.put(ctx, "/v1/deployments", deploySpec(len(p.addrs)))
}

// running counts the nodes where an instance of the deployment runs.
func (p *api) running(ctx context.Context) (int, error) {
	var k atomic.Int64
	var mu sync.Mutex
	var firstErr error
	forEach(len(p.addrs), 32, func(i int) {
		var sts []workload.InstanceStatus
		if err := p.get(ctx, p.addrs[i], "/v1/agent/instances", &sts); err != nil {
			mu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
			return
		}
		for _, s := range sts {
			if s.Deployment == "scale" && s.State == workload.StateRunning {
				k.Add(1)
				return
			}
		}
	})
	return int(k.Load()), firstErr
}
