package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
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
	// In a container, the cgroup limits are what the node really offers.
	if mib, ok := cgroupMemoryMiB(); ok && (m.MemoryMiB == 0 || mib < m.MemoryMiB) {
		m.MemoryMiB = mib
	}
	if cpus, ok := cgroupCPUs(); ok && cpus < m.CPUs {
		m.CPUs = cpus
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
		if len(m.Kernel) > 64 {
			m.Kernel = m.Kernel[:64]
		}
	}
}

// cgroupMemoryMiB reads the memory limit of this process's cgroup (v2,
// then v1); ok is false when there is none.
func cgroupMemoryMiB() (uint64, bool) {
	for _, p := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || v == 0 || v >= 1<<62 { // "max", or v1's "unlimited"
			return 0, false
		}
		return v >> 20, true
	}
	return 0, false
}

// cgroupCPUs reads the CPU quota of this process's cgroup (v2 cpu.max, or
// v1 cfs quota and period), rounded up to whole CPUs.
func cgroupCPUs() (uint32, bool) {
	var f []string
	if b, err := os.ReadFile("/sys/fs/cgroup/cpu.max"); err == nil {
		f = strings.Fields(string(b))
	} else {
		// cgroup v1: cpu.cfs_quota_us (-1 when unlimited) and cpu.cfs_period_us.
		q, err1 := os.ReadFile("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
		p, err2 := os.ReadFile("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
		if err1 != nil || err2 != nil {
			return 0, false
		}
		f = []string{strings.TrimSpace(string(q)), strings.TrimSpace(string(p))}
	}
	if len(f) != 2 || f[0] == "max" || strings.HasPrefix(f[0], "-") {
		return 0, false
	}
	quota, err1 := strconv.ParseUint(f[0], 10, 64)
	period, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil || period == 0 || quota == 0 {
		return 0, false
	}
	return uint32((quota + period - 1) / period), true
}
