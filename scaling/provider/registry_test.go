package provider

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestNewFromYAMLMap(t *testing.T) {
	base := t.TempDir()
	var cfg map[string]any
	src := `
name: dev
binary: /bin/true
base_dir: ` + base + `
ips: [127.0.95.1-127.0.95.3]
grace_period: 3s
types:
  - name: gpu
    profile: {cpus: 2, memory_mib: 2048, labels: {gpu: "true"}}
    cost_per_hour: 1.5
    reserved: [gpu]
`
	if err := yaml.Unmarshal([]byte(src), &cfg); err != nil {
		t.Fatal(err)
	}
	p, err := New("local", cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := p.(*Local)
	if p.Name() != "dev" || l.cfg.GracePeriod != 3*time.Second || len(l.pool) != 3 || l.cfg.HTTPPort != 7070 {
		t.Fatalf("config: %+v", l.cfg)
	}
	if len(l.cfg.Types) != 1 || l.cfg.Types[0].Name != "gpu" || l.cfg.Types[0].Profile.Labels["gpu"] != "true" || l.cfg.Types[0].Reserved[0] != "gpu" {
		t.Fatalf("types replace the defaults: %+v", l.cfg.Types)
	}
}

func TestNewTypedAndErrors(t *testing.T) {
	ec := DefaultExecConfig()
	ec.Command = "/bin/true"
	if p, err := New("exec", ec, nil); err != nil || p.Name() != "exec" {
		t.Fatalf("typed exec: %v", err)
	}
	dc := DefaultDockerConfig()
	if p, err := New("docker", &dc, nil); err != nil || p.Name() != "docker" {
		t.Fatalf("pointer docker: %v", err)
	}
	for _, tc := range []struct {
		kind string
		cfg  any
		want string
	}{
		{"aws", nil, `unknown provider kind "aws" (want one of docker, exec, local)`},
		{"local", map[string]any{"binary": "/bin/true", "base_dir": filepath.Join(t.TempDir(), "x"), "colour": "red"}, "field colour not found"},
		{"local", map[string]any{"binary": "/bin/true"}, "no base_dir"},
		{"docker", map[string]any{"grace_period": "soon"}, "grace_period"},
		{"exec", nil, "no command"},
		{"exec", DefaultDockerConfig(), "want provider.ExecConfig or map[string]any"},
	} {
		_, err := New(tc.kind, tc.cfg, nil)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%q, %v): %v; want %q", tc.kind, tc.cfg, err, tc.want)
		}
	}
}
