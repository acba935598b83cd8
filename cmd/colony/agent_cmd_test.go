package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"colony/agent"
)

// parseAgent runs the agent command's flag and config-file handling and
// returns the Config it would start with.
func parseAgent(t *testing.T, args ...string) (agent.Config, error) {
	t.Helper()
	flags := agentFlags()
	var cfg agent.Config
	app := &cli.App{Name: "colony", Commands: []*cli.Command{{
		Name: "agent", Flags: flags,
		Before: func(c *cli.Context) error { return loadConfigFile(c, flags) },
		Action: func(c *cli.Context) error {
			var err error
			cfg, err = configFromFlags(c)
			return err
		},
	}}}
	err := app.Run(append([]string{"colony", "agent", "--data-dir", t.TempDir(), "--node-name", "n1"}, args...))
	return cfg, err
}

func TestAgentMonitorFlags(t *testing.T) {
	cfg, err := parseAgent(t)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MonitorInterval != 5*time.Second || cfg.MonitorGroupSize != 32 {
		t.Errorf("defaults: interval %v, K %d", cfg.MonitorInterval, cfg.MonitorGroupSize)
	}
	cfg, err = parseAgent(t, "--monitor-interval", "2s", "--monitor-group-size", "8")
	if err != nil || cfg.MonitorInterval != 2*time.Second || cfg.MonitorGroupSize != 8 {
		t.Errorf("flags: %v %d %v", cfg.MonitorInterval, cfg.MonitorGroupSize, err)
	}
	file := filepath.Join(t.TempDir(), "colony.yaml")
	if err := os.WriteFile(file, []byte("monitor-interval: 1s\nmonitor-group-size: 16\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = parseAgent(t, "--config", file)
	if err != nil || cfg.MonitorInterval != time.Second || cfg.MonitorGroupSize != 16 {
		t.Errorf("config file: %v %d %v", cfg.MonitorInterval, cfg.MonitorGroupSize, err)
	}
	t.Setenv("COLONY_MONITOR_GROUP_SIZE", "4")
	if cfg, err = parseAgent(t); err != nil || cfg.MonitorGroupSize != 4 {
		t.Errorf("env: %d %v", cfg.MonitorGroupSize, err)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--monitor-interval", "50ms"}, "monitor-interval"},
		{[]string{"--monitor-interval", "0s"}, "monitor-interval"},
		{[]string{"--monitor-interval", "-1s"}, "monitor-interval"},
		{[]string{"--monitor-interval", "2h"}, "at most"},
		{[]string{"--monitor-interval", "soon"}, "monitor-interval"},
		{[]string{"--monitor-group-size", "1"}, "monitor-group-size"},
		{[]string{"--monitor-group-size", "0"}, "monitor-group-size"},
		{[]string{"--monitor-group-size", "5000"}, "monitor-group-size"},
		{[]string{"--monitor-group-size", "many"}, "monitor-group-size"},
	} {
		if _, err := parseAgent(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %q", tc.args, err, tc.want)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("monitor-interval: 10ms\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := parseAgent(t, "--config", bad); err == nil || !strings.Contains(err.Error(), "monitor-interval") {
		t.Errorf("config file with a 10ms interval: %v", err)
	}
	typo := filepath.Join(t.TempDir(), "typo.yaml")
	if err := os.WriteFile(typo, []byte("monitor-group: 8\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := parseAgent(t, "--config", typo); err == nil || !strings.Contains(err.Error(), "unknown key(s) monitor-group") {
		t.Errorf("config file with a typo: %v", err)
	}
}

func TestAgentRaftMultiplierFlag(t *testing.T) {
	cfg, err := parseAgent(t)
	if err != nil || cfg.RaftMultiplier != 0 {
		t.Errorf("default: %d %v", cfg.RaftMultiplier, err)
	}
	if cfg, err = parseAgent(t, "--profile", "dense", "--raft-multiplier", "5"); err != nil || cfg.RaftMultiplier != 5 {
		t.Errorf("flag: %d %v", cfg.RaftMultiplier, err)
	}
	file := filepath.Join(t.TempDir(), "colony.yaml")
	if err := os.WriteFile(file, []byte("gossip-profile: dense\nraft-multiplier: 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg, err = parseAgent(t, "--config", file); err != nil || cfg.RaftMultiplier != 2 || cfg.GossipProfile != "dense" {
		t.Errorf("config file: %d %q %v", cfg.RaftMultiplier, cfg.GossipProfile, err)
	}
	for _, args := range [][]string{
		{"--raft-multiplier", "11"},
		{"--raft-multiplier", "-1"},
		{"--raft-multiplier", "lots"},
		{"--raft-multiplier", "1.5"},
	} {
		if _, err := parseAgent(t, args...); err == nil || !strings.Contains(err.Error(), "raft-multiplier") {
			t.Errorf("%v: error %v, want one naming raft-multiplier", args, err)
		}
	}
	for _, body := range []string{"raft-multiplier: 11\n", "raft-multiplier: lots\n", "raft-multiplier: 2.5\n", "raft-multiplier: -3\n"} {
		bad := filepath.Join(t.TempDir(), "bad.yaml")
		if err := os.WriteFile(bad, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := parseAgent(t, "--config", bad); err == nil || !strings.Contains(err.Error(), "raft-multiplier") {
			t.Errorf("config file %q: %v", body, err)
		}
	}
	t.Setenv("COLONY_RAFT_MULTIPLIER", "4")
	if cfg, err = parseAgent(t); err != nil || cfg.RaftMultiplier != 4 {
		t.Errorf("env: %d %v", cfg.RaftMultiplier, err)
	}
}
