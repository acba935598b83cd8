package workload

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one started process with the goroutines that serve it: a waiter
// (ends when the process exits) and one log copier per stream (end when
// the pipe's last writer is gone, or when finish gives up on it).
type proc struct {
	cmd     *exec.Cmd
	exited  chan error // the waiter's result, buffered
	readers [2]*os.File
	logs    [2]*logFile
	copies  sync.WaitGroup
}

// start creates the instance's process in its own process group, with its
// output piped to the log files.
func (r *Runner) start(in *instance, spec *Assignment) (*proc, error) {
	workDir := spec.WorkingDir
	if workDir == "" {
		workDir = filepath.Join(in.dir, "work")
	}
	if err := os.MkdirAll(workDir, 0o750); err != nil {
		return nil, fmt.Errorf("create working dir: %w", err)
	}
	metricsPath := filepath.Join(in.dir, "metrics.json")
	if err := removeQuiet(metricsPath); err != nil {
		return nil, fmt.Errorf("remove old metrics file: %w", err)
	}
	env := buildEnv(r.cfg.BaseEnv, spec, metricsPath)
	path, err := lookPath(spec.Argv[0], envPath(env), workDir)
	if err != nil {
		return nil, err
	}

	p := &proc{exited: make(chan error, 1)}
	var writers [2]*os.File
	fail := func(err error) (*proc, error) {
		closeAll(writers[:])
		closeAll(p.readers[:])
		for _, l := range p.logs {
			if l != nil {
				l.close()
			}
		}
		return nil, err
	}
	for i, stream := range []string{Stdout, Stderr} {
		if p.logs[i], err = openLog(&in.logMu, logPath(in.dir, stream), r.cfg.LogMaxBytes); err != nil {
			return fail(err)
		}
		if p.readers[i], writers[i], err = os.Pipe(); err != nil {
			return fail(fmt.Errorf("create pipe: %w", err))
		}
	}
	p.cmd = &exec.Cmd{
		Path:   path,
		Args:   slices.Clone(spec.Argv),
		Env:    env,
		Dir:    workDir,
		Stdout: writers[0],
		Stderr: writers[1],
		// Own process group: stopping the instance signals everything it
		// started, and the agent's terminal signals do not reach it.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if err := p.cmd.Start(); err != nil {
		return fail(fmt.Errorf("start %s: %w", spec.Argv[0], err))
	}
	// Only the child holds the write ends now: EOF on the pipes means
	// every process that inherited them is gone.
	closeAll(writers[:])
	go func() { p.exited <- p.cmd.Wait() }()
	for i := range p.readers {
		p.copies.Add(1)
		go func() {
			defer p.copies.Done()
			io.Copy(p.logs[i], p.readers[i]) //nolint:errcheck // logFile never fails; a closed reader ends the copy
		}()
	}
	return p, nil
}

// finish waits for the copiers (bounded: a process that left the group may
// hold a pipe open) and closes the pipes and logs. The process has exited.
func (p *proc) finish() {
	done := make(chan struct{})
	go func() { p.copies.Wait(); close(done) }()
	t := time.NewTimer(copyDrainTimeout)
	select {
	case <-done:
	case <-t.C:
		closeAll(p.readers[:]) // unblocks the copiers' reads
		<-done
	}
	t.Stop()
	closeAll(p.readers[:])
	for _, l := range p.logs {
		l.close()
	}
}

// buildEnv is base, then the assignment's variables, then Colony's own.
func buildEnv(base []string, spec *Assignment, metricsPath string) []string {
	m := make(map[string]string, len(base)+len(spec.Env)+3)
	for _, kv := range base {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	for k, v := range spec.Env {
		m[k] = v
	}
	m[EnvInstanceID] = spec.InstanceID
	m[EnvDeployment] = spec.Deployment
	m[EnvMetricsFile] = metricsPath
	env := make([]string, 0, len(m))
	for k, v := range m {
		env = append(env, k+"="+v)
	}
	slices.Sort(env)
	return env
}

func envPath(env []string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			return v
		}
	}
	return ""
}

// ErrNotFound is returned (wrapped) when a workload's program does not exist.
var ErrNotFound = errors.New("program not found")

// lookPath resolves prog like a shell would with the workload's PATH (not
// the agent's): a name with a slash is taken as is (relative to dir).
func lookPath(prog, pathEnv, dir string) (string, error) {
	if strings.Contains(prog, "/") {
		p := prog
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if err := executable(p); err != nil {
			return "", fmt.Errorf("%w: %s: %w", ErrNotFound, prog, err)
		}
		return p, nil
	}
	for _, d := range filepath.SplitList(pathEnv) {
		if d == "" || !filepath.IsAbs(d) {
			continue // relative PATH entries would depend on the working dir
		}
		p := filepath.Join(d, prog)
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %q in PATH %q", ErrNotFound, prog, pathEnv)
}

func executable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return errors.New("not an executable file")
	}
	return nil
}
