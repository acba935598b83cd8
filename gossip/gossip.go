package gossip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	gometrics "github.com/hashicorp/go-metrics"
	"github.com/hashicorp/memberlist"
)

// Status is a member's state as this node sees it.
type Status int

// Member statuses.
const (
	StatusAlive Status = iota
	StatusSuspect
	StatusDead
	StatusLeft
)

func (s Status) String() string {
	switch s {
	case StatusAlive:
		return "alive"
	case StatusSuspect:
		return "suspect"
	case StatusDead:
		return "dead"
	case StatusLeft:
		return "left"
	}
	return fmt.Sprintf("status(%d)", int(s))
}

// MarshalText makes Status render as its name in JSON.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a status name.
func (s *Status) UnmarshalText(b []byte) error {
	for _, c := range []Status{StatusAlive, StatusSuspect, StatusDead, StatusLeft} {
		if c.String() == string(b) {
			*s = c
			return nil
		}
	}
	return fmt.Errorf("unknown member status %q", b)
}

// Member is one node of the cluster as seen from this node.
type Member struct {
	Name   string
	Addr   net.IP
	Port   uint16
	Status Status
	Since  time.Time // when this node last saw the status change
	Meta   Meta

	raw  []byte // Meta as gossiped (full or a stub): an alive message carrying the same bytes needs no checks
	full []byte // Meta encoded: raw, or the record a stub stands for
}

// Address is the member's gossip address as host:port.
func (m Member) Address() string { return net.JoinHostPort(m.Addr.String(), fmt.Sprint(m.Port)) }

// Sentinel errors callers branch on.
var (
	// ErrDuplicateID means another live node already uses this node's ID,
	// almost always because a data dir was copied (a cloned image).
	ErrDuplicateID = errors.New("node ID already in use by another node")
	// ErrDuplicateName means another live node already uses this node's name.
	ErrDuplicateName = errors.New("node name already in use by another node")
	// ErrJoinFailed means no join address answered within the retry budget.
	ErrJoinFailed = errors.New("could not join the cluster")
)

// Profile names select memberlist timer sets.
const (
	ProfileLAN   = "lan"   // memberlist.DefaultLANConfig: a data centre network
	ProfileWAN   = "wan"   // memberlist.DefaultWANConfig: slow or distant links
	ProfileLocal = "local" // memberlist.DefaultLocalConfig: loopback and tests
	ProfileDense = "dense" // many agents per machine, or a join storm of thousands: see DenseConfig
)

// DenseConfig is memberlist's configuration for the "dense" profile: LAN
// defaults with timers and queues sized for thousands of members that share
// CPUs (many agents per machine) or join at once (a fleet booting together).
//
//   - Probes every 2 s with a 1.5 s timeout and a suspicion multiplier of 6: a
//     member starved of CPU for a second is not suspected, and one that is
//     gets ample time to refute. Lifeguard's awareness (up to 8x) stretches
//     this further on a node that sees itself missing its own deadlines.
//   - Gossip every 200 ms to 4 members, each message retransmitted 6·log(N)
//     times (memberlist: 4): each transmission goes to one random member,
//     so a member misses a message with probability about e^-limit; with
//     4·log(N) a burst of 250 joins left some member missing some newcomer
//     about one run in three, and only a push/pull repairs that.
//   - A push/pull full-state sync every 30 s (memberlist stretches it with
//     log N) with a random member, never a fixed one.
//   - Inbound message queue of 16384 (memberlist: 1024): the seed of a join
//     storm receives bursts far larger than 1024 packets.
//   - No compression: LZW on every packet cost a quarter of the CPU of 500
//     members on one machine, for fewer bytes but no more messages per packet.
func DenseConfig() *memberlist.Config {
	mc := memberlist.DefaultLANConfig()
	mc.ProbeInterval = 2 * time.Second
	mc.ProbeTimeout = 1500 * time.Millisecond
	mc.SuspicionMult = 6
	mc.SuspicionMaxTimeoutMult = 6
	mc.AwarenessMaxMultiplier = 8
	mc.GossipInterval = 200 * time.Millisecond
	mc.GossipNodes = 4
	mc.RetransmitMult = 6
	mc.GossipToTheDeadTime = 60 * time.Second
	mc.PushPullInterval = 30 * time.Second
	mc.HandoffQueueDepth = 16384
	// LZW compression of every gossip packet was a quarter of all CPU at
	// 500 members (and most of the garbage): it shrinks bytes on the wire
	// but not what fits in a packet (the budget is counted uncompressed).
	mc.EnableCompression = false
	mc.TCPTimeout = 15 * time.Second
	return mc
}

// MemberlistConfig returns memberlist's base configuration for a profile
// (empty means lan), before Colony's own settings are applied.
func MemberlistConfig(profile string) (*memberlist.Config, error) {
	switch profile {
	case "", ProfileLAN:
		return memberlist.DefaultLANConfig(), nil
	case ProfileWAN:
		return memberlist.DefaultWANConfig(), nil
	case ProfileLocal:
		mc := memberlist.DefaultLocalConfig()
		// memberlist's local timers send each broadcast 2·log N times per
		// member: in a cluster of five, a member that had just died took a
		// share of those few sends, and a live member missed another's
		// leave altogether (then listed it dead, not left, for good once
		// the others had forgotten it). LAN's 4 costs little on one host.
		mc.RetransmitMult = 4
		return mc, nil
	case ProfileDense:
		return DenseConfig(), nil
	}
	return nil, fmt.Errorf("unknown gossip profile %q (want lan, wan, local or dense)", profile)
}

// Config configures one gossip instance.
type Config struct {
	// NodeName is the unique name of this node in the cluster.
	NodeName string
	// BindAddr and BindPort are where gossip listens (TCP and UDP).
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort are what other nodes use to reach this
	// one; empty/0 means derived from the bind address.
	AdvertiseAddr string
	AdvertisePort int
	// Meta is this node's identity, capabilities and labels.
	Meta Meta
	// SecretKey, when set, encrypts all gossip (AES, 16, 24 or 32 bytes):
	// it is the keyring's primary key.
	SecretKey []byte
	// Keys are further keys accepted when decrypting (key rotation); they
	// need SecretKey.
	Keys [][]byte
	// Label, when set, is written on every gossip packet and stream; a
	// node with another label (or none) is refused, so two clusters that
	// share a network never merge.
	Label string
	// Profile selects memberlist's timers: ProfileLAN (default), ProfileWAN,
	// ProfileLocal or ProfileDense.
	Profile string
	// ReapTimeout is how long dead and left members stay listed.
	ReapTimeout time.Duration
	// Logger receives gossip logs; nil discards them.
	Logger *slog.Logger
	// OnChange, if set, is called after every membership change. It must not block.
	OnChange func()
	// CompactMeta gossips a 9-byte stub in alive messages and the full
	// metadata separately (records.go); the dense profile always does.
	CompactMeta bool
	// Tune, if set, adjusts the memberlist configuration last (scale harness, tests).
	Tune func(*memberlist.Config)
	// ReconnectInterval is how often this node tries to reach one dead
	// member, so that both sides of a healed partition merge again
	// (memberlist alone stops talking to a dead node after a short while).
	// Zero disables it.
	ReconnectInterval time.Duration
	// DropTo, if set, is asked before every packet and connection this node
	// sends; true drops it. Tests use it to cut the network between nodes.
	DropTo func(addr string) bool
}

// DefaultConfig returns a Config with Colony's defaults.
func DefaultConfig() Config {
	return Config{
		BindAddr:          "0.0.0.0",
		BindPort:          7946,
		Profile:           ProfileLAN,
		ReapTimeout:       24 * time.Hour,
		ReconnectInterval: 30 * time.Second,
	}
}

// Validate checks the configuration without touching the network.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("node name is empty"))
	} else if len(c.NodeName) > 128 {
		errs = append(errs, fmt.Errorf("node name %q is longer than 128 bytes", c.NodeName))
	}
	if c.BindPort < 0 || c.BindPort > 65535 {
		errs = append(errs, fmt.Errorf("bind port %d out of range", c.BindPort))
	}
	if c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		errs = append(errs, fmt.Errorf("advertise port %d out of range", c.AdvertisePort))
	}
	if c.BindAddr != "" && net.ParseIP(c.BindAddr) == nil {
		errs = append(errs, fmt.Errorf("bind address %q is not an IP address", c.BindAddr))
	}
	if c.AdvertiseAddr != "" && net.ParseIP(c.AdvertiseAddr) == nil {
		errs = append(errs, fmt.Errorf("advertise address %q is not an IP address", c.AdvertiseAddr))
	}
	if n := len(c.SecretKey); n != 0 && n != 16 && n != 24 && n != 32 {
		errs = append(errs, fmt.Errorf("encryption key is %d bytes: it must be 16, 24 or 32", n))
	}
	if len(c.Keys) > 0 && len(c.SecretKey) == 0 {
		errs = append(errs, errors.New("keyring keys given without a primary key"))
	}
	for _, k := range c.Keys {
		if n := len(k); n != 16 && n != 24 && n != 32 {
			errs = append(errs, fmt.Errorf("keyring key is %d bytes: it must be 16, 24 or 32", n))
		}
	}
	if err := ValidateClusterLabel(c.Label); err != nil {
		errs = append(errs, err)
	}
	if _, err := MemberlistConfig(c.Profile); err != nil {
		errs = append(errs, err)
	}
	if c.ReconnectInterval < 0 {
		errs = append(errs, errors.New("reconnect interval is negative"))
	}
	if c.ReapTimeout < 0 {
		errs = append(errs, errors.New("reap timeout is negative"))
	}
	if _, err := c.Meta.Encode(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Gossip is one node's membership in the cluster.
type Gossip struct {
	cfg    Config
	logger *slog.Logger
	ml     *memberlist.Memberlist
	route  string
	ctr    *counters
	// keyring is nil without encryption; it is safe for concurrent use.
	keyring *memberlist.Keyring

	mu       sync.Mutex
	meta     []byte                    // local metadata as gossiped (a stub in compact mode)
	members  map[string]*Member        // by node name, including this node
	byID     map[idPrefix][]string     // names in members and pending by node ID prefix (identity checks in O(1)); one name but for a clash, and a slice, not a set: a set per member cost ~250 bytes, per member on every node
	pending  map[string]*pendingMember // members gossiping a stub whose record has not arrived
	early    map[string][]byte         // records whose stub has not arrived (this node's own too)
	conflict error                     // set when a merge was refused during a join

	compact  bool                             // gossip a stub, the full metadata as a record
	records  *memberlist.TransmitLimitedQueue // record broadcasts
	numNodes atomic.Int64                     // members and pending members, for the records queue

	leavePropagate time.Duration // how long Leave keeps answering probes
	localIP        net.IP        // advertised gossip address, fixed at New
	localPort      uint16
	stop           chan struct{} // closed by Shutdown
	metaSync       chan struct{} // a metadata change asks metaSyncLoop for a push/pull
	wants          chan string   // members asking for this node's record, answered by repairLoop
	gossipEvery    time.Duration // memberlist's GossipInterval
	wg             sync.WaitGroup

	shutdownOnce sync.Once
	shutdownErr  error
}

// New starts gossip listening on the configured address. It does not join
// anyone: call Join.
func New(cfg Config) (*Gossip, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gossip config: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	logger = logger.With("subsystem", "gossip")
	full, _ := cfg.Meta.Encode() // validated above
	g := &Gossip{cfg: cfg, logger: logger, meta: full, members: map[string]*Member{}, byID: map[idPrefix][]string{},
		pending: map[string]*pendingMember{}, early: map[string][]byte{}, compact: cfg.CompactMeta || cfg.Profile == ProfileDense}
	g.route, g.ctr = newRoute()

	mc, _ := MemberlistConfig(cfg.Profile) // validated above
	g.numNodes.Store(1)
	// Records go a third as many times as memberlist's messages: every
	// node that learns one as news passes it on, so a few sends each
	// still reach nearly everyone, and the repair loop asks for the rest.
	// As often as alive messages, they doubled the messages of a burst of
	// joins, and at 500 agents on one machine the CPU they took slowed the
	// joins threefold.
	g.records = &memberlist.TransmitLimitedQueue{NumNodes: func() int { return int(g.numNodes.Load()) }, RetransmitMult: max(1, mc.RetransmitMult/3)}
	if g.compact && cfg.Meta.Roles == 0 {
		g.meta = makeStub(cfg.Meta.ID, full)
		g.early[cfg.NodeName] = full
		g.queueRecord(cfg.NodeName, full)
	}
	mc.Name = cfg.NodeName
	mc.BindAddr = cfg.BindAddr
	if mc.BindAddr == "" {
		mc.BindAddr = "0.0.0.0"
	}
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = cfg.BindPort
	}
	mc.Logger = log.New(logWriter{logger: logger}, "", 0)
	// A dead node may come back at another address (a container or VM
	// restarted with a new IP). memberlist refuses the new address for
	// DeadNodeReclaimTime; the identity checks in NotifyAlive already refuse
	// anyone but the same node ID under that name, so reclaim at once.
	mc.DeadNodeReclaimTime = time.Nanosecond
	mc.Delegate = (*delegate)(g)
	mc.Events = (*delegate)(g)
	mc.Alive = (*delegate)(g)
	mc.Merge = (*delegate)(g)
	mc.Conflict = (*delegate)(g)
	mc.MetricLabels = []gometrics.Label{{Name: routeLabel, Value: g.route}}
	mc.Label = cfg.Label
	if len(cfg.SecretKey) > 0 {
		kr, err := memberlist.NewKeyring(cfg.Keys, cfg.SecretKey)
		if err != nil {
			dropRoute(g.route)
			return nil, fmt.Errorf("gossip keyring: %w", err)
		}
		mc.Keyring = kr
	}
	if cfg.Tune != nil {
		cfg.Tune(mc)
	}
	tr, err := newCountingTransport(mc.BindAddr, mc.BindPort, mc.Logger, g.ctr, cfg.DropTo, dedupGeneration(mc.GossipToTheDeadTime))
	if err != nil {
		dropRoute(g.route)
		return nil, fmt.Errorf("start gossip: %w", err)
	}
	if mc.BindPort == 0 {
		mc.BindPort = tr.GetAutoBindPort()
		if mc.AdvertisePort == 0 {
			mc.AdvertisePort = mc.BindPort
		}
	}
	mc.Transport = tr
	g.leavePropagate = 3 * mc.ProbeInterval
	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = tr.Shutdown()
		dropRoute(g.route)
		return nil, fmt.Errorf("start gossip on %s:%d: %w", mc.BindAddr, mc.BindPort, err)
	}
	g.ml = ml
	g.keyring = mc.Keyring
	g.gossipEvery = mc.GossipInterval
	// Read once: memberlist's LocalNode hands out its own struct, which it
	// rewrites on every metadata update, so reading it later races.
	ln := ml.LocalNode()
	g.localIP, g.localPort = append(net.IP(nil), ln.Addr...), ln.Port
	g.stop = make(chan struct{})
	g.metaSync = make(chan struct{}, 1)
	g.wants = make(chan string, 64)
	if cfg.ReconnectInterval > 0 {
		g.wg.Add(1)
		go g.reconnectLoop()
	}
	g.wg.Add(2)
	go g.metaSyncLoop()
	go g.repairLoop(max(5*mc.GossipInterval, 100*time.Millisecond))
	return g, nil
}

// metaSyncPeers is how many random live members a metadata change is also
// pushed to by a full-state sync: every other member of a five-node
// cluster that has just lost one.
const metaSyncPeers = 3

// metaSyncLoop backs up the broadcast of a metadata change with a
// full-state sync (push/pull) with a few random live members. memberlist
// sends a broadcast a limited number of times to random members; in a small
// cluster a member misses it now and then (seen: a seed that did not learn
// two new voters' roles for over 15 s) and then waits for the periodic
// push/pull, which memberlist stretches with the cluster size. Metadata
// changes are rare (Raft roles), so the extra syncs cost little; the
// members synced with re-gossip the change as news.
func (g *Gossip) metaSyncLoop() {
	defer g.wg.Done()
	for {
		select {
		case <-g.stop:
			return
		case <-g.metaSync:
		}
		// Let the broadcast go first, and fold a burst of changes into
		// one sync.
		t := time.NewTimer(2 * g.gossipEvery)
		select {
		case <-g.stop:
			t.Stop()
			return
		case <-t.C:
		}
		var live []string
		g.mu.Lock()
		for name, m := range g.members {
			if name != g.cfg.NodeName && m.Status == StatusAlive {
				live = append(live, m.Address())
			}
		}
		g.mu.Unlock()
		rand.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
		// In parallel: a member that just died still looks alive, and a
		// sync with it waits for the TCP timeout; done one after the other,
		// that held the others back (a non-voter then named a killed
		// leader for up to 13 s after its successor was elected).
		var syncs sync.WaitGroup
		for _, addr := range live[:min(metaSyncPeers, len(live))] {
			syncs.Go(func() {
				if _, err := g.ml.Join([]string{addr}); err != nil {
					g.logger.Debug("metadata sync failed", "addr", addr, "error", flatten(err))
				}
			})
		}
		syncs.Wait()
	}
}

// reconnectLoop tries one random dead member every ReconnectInterval, as
// Serf does: after a partition heals, each side has declared the other
// dead and would otherwise never speak to it again.
func (g *Gossip) reconnectLoop() {
	defer g.wg.Done()
	t := time.NewTicker(g.cfg.ReconnectInterval)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		var dead []string
		g.mu.Lock()
		for _, m := range g.members {
			if m.Status == StatusDead {
				dead = append(dead, m.Address())
			}
		}
		g.mu.Unlock()
		if len(dead) == 0 {
			continue
		}
		addr := dead[rand.IntN(len(dead))]
		if n, err := g.ml.Join([]string{addr}); err == nil && n > 0 {
			g.logger.Info("reconnected to a member thought dead", "addr", addr)
		}
	}
}

// LocalName is this node's name.
func (g *Gossip) LocalName() string { return g.cfg.NodeName }

// LocalAddr is the address other nodes use to reach this node's gossip.
func (g *Gossip) LocalAddr() (net.IP, uint16) {
	return g.localIP, g.localPort
}

// LocalMeta returns this node's current metadata.
func (g *Gossip) LocalMeta() Meta {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cfg.Meta
}

// UpdateMeta replaces this node's metadata and gossips it.
func (g *Gossip) UpdateMeta(m Meta, timeout time.Duration) error {
	b, err := m.Encode()
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.cfg.Meta = m
	g.meta = b
	// A node holding a Raft role gossips its full metadata: leader
	// discovery then spreads with alive messages, which go before records
	// in a gossip packet. There are 3 or 5 such nodes.
	stub := g.compact && m.Roles == 0
	if stub {
		g.meta = makeStub(m.ID, b)
		g.early[g.cfg.NodeName] = b
	}
	g.mu.Unlock()
	if stub {
		g.queueRecord(g.cfg.NodeName, b)
	}
	select {
	case g.metaSync <- struct{}{}:
	default: // a sync is already due; it will carry this change too
	}
	if err := g.ml.UpdateNode(timeout); err != nil {
		return fmt.Errorf("gossip metadata update: %w", err)
	}
	return nil
}

// RetryPolicy says how Join retries.
type RetryPolicy struct {
	// Interval is the wait before the first retry; it doubles (with jitter) after each failure.
	Interval time.Duration
	// MaxInterval caps the wait between attempts.
	MaxInterval time.Duration
	// Max is the number of attempts; 0 means retry until ctx ends.
	Max int
	// Jitter, when positive, delays the first attempt by a random time up
	// to it: a fleet booting at once then reaches its seed spread over that
	// window instead of in the same second (join pacing for join storms).
	Jitter time.Duration
}

// Join contacts the given addresses (host:port or DNS names) until at least
// one answers, retrying per policy. It returns the number of nodes contacted.
// A refused merge (duplicate ID or name) is returned at once, not retried.
func (g *Gossip) Join(ctx context.Context, addrs []string, p RetryPolicy) (int, error) {
	if len(addrs) == 0 {
		return 0, errors.New("no join addresses given")
	}
	wait := p.Interval
	if wait <= 0 {
		wait = time.Second
	}
	maxWait := p.MaxInterval
	if maxWait <= 0 {
		maxWait = 30 * time.Second
	}
	if p.Jitter > 0 {
		d := time.Duration(rand.Int64N(int64(p.Jitter)))
		g.logger.Debug("pacing the join", "delay", d.String())
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, fmt.Errorf("%w: %v", ErrJoinFailed, ctx.Err())
		case <-t.C:
		}
	}
	var lastErr error
	for attempt := 1; ; attempt++ {
		g.mu.Lock()
		g.conflict = nil
		g.mu.Unlock()
		n, err := g.joinOnce(addrs)
		g.mu.Lock()
		conflict := g.conflict
		g.mu.Unlock()
		if conflict != nil {
			return 0, conflict
		}
		if n > 0 {
			g.logger.Info("joined cluster", "contacted", n, "attempt", attempt)
			return n, nil
		}
		lastErr = err
		if p.Max > 0 && attempt >= p.Max {
			return 0, fmt.Errorf("%w: none of %v answered after %d attempts: %v%s", ErrJoinFailed, addrs, attempt, strings.TrimSpace(flatten(lastErr)), joinHint(lastErr))
		}
		g.logger.Warn("join failed, will retry", "addresses", addrs, "attempt", attempt, "retry_in", wait.String(), "error", flatten(err))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, fmt.Errorf("%w: %v (last error: %v)", ErrJoinFailed, ctx.Err(), flatten(lastErr))
		case <-t.C:
		}
		wait = min(maxWait, wait*2) + time.Duration(rand.Int64N(int64(wait/4)+1))
	}
}

// joinOnce makes one join attempt. memberlist contacts every address
// given, each with a full-state sync; the dense profile instead tries them
// one at a time in random order and stops at the first that answers: one
// full state per join instead of one per address, spread over the seeds
// (or the 64 saved peers of a restart) instead of landing on every one of
// them, which under a join or restart storm of thousands is what melts them.
func (g *Gossip) joinOnce(addrs []string) (int, error) {
	if g.cfg.Profile != ProfileDense || len(addrs) == 1 {
		return g.ml.Join(addrs)
	}
	var errs []error
	for _, i := range rand.Perm(len(addrs)) {
		n, err := g.ml.Join(addrs[i : i+1])
		if n > 0 {
			return n, nil
		}
		errs = append(errs, err)
		g.mu.Lock()
		conflict := g.conflict
		g.mu.Unlock()
		if conflict != nil {
			break
		}
	}
	return 0, errors.Join(errs...)
}

// joinHint names the likely cause of memberlist's terse join errors.
func joinHint(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	switch {
	case strings.Contains(s, "encryption is not configured"):
		return " (the cluster encrypts gossip: give this node the cluster's key with --encrypt)"
	case strings.Contains(s, "no installed keys could decrypt"):
		return " (this node's gossip key is not the cluster's: check --encrypt, or the keyring saved in the data dir after a rotation)"
	case strings.Contains(s, "remote state is not encrypted"):
		return " (this node encrypts gossip but the cluster does not)"
	case strings.Contains(s, "EOF") || strings.Contains(s, "connection reset"):
		return " (the other node hung up: both sides need the same --cluster-label and gossip key)"
	}
	return ""
}

// flatten turns memberlist's multi-line multierror into one log-friendly line.
func flatten(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	out := make([]byte, 0, len(s))
	space := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\n' || c == '\t' {
			if !space {
				out = append(out, ' ')
			}
			space = true
			continue
		}
		space = c == ' '
		out = append(out, c)
	}
	return string(out)
}

// Members returns every member this node knows of, including itself and
// dead or left members not yet reaped, sorted by name.
func (g *Gossip) Members() []Member {
	// memberlist's lock is taken before ours everywhere (its delegates call
	// into us while holding it), so ask it first.
	suspect := map[string]bool{}
	for _, n := range g.ml.Members() {
		if n.State == memberlist.StateSuspect {
			suspect[n.Name] = true
		}
	}
	now := time.Now()
	g.mu.Lock()
	out := make([]Member, 0, len(g.members))
	for name, m := range g.members {
		if (m.Status == StatusDead || m.Status == StatusLeft) && g.cfg.ReapTimeout > 0 && now.Sub(m.Since) > g.cfg.ReapTimeout {
			g.forget(name)
			continue
		}
		c := *m
		if c.Status == StatusAlive && suspect[name] {
			c.Status = StatusSuspect
		}
		out = append(out, c)
	}
	g.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// MemberByID returns the member with this node ID (the live one, if
// several names ever carried it) in O(1), where scanning Members is O(N).
// Unlike Members it does not ask memberlist for suspicions: a suspect
// member is reported alive.
func (g *Gossip) MemberByID(id uuid.UUID) (Member, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var best *Member
	for _, name := range g.byID[prefixOf(id)] {
		m := g.members[name]
		if m == nil || m.Meta.ID != id {
			continue
		}
		if best == nil || (m.Status == StatusAlive && best.Status != StatusAlive) ||
			(m.Status == best.Status && m.Since.After(best.Since)) {
			best = m
		}
	}
	if best == nil {
		return Member{}, false
	}
	return *best, true
}

// MemberByName returns the member with this name in O(1). Like
// MemberByID it reports a suspect member alive.
func (g *Gossip) MemberByName(name string) (Member, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m, ok := g.members[name]; ok {
		return *m, true
	}
	return Member{}, false
}

// AlivePeers returns up to max members other than this node that are
// alive (or suspect), in no particular order, copying only those: callers
// that need a few live peers avoid Members' O(N log N) sorted copy.
func (g *Gossip) AlivePeers(max int) []Member {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Member, 0, min(max, len(g.members)))
	for name, m := range g.members {
		if len(out) >= max {
			break
		}
		if name != g.cfg.NodeName && m.Status == StatusAlive {
			out = append(out, *m)
		}
	}
	return out
}

// CountAlive is the number of members this node sees alive (not suspect),
// itself included, without building the member list.
func (g *Gossip) CountAlive() int {
	suspects := 0
	for _, n := range g.ml.Members() {
		if n.State == memberlist.StateSuspect {
			suspects++
		}
	}
	g.mu.Lock()
	alive := 0
	for _, m := range g.members {
		if m.Status == StatusAlive {
			alive++
		}
	}
	g.mu.Unlock()
	return max(0, alive-suspects)
}

// NumKnown is the number of live members (alive or suspect) in this
// node's view, itself included: members gossiping a stub count once their
// record has arrived. It allocates nothing.
func (g *Gossip) NumKnown() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := 0
	for _, m := range g.members {
		if m.Status == StatusAlive || m.Status == StatusSuspect {
			k++
		}
	}
	return k
}

// NumAlive is the number of live members memberlist knows, this node included.
func (g *Gossip) NumAlive() int { return g.ml.NumMembers() }

// Stats returns this instance's gossip counters.
func (g *Gossip) Stats() Stats {
	s := g.ctr.snapshot()
	s.HealthScore = int64(g.ml.GetHealthScore())
	g.mu.Lock()
	s.PendingMembers = len(g.pending)
	g.mu.Unlock()
	return s
}

// Memberlist exposes the underlying memberlist (keyring management, tests).
func (g *Gossip) Memberlist() *memberlist.Memberlist { return g.ml }

// Leave tells the cluster this node is leaving (members then see it as
// "left", not "dead") and waits up to timeout for the message to spread.
// It does not stop gossip: call Shutdown after.
func (g *Gossip) Leave(timeout time.Duration) error {
	if err := g.ml.Leave(timeout); err != nil {
		return fmt.Errorf("gossip leave: %w", err)
	}
	// Keep answering probes (three probe intervals) while the news spreads: a node that vanished
	// the moment its message was first sent gets suspected by peers that
	// have not heard yet, and "dead" then wins the race against "left"
	// (Serf's LeavePropagateDelay does the same).
	t := time.NewTimer(g.leavePropagate)
	defer t.Stop()
	<-t.C
	return nil
}

// Shutdown stops gossip without telling anyone: peers will see this node
// fail. It is idempotent.
func (g *Gossip) Shutdown() error {
	g.shutdownOnce.Do(func() {
		close(g.stop)
		g.wg.Wait()
		g.shutdownErr = g.ml.Shutdown()
		dropRoute(g.route)
	})
	return g.shutdownErr
}

// remember stores a member and indexes it by ID; g.mu must be held.
func (g *Gossip) remember(m *Member) {
	if prev, ok := g.members[m.Name]; ok && prev.Meta.ID != m.Meta.ID {
		g.unindex(prev)
	}
	if m.full == nil {
		m.full = m.raw
	}
	g.members[m.Name] = m
	g.index(prefixOf(m.Meta.ID), m.Name)
	g.recount()
}

// recount refreshes the member count the records queue reads; g.mu must
// be held.
func (g *Gossip) recount() { g.numNodes.Store(int64(len(g.members) + len(g.pending))) }

// forget drops a member; g.mu must be held.
func (g *Gossip) forget(name string) {
	if m, ok := g.members[name]; ok {
		g.unindex(m)
		delete(g.members, name)
	}
	g.dropPending(name)
	delete(g.early, name)
	g.recount()
}

func (g *Gossip) unindex(m *Member) {
	if p, ok := g.pending[m.Name]; ok && prefixBytes(p.stub) == prefixOf(m.Meta.ID) {
		return // the pending entry still holds the index
	}
	g.unindexName(prefixOf(m.Meta.ID), m.Name)
}

func (g *Gossip) index(p idPrefix, name string) {
	if names := g.byID[p]; !slices.Contains(names, name) {
		g.byID[p] = append(names, name)
	}
}

func (g *Gossip) unindexName(p idPrefix, name string) {
	names := slices.DeleteFunc(g.byID[p], func(n string) bool { return n == name })
	if len(names) == 0 {
		delete(g.byID, p)
		return
	}
	g.byID[p] = names
}

func statusOf(s memberlist.NodeStateType) Status {
	switch s {
	case memberlist.StateSuspect:
		return StatusSuspect
	case memberlist.StateDead:
		return StatusDead
	case memberlist.StateLeft:
		return StatusLeft
	}
	return StatusAlive
}
