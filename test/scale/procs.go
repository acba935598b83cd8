package scale

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"colony/agent"
)

// procCluster is N colony agent processes, each on its own loopback address.
type procCluster struct {
	o     *Options
	n     int
	dir   string
	procs []*exec.Cmd
	logs  []*os.File
	*api
}

func newProcCluster(o *Options, n int) *procCluster {
	c := &procCluster{o: o, n: n}
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = addr(o.ColonyNet, o.Base+o.ProcsBase, i) + ":7070"
	}
	c.api = newAPI(addrs)
	return c
}

func (c *procCluster) size() int { return c.n }

func (c *procCluster) start(ctx context.Context) error {
	if c.o.Binary == "" {
		return fmt.Errorf("process mode needs the colony binary (-bin)")
	}
	var err error
	if c.dir, err = os.MkdirTemp("", "colony-scale-procs-"); err != nil {
		return err
	}
	logDir := filepath.Join(c.o.Out, fmt.Sprintf("procs-%s-%d", c.o.Profile, c.n))
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	seed := addr(c.o.ColonyNet, c.o.Base+c.o.ProcsBase, 0) + ":7946"
	for i := 0; i < c.n; i++ {
		ip := addr(c.o.ColonyNet, c.o.Base+c.o.ProcsBase, i)
		name := fmt.Sprintf("p%05d", i)
		args := []string{"agent", "--node-name", name, "--bind", ip, "--http-addr", ip + ":7070",
			"--data-dir", filepath.Join(c.dir, name), "--gossip-profile", c.o.Profile, "--log-level", "warn", "--retry-max", "10"}
		if c.o.MonitorInterval > 0 {
			args = append(args, "--monitor-interval", c.o.MonitorInterval.String())
		}
		if i > 0 {
			args = append(args, "--join", seed)
		}
		lf, err := os.Create(filepath.Join(logDir, name+".log"))
		if err != nil {
			return err
		}
		c.logs = append(c.logs, lf)
		cmd := exec.Command(c.o.Binary, args...)
		cmd.Stdout, cmd.Stderr = lf, lf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		c.procs = append(c.procs, cmd)
		// One by one, like the in-process modes: the next starts once
		// this one answers (its join, given with --join, is done by then).
		if err := c.waitUp(ctx, c.api.addrs[i], 2*time.Minute); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

func (c *procCluster) waitUp(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var s agent.SelfInfo
		err := c.api.get(ctx, addr, "/v1/agent/self", &s)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("API not up: %w", err)
		}
		sleepCtx(ctx, 20*time.Millisecond)
	}
}

func (c *procCluster) converged(ctx context.Context) (bool, error) {
	var mu sync.Mutex
	var bad error
	forEach(c.n, 16, func(i int) {
		var ms []agent.MemberInfo
		err := c.api.get(ctx, c.api.addrs[i], "/v1/members", &ms)
		alive := 0
		for _, m := range ms {
			if m.Status.String() == "alive" {
				alive++
			}
		}
		if err == nil && alive != c.n {
			err = fmt.Errorf("%s sees %d of %d alive", c.api.addrs[i], alive, c.n)
		}
		if err != nil {
			mu.Lock()
			bad = err
			mu.Unlock()
		}
	})
	return bad == nil, bad
}

// view: converged already reads every node's view through the API.
func (c *procCluster) view(ctx context.Context) (bool, error) { return c.converged(ctx) }

// scrape reads the counters this harness needs from one agent's /metrics.
func (c *procCluster) scrape(ctx context.Context, addr string) (bytes, suspicions, dead uint64, err error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/metrics", nil)
	resp, err := c.api.client.Do(req)
	if err != nil {
		return 0, 0, 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, _ := strconv.ParseFloat(val, 64)
		switch {
		case strings.HasPrefix(name, "colony_gossip_bytes_sent_total"):
			bytes += uint64(v)
		case name == "colony_gossip_suspicions_total":
			suspicions += uint64(v)
		case name == "colony_gossip_dead_messages_total":
			dead += uint64(v)
		}
	}
	return bytes, suspicions, dead, sc.Err()
}

func (c *procCluster) sample(ctx context.Context) (counters, error) {
	var s counters
	var mu sync.Mutex
	forEach(len(c.procs), 16, func(i int) {
		p := c.procs[i]
		pid := strconv.Itoa(p.Process.Pid)
		cpu := procCPU(pid)
		rss, hwm := procStatus(pid)
		b, su, d, err := c.scrape(ctx, c.api.addrs[i])
		mu.Lock()
		defer mu.Unlock()
		s.cpu += cpu
		s.rss += rss
		s.peakRSS += hwm
		if err == nil {
			s.bytes += b
			s.suspicions += su
			s.dead += d
		}
	})
	return s, nil
}

// stopGroup ends a process started in its own process group: SIGTERM to
// the group, then SIGKILL if exited is not closed within grace; it returns
// once exited is closed (the process waited for).
func stopGroup(p *exec.Cmd, exited <-chan struct{}, grace time.Duration) {
	_ = syscall.Kill(-p.Process.Pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		_ = syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
		<-exited
	}
}

// procCPU is a process's user+system CPU time from /proc/<pid>/stat.
func procCPU(pid string) time.Duration {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	// Fields after the command: state is f[0]; utime and stime are fields 14 and 15 of the line.
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	const clkTck = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / clkTck
}

func (c *procCluster) notAlive(ctx context.Context) int {
	bad := 0
	var mu sync.Mutex
	forEach(c.n, 16, func(i int) {
		var ms []agent.MemberInfo
		if err := c.api.get(ctx, c.api.addrs[i], "/v1/members", &ms); err != nil {
			mu.Lock()
			bad += c.n
			mu.Unlock()
			return
		}
		k := 0
		for _, m := range ms {
			if m.Status.String() != "alive" {
				k++
			}
		}
		mu.Lock()
		bad += k
		mu.Unlock()
	})
	return bad
}

func (c *procCluster) stop() {
	forEach(len(c.procs), 64, func(i int) {
		p := c.procs[i]
		done := make(chan struct{})
		go func() {
			_ = p.Wait()
			close(done)
		}()
		stopGroup(p, done, 15*time.Second)
	})
	for _, f := range c.logs {
		_ = f.Close()
	}
	if c.dir != "" {
		_ = os.RemoveAll(c.dir)
	}
}
