package workload

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"
)

const pidFileName = "pids.json"

// pidFile records the process group of every live instance, so the next
// run of the agent can kill what a crashed run left behind.
type pidFile struct {
	path string
	boot string

	mu     sync.Mutex
	groups map[string]int // instance ID -> process group ID
}

type pidFileData struct {
	BootID string         `json:"boot_id"`
	Groups map[string]int `json:"groups"`
}

func (p *pidFile) set(id string, pgid int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pgid == 0 {
		if _, ok := p.groups[id]; !ok {
			return nil
		}
		delete(p.groups, id)
	} else {
		p.groups[id] = pgid
	}
	return p.writeLocked()
}

func (p *pidFile) writeLocked() error {
	b, err := json.Marshal(pidFileData{BootID: p.boot, Groups: p.groups})
	if err != nil {
		return fmt.Errorf("encode pid file: %w", err)
	}
	return writeFileAtomic(p.path, b)
}

// writeFileAtomic replaces path with b: a reader sees the old or the new
// content, never a mix.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// strayGroup is a process group a previous run left behind.
type strayGroup struct {
	id   string
	pgid int
}

// findStrays reads the pid file a previous run wrote and returns the
// groups still alive that really are ours: same boot, and at least one
// live member carries the instance's COLONY_INSTANCE_ID (a group number
// reused by an unrelated program does not).
func findStrays(path, boot string) ([]strayGroup, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pid file: %w", err)
	}
	var d pidFileData
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("decode pid file %s: %w", path, err)
	}
	if d.BootID == "" || d.BootID != boot {
		return nil, nil
	}
	var out []strayGroup
	for id, pgid := range d.Groups {
		if pgid <= 1 {
			continue
		}
		for _, pid := range groupMembers(pgid) {
			if hasEnv(pid, EnvInstanceID+"="+id) {
				out = append(out, strayGroup{id: id, pgid: pgid})
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out, nil
}

// killStrays SIGKILLs the groups and waits (up to timeout) until none of
// their members is alive. They are not our children, so they are reaped by
// whoever inherited them; zombies count as gone.
func killStrays(strays []strayGroup, timeout time.Duration) error {
	for _, s := range strays {
		if err := killGroup(s.pgid, syscall.SIGKILL); err != nil {
			return fmt.Errorf("kill stray group %d of %s: %w", s.pgid, s.id, err)
		}
	}
	deadline := time.Now().Add(timeout)
	for _, s := range strays {
		for len(groupMembers(s.pgid)) > 0 {
			if time.Now().After(deadline) {
				return fmt.Errorf("stray group %d of %s still alive after SIGKILL", s.pgid, s.id)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}
