package consensus

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// openOffline opens the stores of a stopped node. The bolt file lock makes
// a running agent show up as a clear error instead of a hang.
func openOffline(dataDir string, retain int, hlog *hclogAdapter) (*raftboltdb.BoltStore, *raft.FileSnapshotStore, error) {
	dir := raftDir(dataDir)
	path := filepath.Join(dir, "raft.db")
	if _, err := os.Stat(path); err != nil {
		return nil, nil, fmt.Errorf("no raft state in %s: %w", dir, err)
	}
	store, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bbolt.Options{Timeout: 2 * time.Second}})
	if err != nil {
		return nil, nil, fmt.Errorf("open %s (is the agent still running?): %w", path, err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, max(retain, 1), hlog)
	if err != nil {
		_ = store.Close()
		return nil, nil, fmt.Errorf("open snapshots in %s: %w", dir, err)
	}
	return store, snaps, nil
}

// Recover forces the Raft configuration of a stopped node to servers: the
// last resort after quorum loss. Run it with the same list on every
// surviving voter while all are stopped, then start them; they elect a
// leader among themselves. It commits every entry in the local log, even
// ones that never reached a quorum (see DESIGN.md). cfg needs NodeID and
// DataDir; the addresses are not used.
func Recover(cfg Config, servers []Server) error {
	if cfg.NodeID == "" || cfg.DataDir == "" {
		return errors.New("recover: node ID and data dir are required")
	}
	conf, err := recoveryConfiguration(servers)
	if err != nil {
		return err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	hlog := newHCLogAdapter(logger.With("subsystem", "raft"), cfg.RaftLogLevel)
	store, snaps, err := openOffline(cfg.DataDir, cfg.SnapshotRetain, hlog)
	if err != nil {
		return err
	}
	defer store.Close()
	return recoverStores(cfg, hlog, store, snaps, conf)
}

func recoveryConfiguration(servers []Server) (raft.Configuration, error) {
	var conf raft.Configuration
	voters := 0
	for _, s := range servers {
		if s.ID == "" || s.Address == "" {
			return conf, fmt.Errorf("recover: server %+v needs an ID and an address", s)
		}
		suf := raft.Nonvoter
		if s.Voter {
			suf = raft.Voter
			voters++
		}
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: suf, ID: raft.ServerID(s.ID), Address: raft.ServerAddress(s.Address)})
	}
	if voters == 0 {
		return conf, errors.New("recover: the new configuration needs at least one voter")
	}
	return conf, nil
}

// recoverStores runs raft.RecoverCluster against open stores. The FSM it
// replays into is thrown away, as raft requires.
func recoverStores(cfg Config, hlog *hclogAdapter, store *raftboltdb.BoltStore, snaps raft.SnapshotStore, conf raft.Configuration) error {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hlog
	_, trans := raft.NewInmemTransport("")
	defer trans.Close()
	if err := raft.RecoverCluster(rc, NewFSM(NewState(), nil), store, store, snaps, trans, conf); err != nil {
		return fmt.Errorf("recover raft configuration: %w", err)
	}
	return nil
}

// peersFileEntry is one line of raft's peers.json (ReadConfigJSON format).
type peersFileEntry struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	NonVoter bool   `json:"non_voter"`
}

// WritePeersFile writes DataDir/raft/peers.json: the next New on that data
// dir forces this configuration before starting (the file-based form of
// Recover, usable when only files can be placed on the machine).
func WritePeersFile(dataDir string, servers []Server) error {
	if _, err := recoveryConfiguration(servers); err != nil {
		return err
	}
	entries := make([]peersFileEntry, 0, len(servers))
	for _, s := range servers {
		entries = append(entries, peersFileEntry{ID: s.ID, Address: s.Address, NonVoter: !s.Voter})
	}
	b, err := json.MarshalIndent(entries, "", "  ")
	if err != nil {
		return err
	}
	dir := raftDir(dataDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp := filepath.Join(dir, PeersFileName+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, PeersFileName))
}

// ReadServers returns the latest Raft configuration stored in a stopped
// node's data dir: the input an operator needs to pick the survivors for
// Recover.
func ReadServers(dataDir string) (servers []Server, err error) {
	// raft.DecodeConfiguration panics on a corrupt entry; an operator tool
	// should report that, not crash.
	defer func() {
		if r := recover(); r != nil {
			servers, err = nil, fmt.Errorf("corrupt raft configuration entry: %v", r)
		}
	}()
	store, snaps, err := openOffline(dataDir, 1, newHCLogAdapter(slog.New(slog.DiscardHandler), slog.LevelError))
	if err != nil {
		return nil, err
	}
	defer store.Close()
	first, err := store.FirstIndex()
	if err != nil {
		return nil, err
	}
	last, err := store.LastIndex()
	if err != nil {
		return nil, err
	}
	for i := last; i >= first && i > 0; i-- {
		var l raft.Log
		if err := store.GetLog(i, &l); err != nil {
			return nil, fmt.Errorf("read log %d: %w", i, err)
		}
		if l.Type == raft.LogConfiguration {
			return fromRaftServers(raft.DecodeConfiguration(l.Data).Servers), nil
		}
	}
	metas, err := snaps.List()
	if err != nil {
		return nil, err
	}
	if len(metas) == 0 {
		return nil, errors.New("no raft configuration found in the log or snapshots")
	}
	return fromRaftServers(metas[0].Configuration.Servers), nil
}
