// Package agent is one Colony node: identity and data dir, gossip
// membership, the HTTP API and the node's lifecycle. cmd/colony only turns
// flags into a Config and calls New; tests build agents the same way.
package agent

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"

	"colony/agent/tlsutil"
	"colony/consensus"
	"colony/gossip"
)

// Version is the agent's version, set at build time with
// -ldflags "-X colony/agent.Version=v1.2.3".
var Version = "dev"

// Default ports.
const (
	DefaultGossipPort = 7946
	DefaultHTTPPort   = 7070
	DefaultRaftPort   = 7947
)

// Config is everything one agent needs. The zero value is not usable:
// start from DefaultConfig.
type Config struct {
	// NodeName is the node's unique name (default: the host name).
	NodeName string
	// DataDir holds the node ID, the known peers and (later) Raft state.
	DataDir string
	// BindAddr is the IP (or go-sockaddr template) gossip listens on.
	BindAddr string
	// GossipPort is the TCP and UDP port of gossip.
	GossipPort int
	// AdvertiseAddr is the IP (or template) other nodes reach this one at;
	// empty means the bind address, or the host's only private IP when
	// binding to all interfaces.
	AdvertiseAddr string
	// AdvertisePort is the gossip port other nodes use (0: GossipPort).
	AdvertisePort int
	// HTTPAddr is where the API listens; empty means the bind IP on port 7070.
	HTTPAddr string
	// Labels are operator labels (zone=eu-1) gossiped with the node.
	Labels map[string]string
	// Join lists addresses to join at start; start fails if none answers
	// within RetryMax attempts.
	Join []string
	// RetryJoin lists addresses joined in the background after start; the
	// agent shuts down if none answers within RetryMax attempts.
	RetryJoin []string
	// RetryInterval is the wait before the first join retry (it then backs off).
	RetryInterval time.Duration
	// RetryMax is the number of join attempts; 0 retries forever.
	RetryMax int
	// JoinJitter delays the first join attempt by a random time up to it
	// (0: none), pacing a fleet that boots at once.
	JoinJitter time.Duration
	// EncryptKey is the base64 gossip encryption key (16, 24 or 32 bytes).
	EncryptKey string
	// ClusterLabel, when set, is written on every gossip message: nodes
	// with another label are refused, so clusters sharing a network never
	// merge.
	ClusterLabel string
	// TLS secures the API, Raft and agent-to-agent calls (off when no file
	// is set).
	TLS tlsutil.Config
	// GossipProfile selects gossip timers: lan (default), wan, local or
	// dense (thousands of members, many per machine: gossip.DenseConfig).
	GossipProfile string
	// LeaveTimeout bounds how long a graceful leave waits for the news to spread.
	LeaveTimeout time.Duration
	// RaftPort is the TCP port of Raft on voters (same IP as gossip); 0
	// picks a free one (tests), kept until the agent stops.
	RaftPort int
	// Voters is the target number of Raft voters: 3 or 5 (5 applies once
	// at least 5 nodes are eligible).
	Voters int
	// BootstrapExpect, when non-zero, makes this node wait for that many
	// nodes started with the same value and bootstrap Raft with them.
	BootstrapExpect int
	// DeadVoterTimeout is how long a voter may be dead before the leader
	// replaces and removes it.
	DeadVoterTimeout time.Duration
	// RaftTick is how often roles are gossiped and the leader reviews the voters.
	RaftTick time.Duration
	// RaftMultiplier scales Raft's heartbeat, election and leader lease
	// timeouts (0-MaxRaftMultiplier), as Consul's raft_multiplier: a slower
	// failover in exchange for no leader flapping when CPUs are starved.
	// 0 means the profile's default: DenseRaftMultiplier on dense, 1 otherwise.
	RaftMultiplier int
	// TuneRaft, if set, adjusts the Raft configuration (tests use faster
	// timers); it runs after RaftMultiplier is applied.
	TuneRaft func(*consensus.Config)
	// DropTo, if set, is asked before this node sends anything to addr
	// (gossip, Raft, API); true drops it. Tests use it for partitions.
	DropTo func(addr string) bool
	// MonitorInterval is how often the node samples and pushes its metrics
	// summary (0: 5s; at least MinMonitorInterval otherwise).
	MonitorInterval time.Duration
	// MonitorGroupSize is K, the most members of any group of the
	// monitoring tree (0: 32). The leader's value shapes the plan, so set
	// the same on every node.
	MonitorGroupSize int
	// Logger receives the agent's structured logs; nil discards them.
	Logger *slog.Logger
	// TuneGossip, if set, adjusts memberlist's configuration (tests, scale harness).
	TuneGossip func(*memberlist.Config)

	// ACLEnabled makes the API require tokens (see README, "Access control").
	ACLEnabled bool
	// ACLDefaultRead is what anonymous reads get with ACLs on: ACLAllow
	// (the default) or ACLDeny.
	ACLDefaultRead string
	// ACLAgentToken is the secret agents present to each other; the same
	// on every agent. Required with ACLEnabled.
	ACLAgentToken string
	// MetricsRequireToken refuses anonymous Prometheus scrapes of the API
	// even when anonymous reads are allowed.
	MetricsRequireToken bool
	// MetricsAddr, if set, also serves /metrics and /metrics/group there,
	// without tokens (bind it to a private interface).
	MetricsAddr string
}

// Bounds and defaults of Config.RaftMultiplier.
const (
	// MaxRaftMultiplier is the largest RaftMultiplier: 10 s before a lost
	// leader is noticed is already slow.
	MaxRaftMultiplier = 10
	// DenseRaftMultiplier is the default on the dense gossip profile, whose
	// machines share CPUs with many agents.
	DenseRaftMultiplier = 3
)

// raftMultiplier is the factor applied to Raft's timers: mult, or the
// profile's default when mult is 0.
func raftMultiplier(profile string, mult int) int {
	switch {
	case mult != 0:
		return mult
	case profile == gossip.ProfileDense:
		return DenseRaftMultiplier
	}
	return 1
}

// raftTimers returns consensus.DefaultConfig with its heartbeat, election
// and leader lease timeouts scaled by raftMultiplier(profile, mult); every
// other field is left as it is.
func raftTimers(profile string, mult int) consensus.Config {
	cc := consensus.DefaultConfig()
	m := time.Duration(raftMultiplier(profile, mult))
	cc.HeartbeatTimeout *= m
	cc.ElectionTimeout *= m
	cc.LeaderLeaseTimeout *= m
	return cc
}

// Values of Config.ACLDefaultRead.
const (
	ACLAllow = "allow"
	ACLDeny  = "deny"
)

// DefaultConfig returns a Config with Colony's defaults.
func DefaultConfig() Config {
	return Config{
		BindAddr:         "0.0.0.0",
		GossipPort:       DefaultGossipPort,
		RetryInterval:    time.Second,
		RetryMax:         6,
		GossipProfile:    gossip.ProfileLAN,
		LeaveTimeout:     5 * time.Second,
		RaftPort:         DefaultRaftPort,
		Voters:           3,
		DeadVoterTimeout: 30 * time.Second,
		RaftTick:         time.Second,
		ACLDefaultRead:   ACLAllow,
	}
}

// Validate checks the configuration and returns every problem found.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("node name is empty"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is empty: set --data-dir"))
	}
	if c.GossipPort < 0 || c.GossipPort > 65535 {
		errs = append(errs, fmt.Errorf("gossip port %d out of range 0-65535", c.GossipPort))
	}
	if c.AdvertisePort < 0 || c.AdvertisePort > 65535 {
		errs = append(errs, fmt.Errorf("advertise port %d out of range 0-65535", c.AdvertisePort))
	}
	if c.HTTPAddr != "" {
		if _, port, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			errs = append(errs, fmt.Errorf("http address %q: %w", c.HTTPAddr, err))
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("http address %q: bad port", c.HTTPAddr))
		}
	}
	for k, v := range c.Labels {
		if err := gossip.ValidateLabel(k, v); err != nil {
			errs = append(errs, err)
		}
	}
	if c.JoinJitter < 0 || c.JoinJitter > 10*time.Minute {
		errs = append(errs, fmt.Errorf("join jitter %s must be between 0 and 10m", c.JoinJitter))
	}
	if c.RetryInterval <= 0 {
		errs = append(errs, fmt.Errorf("retry interval %s must be positive", c.RetryInterval))
	}
	if c.RetryMax < 0 {
		errs = append(errs, fmt.Errorf("retry max %d must be 0 (forever) or more", c.RetryMax))
	}
	if c.EncryptKey != "" {
		if _, err := DecodeKey(c.EncryptKey); err != nil {
			errs = append(errs, err)
		}
	}
	if err := gossip.ValidateClusterLabel(c.ClusterLabel); err != nil {
		errs = append(errs, err)
	}
	if err := c.TLS.Validate(); err != nil {
		errs = append(errs, err)
	}
	if _, err := gossip.MemberlistConfig(c.GossipProfile); err != nil {
		errs = append(errs, err)
	}
	if c.RaftPort < 0 || c.RaftPort > 65535 {
		errs = append(errs, fmt.Errorf("raft port %d out of range 0-65535", c.RaftPort))
	}
	if c.Voters != 3 && c.Voters != 5 {
		errs = append(errs, fmt.Errorf("voters %d: want 3 or 5", c.Voters))
	}
	if c.BootstrapExpect < 0 || c.BootstrapExpect > 5 {
		errs = append(errs, fmt.Errorf("bootstrap expect %d: want 0 (off) or 1-5", c.BootstrapExpect))
	}
	if c.DeadVoterTimeout <= 0 {
		errs = append(errs, fmt.Errorf("dead voter timeout %s must be positive", c.DeadVoterTimeout))
	}
	if c.RaftTick <= 0 {
		errs = append(errs, fmt.Errorf("raft tick %s must be positive", c.RaftTick))
	}
	if c.RaftMultiplier < 0 || c.RaftMultiplier > MaxRaftMultiplier {
		errs = append(errs, fmt.Errorf("raft multiplier (--raft-multiplier) %d: want 1-%d (or 0 for the profile's default: %d on dense, 1 otherwise)", c.RaftMultiplier, MaxRaftMultiplier, DenseRaftMultiplier))
	}
	if c.MonitorInterval < 0 || c.MonitorInterval > 0 && c.MonitorInterval < MinMonitorInterval {
		errs = append(errs, fmt.Errorf("monitor interval (--monitor-interval) %s: want at least %s (or 0 for the default %s)", c.MonitorInterval, MinMonitorInterval, DefaultMonitorInterval))
	}
	if c.MonitorInterval > MaxMonitorInterval {
		errs = append(errs, fmt.Errorf("monitor interval (--monitor-interval) %s: want at most %s", c.MonitorInterval, MaxMonitorInterval))
	}
	if c.MonitorGroupSize != 0 && (c.MonitorGroupSize < 2 || c.MonitorGroupSize > MaxMonitorGroupSize) {
		errs = append(errs, fmt.Errorf("monitor group size (--monitor-group-size) %d: want 2-%d (or 0 for the default %d)", c.MonitorGroupSize, MaxMonitorGroupSize, DefaultMonitorGroupSize))
	}
	if c.LeaveTimeout < 0 {
		errs = append(errs, errors.New("leave timeout is negative"))
	}
	errs = append(errs, c.validateACL()...)
	return errors.Join(errs...)
}

// DecodeKey parses a base64 gossip encryption key.
func DecodeKey(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("encryption key is not valid base64 (make one with `colony keygen`): %w", err)
	}
	switch len(k) {
	case 16, 24, 32:
		return k, nil
	}
	return nil, fmt.Errorf("encryption key decodes to %d bytes: it must be 16, 24 or 32 bytes (make one with `colony keygen`)", len(k))
}

// ParseLabels turns ["zone=eu-1", "rack=r2"] into a map, refusing malformed
// or duplicate entries with a message naming the offender.
func ParseLabels(in []string) (map[string]string, error) {
	out := make(map[string]string, len(in))
	var errs []error
	for _, kv := range in {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			errs = append(errs, fmt.Errorf("label %q: want key=value", kv))
			continue
		}
		if err := gossip.ValidateLabel(k, v); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, dup := out[k]; dup {
			errs = append(errs, fmt.Errorf("label %q given twice", k))
			continue
		}
		out[k] = v
	}
	return out, errors.Join(errs...)
}

func (c *Config) validateACL() []error {
	var errs []error
	switch c.ACLDefaultRead {
	case "", ACLAllow, ACLDeny:
	default:
		errs = append(errs, fmt.Errorf("acl default read %q: want allow or deny", c.ACLDefaultRead))
	}
	if c.ACLAgentToken != "" {
		if err := ValidateToken(c.ACLAgentToken); err != nil {
			errs = append(errs, fmt.Errorf("acl agent token: %w", err))
		} else if len(c.ACLAgentToken) < MinAgentTokenLen {
			errs = append(errs, fmt.Errorf("acl agent token: at least %d characters (make one with `colony keygen`)", MinAgentTokenLen))
		}
	}
	if c.ACLEnabled && c.ACLAgentToken == "" {
		errs = append(errs, errors.New("--acl-enabled needs --acl-agent-token: a secret shared by every agent for agent-to-agent calls (make one with `colony keygen`)"))
	}
	if c.MetricsRequireToken && !c.ACLEnabled {
		errs = append(errs, errors.New("--metrics-require-token needs --acl-enabled"))
	}
	if c.MetricsAddr != "" {
		if _, port, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			errs = append(errs, fmt.Errorf("metrics address %q: %w", c.MetricsAddr, err))
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("metrics address %q: bad port", c.MetricsAddr))
		}
	}
	return errs
}
