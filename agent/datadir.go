package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/uuid"
	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"colony/gossip"
)

// Files in the data dir.
const (
	nodeIDFile = "node-id"
	peersFile  = "peers.json"
	lockFile   = "LOCK"
)

// dataDir is the agent's on-disk state, locked against a second agent.
type dataDir struct {
	path string
	lock *os.File
}

func openDataDir(path string) (*dataDir, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(path, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open data dir lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		owner, _ := os.ReadFile(f.Name())
		f.Close()
		return nil, fmt.Errorf("data dir %s is in use by another colony agent (pid %s): give each agent its own --data-dir", path, strings.TrimSpace(string(owner)))
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(fmt.Sprintf("%d\n", os.Getpid())), 0)
	return &dataDir{path: path, lock: f}, nil
}

func (d *dataDir) close() {
	if d.lock != nil {
		_ = unix.Flock(int(d.lock.Fd()), unix.LOCK_UN)
		d.lock.Close()
		d.lock = nil
	}
}

// nodeID returns the node's permanent ID, creating it on first boot. The ID
// lives only in the data dir: an image must never contain it.
func (d *dataDir) nodeID() (id uuid.UUID, created bool, err error) {
	p := filepath.Join(d.path, nodeIDFile)
	b, err := os.ReadFile(p)
	if err == nil {
		id, err := uuid.Parse(strings.TrimSpace(string(b)))
		if err != nil {
			return uuid.Nil, false, fmt.Errorf("%s is corrupt (%v): delete it to give this node a new identity", p, err)
		}
		return id, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return uuid.Nil, false, fmt.Errorf("read node id: %w", err)
	}
	id = uuid.New()
	if err := writeFileAtomic(p, []byte(id.String()+"\n")); err != nil {
		return uuid.Nil, false, fmt.Errorf("save node id: %w", err)
	}
	return id, true, nil
}

// loadPeers returns the gossip addresses saved by the last run.
func (d *dataDir) loadPeers() ([]string, error) {
	b, err := os.ReadFile(filepath.Join(d.path, peersFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read saved peers: %w", err)
	}
	var peers []string
	if err := json.Unmarshal(b, &peers); err != nil {
		return nil, fmt.Errorf("saved peers file %s is corrupt (%v): delete it or join with --join", filepath.Join(d.path, peersFile), err)
	}
	return peers, nil
}

func (d *dataDir) savePeers(peers []string) error {
	b, err := json.Marshal(peers)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(d.path, peersFile), b)
}

// writeFileAtomic writes through a temporary file and a rename, so a crash
// leaves either the old or the new content, never half of one.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// detectCapabilities fills in what this host offers.
func detectCapabilities(m *gossip.Meta) {
	m.CPUs = uint32(runtime.NumCPU())
	m.Arch = runtime.GOARCH
	m.OS = runtime.GOOS
	m.AgentVersion = Version
	if fs, err := procfs.NewDefaultFS(); err == nil {
		if mi, err := fs.Meminfo(); err == nil && mi.MemTotal != nil {
			m.MemoryMiB = *mi.MemTotal / 1024
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
		if len(m.Kernel) > 64 {
			m.Kernel = m.Kernel[:64]
		}
	}
}
