package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"

	"colony/agent"
	"colony/agent/tlsutil"
)

func env(name string) []string { return []string{"COLONY_" + name} }

func agentFlags() []cli.Flag {
	def := agent.DefaultConfig()
	host, _ := os.Hostname()
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "YAML (or JSON) file with any of these flags as keys; flags and COLONY_* env vars override it", EnvVars: env("CONFIG")},
		altsrc.NewStringFlag(&cli.StringFlag{Name: "node-name", Value: host, Usage: "unique name of this node", EnvVars: env("NODE_NAME")}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "data-dir", Value: "/var/lib/colony", Usage: "where the node ID, known peers and cluster state live (never bake it into an image)", EnvVars: env("DATA_DIR")}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "bind", Value: def.BindAddr, Usage: "IP address (or go-sockaddr template) gossip listens on", EnvVars: env("BIND")}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "gossip-port", Value: def.GossipPort, Usage: "gossip port (TCP and UDP)", EnvVars: env("GOSSIP_PORT")}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "advertise", Usage: "IP address (or go-sockaddr template) other nodes reach this one at (default: the bind address, or the only private IP)", EnvVars: env("ADVERTISE")}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "advertise-port", Usage: "gossip port other nodes use, if it differs from --gossip-port (NAT)", EnvVars: env("ADVERTISE_PORT")}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "http-addr", Usage: "address the HTTP API listens on (default: the bind IP, port 7070)", EnvVars: env("HTTP_ADDR")}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "label", Usage: "operator label key=value, gossiped with the node (repeatable)", EnvVars: env("LABEL")}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "join", Usage: "address (host:port or DNS name) to join at start; start fails if none answers (repeatable)", EnvVars: env("JOIN")}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "retry-join", Usage: "address to join in the background after start (repeatable)", EnvVars: env("RETRY_JOIN")}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "retry-interval", Value: def.RetryInterval, Usage: "wait before the first join retry; doubles up to 30s", EnvVars: env("RETRY_INTERVAL")}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "join-jitter", Usage: "wait a random time up to this before the first join attempt, so a fleet booting at once reaches its seed spread out (e.g. 30s with --profile dense)", EnvVars: env("JOIN_JITTER")}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "retry-max", Value: def.RetryMax, Usage: "join attempts before giving up (0: forever)", EnvVars: env("RETRY_MAX")}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "encrypt", Usage: "base64 gossip encryption key (make one with `colony keygen`)", EnvVars: env("ENCRYPT")}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "cluster-label", Usage: "label written on every gossip message: nodes with another label are refused, so clusters sharing a network never merge", EnvVars: env("CLUSTER_LABEL")}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "tls-ca", Usage: "CA certificate (PEM): with --tls-cert and --tls-key, the API, Raft and agent-to-agent calls use TLS", EnvVars: env("TLS_CA")}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "tls-cert", Usage: "this node's certificate (PEM, from `colony tls cert create`); reloaded on SIGHUP", EnvVars: env("TLS_CERT")}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "tls-key", Usage: "private key (PEM) of --tls-cert; reloaded on SIGHUP", EnvVars: env("TLS_KEY")}),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "tls-verify-incoming", Usage: "mutual TLS: every API and Raft client must present a certificate signed by --tls-ca", EnvVars: env("TLS_VERIFY_INCOMING")}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "tls-server-name", Usage: "name every agent certificate must carry (default " + tlsutil.DefaultServerName + ")", EnvVars: env("TLS_SERVER_NAME")}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "gossip-profile", Aliases: []string{"profile"}, Value: def.GossipProfile, Usage: "gossip timers: lan, wan, local (loopback tests) or dense (thousands of nodes, many per machine)", EnvVars: env("GOSSIP_PROFILE")}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "raft-port", Value: def.RaftPort, Usage: "Raft port (TCP) used when this node is a voter", EnvVars: env("RAFT_PORT")}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "voters", Value: def.Voters, Usage: "target number of Raft voters: 3, or 5 (applied once 5 nodes are eligible)", EnvVars: env("VOTERS")}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "bootstrap-expect", Usage: "wait for this many nodes started with the same value, then bootstrap Raft with them (0: off)", EnvVars: env("BOOTSTRAP_EXPECT")}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "raft-multiplier", Usage: "scale Raft's heartbeat, election and leader lease timeouts by 1-10, trading slower failover for no leader flapping on busy CPUs (0: the profile's default, 3 on dense, 1 otherwise)", EnvVars: env("RAFT_MULTIPLIER")}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "dead-voter-timeout", Value: def.DeadVoterTimeout, Usage: "how long a voter may be dead before the leader replaces it", EnvVars: env("DEAD_VOTER_TIMEOUT")}),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "acl-enabled", Usage: "require ACL tokens on the API (see `colony acl`); every agent of the cluster must set it", EnvVars: env("ACL_ENABLED")}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "acl-default-read", Value: def.ACLDefaultRead, Usage: "with ACLs, what reads without a token get: allow or deny", EnvVars: env("ACL_DEFAULT_READ")}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "acl-agent-token", Usage: "secret the agents present to each other (same on every agent, at least 16 characters; `colony keygen` makes one); required with --acl-enabled", EnvVars: env("ACL_AGENT_TOKEN")}),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "metrics-require-token", Usage: "with ACLs, refuse Prometheus scrapes of the API without a token even when reads are open", EnvVars: env("METRICS_REQUIRE_TOKEN")}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "metrics-addr", Usage: "also serve /metrics and /metrics/group, without tokens, on this host:port (a private interface)", EnvVars: env("METRICS_ADDR")}),
		altsrc.NewDurationFlag(&cli.DurationFlag{Name: "monitor-interval", Value: agent.DefaultMonitorInterval, Usage: "how often the node samples its metrics and pushes a summary up the monitoring tree (at least 100ms)", EnvVars: env("MONITOR_INTERVAL")}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "monitor-group-size", Value: agent.DefaultMonitorGroupSize, Usage: "K: most members per group of the monitoring tree (2-4096; the leader's value shapes the tree, so set the same everywhere)", EnvVars: env("MONITOR_GROUP_SIZE")}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error", EnvVars: env("LOG_LEVEL")}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text or json", EnvVars: env("LOG_FORMAT")}),
	}
}

func agentCommand() *cli.Command {
	flags := agentFlags()
	return &cli.Command{
		Name:   "agent",
		Usage:  "run a Colony node",
		Flags:  flags,
		Before: func(c *cli.Context) error { return loadConfigFile(c, flags) },
		Action: runAgent,
	}
}

func newLogger(level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// configFromFlags builds agent.Config from the parsed flags.
func configFromFlags(c *cli.Context) (agent.Config, error) {
	if c.NArg() > 0 {
		return agent.Config{}, fmt.Errorf("unexpected argument(s) %q: the agent takes only flags", strings.Join(c.Args().Slice(), " "))
	}
	cfg := agent.DefaultConfig()
	cfg.NodeName = c.String("node-name")
	cfg.DataDir = c.String("data-dir")
	cfg.BindAddr = c.String("bind")
	cfg.GossipPort = c.Int("gossip-port")
	cfg.AdvertiseAddr = c.String("advertise")
	cfg.AdvertisePort = c.Int("advertise-port")
	cfg.HTTPAddr = c.String("http-addr")
	cfg.Join = c.StringSlice("join")
	cfg.RetryJoin = c.StringSlice("retry-join")
	cfg.RetryInterval = c.Duration("retry-interval")
	cfg.RetryMax = c.Int("retry-max")
	cfg.JoinJitter = c.Duration("join-jitter")
	cfg.EncryptKey = c.String("encrypt")
	cfg.GossipProfile = c.String("gossip-profile")
	cfg.ClusterLabel = c.String("cluster-label")
	cfg.TLS = tlsutil.Config{
		CAFile: c.String("tls-ca"), CertFile: c.String("tls-cert"), KeyFile: c.String("tls-key"),
		VerifyIncoming: c.Bool("tls-verify-incoming"), ServerName: c.String("tls-server-name"),
	}
	cfg.RaftPort = c.Int("raft-port")
	cfg.Voters = c.Int("voters")
	cfg.BootstrapExpect = c.Int("bootstrap-expect")
	cfg.DeadVoterTimeout = c.Duration("dead-voter-timeout")
	cfg.RaftMultiplier = c.Int("raft-multiplier")
	cfg.ACLEnabled = c.Bool("acl-enabled")
	cfg.ACLDefaultRead = c.String("acl-default-read")
	cfg.ACLAgentToken = c.String("acl-agent-token")
	cfg.MetricsRequireToken = c.Bool("metrics-require-token")
	cfg.MetricsAddr = c.String("metrics-addr")
	cfg.MonitorInterval = c.Duration("monitor-interval")
	cfg.MonitorGroupSize = c.Int("monitor-group-size")
	if cfg.MonitorInterval <= 0 {
		return cfg, fmt.Errorf("--monitor-interval %s: want a positive duration of at least %s", cfg.MonitorInterval, agent.MinMonitorInterval)
	}
	if cfg.MonitorGroupSize == 0 {
		return cfg, fmt.Errorf("--monitor-group-size 0: want 2-%d", agent.MaxMonitorGroupSize)
	}
	labels, err := agent.ParseLabels(c.StringSlice("label"))
	if err != nil {
		return cfg, fmt.Errorf("--label: %w", err)
	}
	cfg.Labels = labels
	return cfg, cfg.Validate()
}

func runAgent(c *cli.Context) error {
	logger, err := newLogger(c.String("log-level"), c.String("log-format"))
	if err != nil {
		return err
	}
	cfg, err := configFromFlags(c)
	if err != nil {
		return err
	}
	cfg.Logger = logger
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	started := make(chan error, 1)
	go func() { started <- a.Start(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			_ = a.Shutdown()
			return err
		}
	case s := <-sigs:
		logger.Info("signal received while joining; stopping", "subsystem", "agent", "signal", s.String())
		cancel()
		<-started
		_ = a.Shutdown()
		return nil
	}

	for {
		select {
		case <-hup:
			if err := a.ReloadTLS(); err != nil {
				logger.Error("SIGHUP: TLS not reloaded", "subsystem", "agent", "error", err)
			}
		case s := <-sigs:
			if a.State() != agent.StateAlive {
				logger.Warn("second signal: stopping now", "subsystem", "agent", "signal", s.String())
				_ = a.Shutdown()
				continue
			}
			logger.Info("signal received: leaving gracefully (send it again to stop at once)", "subsystem", "agent", "signal", s.String())
			go func() { _ = a.Leave() }()
		case <-a.Done():
			if err := a.Err(); err != nil {
				return err
			}
			return nil
		}
	}
}

var errNoArgs = errors.New("this command takes no arguments")
