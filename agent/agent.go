package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"colony/agent/tlsutil"
	"colony/agent/workload"
	"colony/consensus"
	"colony/gossip"
)

// State is the agent's lifecycle state.
type State int

// Agent states, in the order an agent goes through them.
const (
	StateAlive State = iota
	StateLeaving
	StateLeft
	StateShutdown
)

func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateLeaving:
		return "leaving"
	case StateLeft:
		return "left"
	case StateShutdown:
		return "shutdown"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// Agent is one Colony node.
type Agent struct {
	cfg     Config
	logger  *slog.Logger
	dir     *dataDir
	id      uuid.UUID
	gossip  *gossip.Gossip
	httpLn  net.Listener
	httpSrv *http.Server
	reg     *prometheus.Registry
	started time.Time

	changed chan struct{} // membership changed: save peers soon
	bindIP  string

	keyringMu sync.Mutex      // serialises gossip keyring changes and their saving
	tls       *tlsutil.Holder // nil without TLS
	scheme    string          // of agent APIs: http, or https with TLS

	httpClient     *http.Client // agent-to-agent calls (forwarding, voter management)
	blockingClient *http.Client // the same, without a timeout: for blocking queries
	pollVoterName  atomic.Value // string: the voter blocking queries go to (pollVoter)
	runner         *workload.Runner

	raftMu        sync.Mutex
	raftLn        net.Listener    // opened at New, handed to Raft when it starts
	raftPort      int             // the Raft port actually bound
	raft          *consensus.Node // nil unless this node is a voter
	bootKey       string          // --bootstrap-expect: candidate set last seen (raft loop only)
	bootSince     time.Time       // and since when
	orphanSince   time.Time       // raft runs but the live leader does not list this node (raft loop only)
	raftCollector prometheus.Collector
	monState      *nodeMonitor // cluster monitoring (monitor.go)

	routeList  []Route                    // every API route with its access (Routes)
	aclTokens  atomic.Pointer[aclReplica] // token table on a non-voter (acl.go)
	metricsLn  net.Listener               // --metrics-addr, when set
	metricsSrv *http.Server

	ctx    context.Context // cancelled on shutdown; owns every goroutine
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	state    State
	startErr error // why the agent stopped on its own (failed retry-join)

	leaveOnce    sync.Once
	shutdownOnce sync.Once
	done         chan struct{}
}

// New creates an agent: it opens (or creates) the data dir and node ID,
// detects capabilities and starts listening for gossip and HTTP. Nothing is
// contacted until Start.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	bind, err := gossip.ResolveIP(cfg.BindAddr, "bind address")
	if err != nil {
		return nil, err
	}
	advertise := ""
	if cfg.AdvertiseAddr != "" {
		if advertise, err = gossip.ResolveIP(cfg.AdvertiseAddr, "advertise address"); err != nil {
			return nil, err
		}
	}
	if advertise, err = gossip.ChooseAdvertise(bind, advertise); err != nil {
		return nil, err
	}
	dir, err := openDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, logger: logger.With("node", cfg.NodeName), dir: dir, changed: make(chan struct{}, 1), done: make(chan struct{}), started: time.Now()}
	ok := false
	defer func() {
		if !ok {
			a.closeResources()
		}
	}()
	id, created, err := dir.nodeID()
	if err != nil {
		return nil, err
	}
	a.id = id
	if created {
		a.logger.Info("created node identity", "subsystem", "agent", "id", id, "data_dir", cfg.DataDir)
	}

	keys, err := a.initKeyring()
	if err != nil {
		return nil, err
	}
	a.scheme = "http"
	if cfg.TLS.Enabled() {
		if a.tls, err = tlsutil.Load(cfg.TLS, true); err != nil {
			return nil, err
		}
		a.scheme = "https"
	}

	httpAddr := cfg.HTTPAddr
	if httpAddr == "" {
		httpAddr = net.JoinHostPort(bind, strconv.Itoa(DefaultHTTPPort))
	}
	a.httpLn, err = net.Listen("tcp", httpAddr)
	if err != nil {
		return nil, fmt.Errorf("http api: listen on %s: %w", httpAddr, err)
	}

	a.bindIP = bind
	a.raftLn, err = net.Listen("tcp", net.JoinHostPort(bind, strconv.Itoa(cfg.RaftPort)))
	if err != nil {
		return nil, fmt.Errorf("raft: listen on %s:%d: %w", bind, cfg.RaftPort, err)
	}
	a.raftPort = a.raftLn.Addr().(*net.TCPAddr).Port
	base := &http.Transport{DialContext: a.dialContext, MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second}
	if a.tls != nil {
		base.TLSClientConfig = a.tls.ClientConfig()
	}
	tr := &tokenTransport{
		base:       base,
		agentToken: cfg.ACLAgentToken,
	}
	a.httpClient = &http.Client{Timeout: 30 * time.Second, Transport: tr}
	a.blockingClient = &http.Client{Transport: tr}
	rc := workload.DefaultConfig()
	rc.DataDir = cfg.DataDir
	rc.Logger = a.logger
	if a.runner, err = workload.New(rc); err != nil {
		return nil, fmt.Errorf("workload runner: %w", err)
	}
	meta := gossip.Meta{
		ID: id, Labels: cfg.Labels, APIPort: uint16(a.httpLn.Addr().(*net.TCPAddr).Port),
		RaftAddr:        net.JoinHostPort(advertise, strconv.Itoa(a.raftPort)),
		BootstrapExpect: uint32(cfg.BootstrapExpect),
	}
	detectCapabilities(&meta)
	if _, err := meta.Encode(); err != nil {
		return nil, fmt.Errorf("labels: %w", err)
	}
	gc := gossip.DefaultConfig()
	gc.NodeName = cfg.NodeName
	gc.BindAddr = bind
	gc.BindPort = cfg.GossipPort
	gc.AdvertiseAddr = advertise
	gc.AdvertisePort = cfg.AdvertisePort
	gc.Meta = meta
	if len(keys) > 0 {
		gc.SecretKey, gc.Keys = keys[0], keys[1:]
	}
	gc.Label = cfg.ClusterLabel
	gc.Profile = cfg.GossipProfile
	gc.Logger = a.logger
	gc.Tune = cfg.TuneGossip
	gc.DropTo = cfg.DropTo
	gc.OnChange = func() {
		select {
		case a.changed <- struct{}{}:
		default:
		}
	}
	if a.gossip, err = gossip.New(gc); err != nil {
		return nil, err
	}

	a.reg = prometheus.NewRegistry()
	a.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		a.gossip.Collector(),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "colony_agent_info",
			Help:        "Always 1; labels identify the agent.",
			ConstLabels: prometheus.Labels{"node": cfg.NodeName, "id": id.String(), "version": Version},
		}, func() float64 { return 1 }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "colony_agent_uptime_seconds", Help: "Seconds since this agent started.",
		}, func() float64 { return time.Since(a.started).Seconds() }),
	)
	a.httpSrv = &http.Server{Handler: a.routes(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(a.logger.With("subsystem", "http").Handler(), slog.LevelWarn)}
	if a.tls != nil {
		a.httpSrv.TLSConfig = a.tls.ServerConfig()
	}
	if cfg.MetricsAddr != "" {
		if a.metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return nil, fmt.Errorf("metrics: listen on %s: %w", cfg.MetricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", a.metricsHandler())
		mux.HandleFunc("GET /metrics/group", a.handleGroupMetrics)
		a.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(a.logger.With("subsystem", "metrics").Handler(), slog.LevelWarn)}
	}
	ok = true
	return a, nil
}

// ID is the node's permanent ID.
func (a *Agent) ID() uuid.UUID { return a.id }

// Name is the node's name.
func (a *Agent) Name() string { return a.cfg.NodeName }

// HTTPAddr is the address the API listens on.
func (a *Agent) HTTPAddr() string { return a.httpLn.Addr().String() }

// HTTPURL is the API's base URL: http://, or https:// with TLS.
func (a *Agent) HTTPURL() string { return a.scheme + "://" + a.HTTPAddr() }

// apiURL is a member's API base URL.
func (a *Agent) apiURL(m gossip.Member) string { return a.scheme + "://" + apiAddr(m) }

// ReloadTLS reads the TLS certificate and key again (SIGHUP); on error the
// current ones stay in use.
func (a *Agent) ReloadTLS() error {
	if a.tls == nil {
		return errors.New("TLS is not enabled on this agent: nothing to reload")
	}
	if err := a.tls.Reload(); err != nil {
		return err
	}
	a.logger.Info("reloaded TLS certificate", "subsystem", "agent", "cert", a.cfg.TLS.CertFile, "not_after", a.tls.Certificate().Leaf.NotAfter)
	return nil
}

// GossipAddr is the host:port other nodes join this one at.
func (a *Agent) GossipAddr() string {
	ip, port := a.gossip.LocalAddr()
	return net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))
}

// Gossip exposes the node's membership layer.
func (a *Agent) Gossip() *gossip.Gossip { return a.gossip }

// State reports the lifecycle state.
func (a *Agent) State() State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state
}

// Done is closed when the agent has shut down, whatever the reason.
func (a *Agent) Done() <-chan struct{} { return a.done }

// Err says why the agent stopped on its own, or nil.
func (a *Agent) Err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.startErr
}

// Start serves the API and joins the cluster: the --join addresses (waiting
// for them, within the retry budget), the --retry-join addresses in the
// background, or, with neither, the peers saved by the previous run.
func (a *Agent) Start(ctx context.Context) error {
	a.ctx, a.cancel = context.WithCancel(context.Background())
	// Requests live no longer than the agent: Shutdown cancels this
	// context, which ends blocking queries at once instead of leaving
	// their clients waiting on a node that is going away.
	a.httpSrv.BaseContext = func(net.Listener) context.Context { return a.ctx }
	a.goFunc(func() {
		serve := a.httpSrv.Serve
		if a.tls != nil {
			serve = func(ln net.Listener) error { return a.httpSrv.ServeTLS(ln, "", "") }
		}
		if err := serve(a.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.logger.Error("http api stopped", "subsystem", "http", "error", err)
		}
	})
	if a.metricsSrv != nil {
		a.goFunc(func() {
			if err := a.metricsSrv.Serve(a.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.logger.Error("metrics listener stopped", "subsystem", "metrics", "error", err)
			}
		})
	}
	a.goFunc(a.peersLoop)
	a.logger.Info("agent started", "subsystem", "agent", "id", a.id, "gossip", a.GossipAddr(), "http", a.HTTPAddr(), "tls", a.tls != nil, "version", Version)

	policy := gossip.RetryPolicy{Interval: a.cfg.RetryInterval, Max: a.cfg.RetryMax, Jitter: a.cfg.JoinJitter}
	if len(a.cfg.Join) > 0 {
		jctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stop := context.AfterFunc(a.ctx, cancel)
		defer stop()
		if _, err := a.gossip.Join(jctx, a.cfg.Join, policy); err != nil {
			return a.joinError(err)
		}
	}
	background := a.cfg.RetryJoin
	alone := false
	if len(a.cfg.Join) == 0 && len(background) == 0 {
		peers, err := a.dir.loadPeers()
		if err != nil {
			return err
		}
		if len(peers) > 0 {
			a.logger.Info("rejoining peers saved by the previous run", "subsystem", "agent", "peers", len(peers))
			background = peers
			policy.Max = 0 // a restarted node keeps looking for its cluster
		} else {
			alone = true
		}
	}
	if err := a.startConsensus(alone); err != nil {
		return err
	}
	a.goFunc(a.raftLoop)
	a.goFunc(a.assignmentLoop)
	a.goFunc(a.monitorLoop)
	if a.cfg.ACLEnabled {
		a.goFunc(a.aclLoop)
	}
	if len(background) > 0 {
		a.goFunc(func() {
			if _, err := a.gossip.Join(a.ctx, background, policy); err != nil && a.ctx.Err() == nil {
				err = a.joinError(err)
				a.logger.Error("giving up joining the cluster; shutting down", "subsystem", "agent", "error", err)
				a.mu.Lock()
				a.startErr = err
				a.mu.Unlock()
				go a.Shutdown() // not a.goFunc: Shutdown waits for this goroutine
			}
		})
	}
	return nil
}

// joinError adds the remedy to identity conflicts.
func (a *Agent) joinError(err error) error {
	switch {
	case errors.Is(err, gossip.ErrDuplicateID):
		return fmt.Errorf("refusing to start: %w. Stop this agent, delete %s/%s (or the whole data dir) so it creates a new identity, and start it again; never bake a data dir into an image", err, a.cfg.DataDir, nodeIDFile)
	case errors.Is(err, gossip.ErrDuplicateName):
		return fmt.Errorf("refusing to start: %w", err)
	}
	return err
}

// goFunc runs f in a goroutine the agent waits for on shutdown.
func (a *Agent) goFunc(f func()) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		f()
	}()
}

// peersLoop keeps the data dir's list of live peers current, so a restart
// rejoins without any --join.
func (a *Agent) peersLoop() {
	// The saved peers, with the member name each address belongs to, so
	// that checking them costs one lookup each rather than a scan of all
	// N members (every node runs this about once a second while members
	// join: O(N) per node was O(N²) for a machine running many agents).
	type peer struct{ name, addr string }
	var saved []peer
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	const maxPeers = 64
	save := func() {
		// Saved peers still alive at the same address stay; only dead ones
		// are replaced and the list filled up to 64 (enough to find the
		// cluster; bounded file). So a join storm of thousands does not
		// rewrite (and fsync) the file on every node at every membership
		// change.
		peers := make([]peer, 0, maxPeers)
		for _, p := range saved {
			if m, ok := a.gossip.MemberByName(p.name); ok && m.Status == gossip.StatusAlive && m.Address() == p.addr {
				peers = append(peers, p)
			}
		}
		if len(peers) == len(saved) && len(saved) == maxPeers {
			return
		}
		// Built only past the common case above: at 1,000 agents this map,
		// made at every membership change, was 2 % of all bytes allocated.
		kept := make(map[string]bool, len(peers))
		for _, p := range peers {
			kept[p.name] = true
		}
		fresh := a.gossip.AlivePeers(maxPeers + len(peers))
		// Keep the last known peers when this node is alone (e.g. shutting
		// down, or cut off): an empty list would strand the next start.
		if len(fresh) == 0 {
			return
		}
		for _, m := range fresh {
			if len(peers) >= maxPeers {
				break
			}
			if !kept[m.Name] {
				peers = append(peers, peer{m.Name, m.Address()})
			}
		}
		if slices.Equal(peers, saved) {
			return
		}
		addrs := make([]string, len(peers))
		for i, p := range peers {
			addrs[i] = p.addr
		}
		if err := a.dir.savePeers(addrs); err != nil {
			a.logger.Warn("could not save peers", "subsystem", "agent", "error", err)
			return
		}
		saved = peers
	}
	for {
		select {
		case <-a.ctx.Done():
			save() // the last view, for the next start
			return
		case <-a.changed:
			// Let a burst of joins settle before writing.
			t := time.NewTimer(time.Second)
			select {
			case <-a.ctx.Done():
				t.Stop()
				save()
				return
			case <-t.C:
			}
			save()
		case <-tick.C:
			save()
		}
	}
}

// Leave departs gracefully: members see this node as "left", not "dead".
// Then it shuts the agent down. Calling it again is harmless.
func (a *Agent) Leave() error {
	var err error
	a.leaveOnce.Do(func() {
		a.mu.Lock()
		if a.state != StateAlive {
			a.mu.Unlock()
			return
		}
		a.state = StateLeaving
		a.mu.Unlock()
		a.logger.Info("leaving the cluster", "subsystem", "agent")
		if n := a.raftNode(); n != nil && n.IsLeader() {
			// Hand leadership over first: the others then have a leader
			// within a round trip instead of an election timeout.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if terr := n.TransferLeadership(ctx); terr != nil {
				a.logger.Warn("could not hand leadership over before leaving", "subsystem", "raft", "error", terr)
			} else {
				a.logger.Info("leadership handed over before leaving", "subsystem", "raft")
			}
			cancel()
		}
		err = a.gossip.Leave(a.cfg.LeaveTimeout)
		a.mu.Lock()
		a.state = StateLeft
		a.mu.Unlock()
	})
	if serr := a.Shutdown(); err == nil {
		err = serr
	}
	return err
}

// Shutdown stops the agent without telling the cluster (peers see it fail).
// Order matters: stop accepting API calls, then stop gossip, then wait for
// every goroutine, then release the data dir. It is idempotent.
func (a *Agent) Shutdown() error {
	var err error
	a.shutdownOnce.Do(func() {
		a.mu.Lock()
		a.state = StateShutdown
		a.mu.Unlock()
		if a.cancel != nil {
			a.cancel()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if a.httpSrv != nil {
			if err := a.httpSrv.Shutdown(ctx); err != nil {
				// Shutdown does not close connections still busy when its
				// deadline passes: Close does.
				_ = a.httpSrv.Close()
			}
		}
		if a.httpLn != nil {
			_ = a.httpLn.Close()
		}
		if a.metricsSrv != nil {
			_ = a.metricsSrv.Close()
		}
		// Goroutines finish (the peers loop saves the last view) before
		// Raft and gossip stop and the data dir is released. Workloads stop
		// first: a node going away takes its instances with it.
		if a.runner != nil {
			if err := a.runner.Shutdown(ctx); err != nil {
				a.logger.Warn("stopping workloads", "subsystem", "workload", "error", err)
			}
		}
		a.wg.Wait()
		_ = a.stopRaft(false)
		a.closeResources()
		a.logger.Info("agent stopped", "subsystem", "agent")
		close(a.done)
	})
	return err
}

// closeResources releases what New acquired; safe on a half-built agent.
func (a *Agent) closeResources() {
	if a.httpLn != nil {
		_ = a.httpLn.Close()
	}
	if a.metricsLn != nil {
		_ = a.metricsLn.Close()
	}
	a.raftMu.Lock()
	if a.raftLn != nil {
		_ = a.raftLn.Close()
		a.raftLn = nil
	}
	a.raftMu.Unlock()
	if a.gossip != nil {
		_ = a.gossip.Shutdown()
	}
	if a.dir != nil {
		a.dir.close()
	}
}
