package agent

import (
	"path/filepath"
)

// childSecurity passes this agent's security settings to the agents a
// local pool launches (scaling/provider.Local), so they can join: the TLS
// flags, cluster label and ACL switch go first in "args", the primary
// gossip key and the ACL agent token in "env" (never on a command line),
// where the pool's own entries, which come after, override them.
func (a *Agent) childSecurity(cfg map[string]any) {
	var args []any
	abs := func(p string) string {
		if ap, err := filepath.Abs(p); err == nil {
			return ap
		}
		return p
	}
	if t := a.cfg.TLS; t.Enabled() {
		args = append(args, "--tls-ca", abs(t.CAFile), "--tls-cert", abs(t.CertFile), "--tls-key", abs(t.KeyFile))
		if t.VerifyIncoming {
			args = append(args, "--tls-verify-incoming")
		}
		if t.ServerName != "" {
			args = append(args, "--tls-server-name", t.ServerName)
		}
	}
	if a.cfg.ClusterLabel != "" {
		args = append(args, "--cluster-label", a.cfg.ClusterLabel)
	}
	if a.cfg.ACLEnabled {
		args = append(args, "--acl-enabled", "--acl-default-read", a.cfg.ACLDefaultRead)
	}
	if len(args) > 0 {
		if mine, ok := anyList(cfg["args"]); ok {
			cfg["args"] = append(args, mine...)
		}
	}
	var env []any
	if k := a.primaryGossipKey(); k != "" {
		env = append(env, "COLONY_ENCRYPT="+k)
	}
	if a.cfg.ACLEnabled && a.cfg.ACLAgentToken != "" {
		// Without it a launched agent could make no agent-to-agent call
		// (promotion, forwarding, assignments) in a cluster with ACLs.
		env = append(env, "COLONY_ACL_AGENT_TOKEN="+a.cfg.ACLAgentToken)
	}
	if len(env) > 0 {
		if mine, ok := anyList(cfg["env"]); ok {
			cfg["env"] = append(env, mine...)
		}
	}
}

// primaryGossipKey is the key gossip is encrypted with, "" without
// encryption.
func (a *Agent) primaryGossipKey() string {
	kr, err := a.gossip.Keys()
	if err != nil {
		return ""
	}
	return kr.Primary
}

// anyList returns a config list as []any; ok is false for anything else
// (left for the provider to refuse).
func anyList(v any) ([]any, bool) {
	switch l := v.(type) {
	case nil:
		return nil, true
	case []any:
		return l, true
	case []string:
		out := make([]any, len(l))
		for i, s := range l {
			out[i] = s
		}
		return out, true
	}
	return nil, false
}
