// Package gossip wraps hashicorp/memberlist for Colony: compact versioned
// node metadata, membership events, join with retry and backoff, the
// encryption keyring and gossip metrics. It never reads flags, environment
// or files: callers pass a Config.
package gossip
