package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Exit codes an exec provider script uses to say what kind of failure it
// hit (from sysexits.h); any other non-zero code is a permanent error.
const (
	// ExitTransient (EX_TEMPFAIL): retry later (throttled, network, cloud
	// API hiccup). Maps to ErrTransient.
	ExitTransient = 75
	// ExitCapacity (EX_UNAVAILABLE): no capacity or quota for this type.
	// Maps to ErrCapacity.
	ExitCapacity = 69
	// ExitUnknownType (EX_DATAERR): the type is not offered. Maps to
	// ErrUnknownType.
	ExitUnknownType = 65
)

// ExecProtocolVersion is sent in every request as "version"; a script can
// refuse versions it does not know.
const ExecProtocolVersion = 1

// ExecConfig configures the exec provider: an operator script that speaks
// JSON on stdin/stdout (schema: EXEC.md).
type ExecConfig struct {
	// Name of this provider (default "exec").
	Name string `yaml:"name"`
	// Command is the script's path; it is run as `Command Args... SUBCOMMAND`.
	Command string `yaml:"command"`
	// Args are passed before the subcommand.
	Args []string `yaml:"args"`
	// Env entries (KEY=value) are added to the agent's environment.
	Env []string `yaml:"env"`
	// Dir is the working directory (default: the agent's).
	Dir string `yaml:"dir"`
	// Timeout bounds one script run; the script's whole process group is
	// killed when it passes and the call fails with ErrTransient.
	Timeout time.Duration `yaml:"timeout"`
	// MaxOutput bounds what the script may print on stdout, in bytes.
	MaxOutput int `yaml:"max_output"`
	// Logger receives debug lines for each run (nil: discard).
	Logger *slog.Logger `yaml:"-"`
}

// DefaultExecConfig returns defaults sized for cloud CLIs, whose launch
// calls take tens of seconds.
func DefaultExecConfig() ExecConfig {
	return ExecConfig{Name: "exec", Timeout: 2 * time.Minute, MaxOutput: 4 << 20}
}

// Validate checks the configuration.
func (c ExecConfig) Validate() error {
	switch {
	case c.Name == "":
		return fmt.Errorf("%w: exec provider: empty name", ErrInvalid)
	case c.Command == "":
		return fmt.Errorf("%w: exec provider %q: no command (the operator script's path)", ErrInvalid, c.Name)
	case c.Timeout <= 0:
		return fmt.Errorf("%w: exec provider %q: timeout must be positive", ErrInvalid, c.Name)
	case c.MaxOutput < 1024:
		return fmt.Errorf("%w: exec provider %q: max_output %d: want at least 1024 bytes", ErrInvalid, c.Name, c.MaxOutput)
	}
	for _, e := range c.Env {
		if !strings.Contains(e, "=") {
			return fmt.Errorf("%w: exec provider %q: env entry %q: want KEY=value", ErrInvalid, c.Name, e)
		}
	}
	return nil
}

// Exec is the exec provider: every call runs the operator script once.
type Exec struct {
	cfg ExecConfig
	log *slog.Logger
}

// NewExec returns an exec provider. It checks the script exists and is
// executable, so a typo fails at configuration time, not at the first
// scale-up.
func NewExec(cfg ExecConfig) (*Exec, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	path, err := exec.LookPath(cfg.Command)
	if err != nil {
		return nil, fmt.Errorf("%w: exec provider %q: %w", ErrInvalid, cfg.Name, err)
	}
	cfg.Command = path
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Exec{cfg: cfg, log: log.With("subsystem", "provider", "provider", cfg.Name)}, nil
}

// Name implements Provider.
func (e *Exec) Name() string { return e.cfg.Name }

type execTypesResponse struct {
	Types []InstanceType `json:"types"`
}

type execLaunchRequest struct {
	Version        int               `json:"version"`
	IdempotencyKey string            `json:"idempotency_key"`
	Type           string            `json:"type"`
	Count          int               `json:"count"`
	Indexes        []int             `json:"indexes"`
	JoinAddr       string            `json:"join_addr"`
	Labels         map[string]string `json:"labels"`
}

type execInstancesResponse struct {
	Instances []Instance `json:"instances"`
}

type execTerminateRequest struct {
	Version int      `json:"version"`
	IDs     []string `json:"ids"`
}

type execTerminateResponse struct {
	Terminated []string `json:"terminated"`
}

type execVersionRequest struct {
	Version int `json:"version"`
}

// InstanceTypes implements Provider (subcommand "types").
func (e *Exec) InstanceTypes(ctx context.Context) ([]InstanceType, error) {
	var resp execTypesResponse
	if err := e.run(ctx, "types", execVersionRequest{ExecProtocolVersion}, &resp); err != nil {
		return nil, err
	}
	for _, t := range resp.Types {
		if err := t.Validate(); err != nil {
			return nil, fmt.Errorf("exec provider %q: types: %w", e.cfg.Name, err)
		}
	}
	return resp.Types, nil
}

// List implements Provider (subcommand "list").
func (e *Exec) List(ctx context.Context) ([]Instance, error) {
	var resp execInstancesResponse
	if err := e.run(ctx, "list", execVersionRequest{ExecProtocolVersion}, &resp); err != nil {
		return nil, err
	}
	if err := e.checkInstances("list", resp.Instances); err != nil {
		return nil, err
	}
	return resp.Instances, nil
}

// Launch implements Provider: it lists first and asks the script only for
// the missing slots, so a repeated launch with the same key creates
// nothing; the script must also tag instances and, where the cloud has one,
// pass the key as its idempotency token (a launch in flight when the leader
// died is not always in the list yet).
func (e *Exec) Launch(ctx context.Context, req LaunchRequest) ([]Instance, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	all, err := e.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("launch %s: list before launch: %w", req.IdempotencyKey, err)
	}
	have := WithKey(all, req.IdempotencyKey)
	missing := MissingIndexes(have, req.Count)
	if len(missing) == 0 {
		e.log.Debug("launch already done", "key", req.IdempotencyKey, "instances", len(have))
		return have, nil
	}
	var resp execInstancesResponse
	err = e.run(ctx, "launch", execLaunchRequest{
		Version:        ExecProtocolVersion,
		IdempotencyKey: req.IdempotencyKey,
		Type:           req.Type,
		Count:          req.Count,
		Indexes:        missing,
		JoinAddr:       req.JoinAddr,
		Labels:         mergeLabels(nil, req.Labels),
	}, &resp)
	if err != nil {
		return have, err
	}
	if err := e.checkInstances("launch", resp.Instances); err != nil {
		return have, err
	}
	got := 0
	for _, in := range resp.Instances {
		if in.IdempotencyKey != req.IdempotencyKey || !slices.Contains(missing, in.Index) {
			return have, fmt.Errorf("exec provider %q: launch: script returned instance %q with key %q index %d, want key %q and one of indexes %v",
				e.cfg.Name, in.ID, in.IdempotencyKey, in.Index, req.IdempotencyKey, missing)
		}
		got++
	}
	out := WithKey(append(have, resp.Instances...), req.IdempotencyKey)
	if got < len(missing) {
		return out, fmt.Errorf("exec provider %q: launch: script created %d of %d instances: %w", e.cfg.Name, got, len(missing), ErrCapacity)
	}
	return out, nil
}

// Terminate implements Provider (subcommand "terminate").
func (e *Exec) Terminate(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	var resp execTerminateResponse
	return e.run(ctx, "terminate", execTerminateRequest{Version: ExecProtocolVersion, IDs: ids}, &resp)
}

// checkInstances refuses instances a script got wrong, so bad data never
// reaches the reconciler.
func (e *Exec) checkInstances(sub string, insts []Instance) error {
	seen := map[string]bool{}
	for i, in := range insts {
		var problem string
		switch {
		case in.ID == "":
			problem = "no id"
		case seen[in.ID]:
			problem = "duplicate id " + in.ID
		case !in.State.Valid():
			problem = fmt.Sprintf("state %q (want pending, running or terminated)", in.State)
		case in.Index < 0:
			problem = "negative index"
		}
		if problem != "" {
			return fmt.Errorf("exec provider %q: %s: instance %d: %s", e.cfg.Name, sub, i, problem)
		}
		seen[in.ID] = true
	}
	return nil
}

// errOutputLimit stops copying a runaway script's output.
var errOutputLimit = errors.New("output limit reached")

type limitedBuffer struct {
	buf bytes.Buffer
	max int
	hit bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); len(p) > room {
		l.buf.Write(p[:room])
		l.hit = true
		return room, errOutputLimit
	}
	return l.buf.Write(p)
}

// tail returns the last n bytes of s, for error messages.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// run executes the script with one subcommand, req as JSON on stdin, and
// strictly decodes stdout into resp.
func (e *Exec) run(ctx context.Context, sub string, req, resp any) error {
	in, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("exec provider %q: %s: encode request: %w", e.cfg.Name, sub, err)
	}
	callCtx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(callCtx, e.cfg.Command, append(slices.Clone(e.cfg.Args), sub)...)
	cmd.Dir = e.cfg.Dir
	cmd.Env = append(os.Environ(), e.cfg.Env...)
	cmd.Stdin = bytes.NewReader(in)
	stdout := &limitedBuffer{max: e.cfg.MaxOutput}
	stderr := &limitedBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// Scripts start children (the cloud CLI): kill the whole group, and do
	// not wait for ever on pipes a stray grandchild keeps open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second

	start := time.Now()
	err = cmd.Run()
	took := time.Since(start)
	e.log.Debug("script run", "subcommand", sub, "took", took, "err", err, "stdout_bytes", stdout.buf.Len())
	prefix := fmt.Sprintf("exec provider %q: %s %s", e.cfg.Name, e.cfg.Command, sub)
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", prefix, ctx.Err())
	}
	if callCtx.Err() != nil {
		return fmt.Errorf("%s: no answer within %s, killed: %w (%w)", prefix, e.cfg.Timeout, ErrTransient, context.DeadlineExceeded)
	}
	if stdout.hit {
		return fmt.Errorf("%s: output exceeds %d bytes", prefix, e.cfg.MaxOutput)
	}
	if err != nil {
		msg := tail(stderr.buf.String(), 2000)
		if msg == "" {
			msg = "(no stderr)"
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			switch ee.ExitCode() {
			case ExitTransient:
				return fmt.Errorf("%s: exit %d: %s: %w", prefix, ExitTransient, msg, ErrTransient)
			case ExitCapacity:
				return fmt.Errorf("%s: exit %d: %s: %w", prefix, ExitCapacity, msg, ErrCapacity)
			case ExitUnknownType:
				return fmt.Errorf("%s: exit %d: %s: %w", prefix, ExitUnknownType, msg, ErrUnknownType)
			}
			return fmt.Errorf("%s: %w: %s", prefix, err, msg)
		}
		return fmt.Errorf("%s: %w", prefix, err)
	}
	dec := json.NewDecoder(bytes.NewReader(stdout.buf.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(resp); err != nil {
		return fmt.Errorf("%s: bad JSON on stdout (%w): %q", prefix, err, tail(stdout.buf.String(), 300))
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%s: bad JSON on stdout: trailing data after the response object", prefix)
	}
	return nil
}
