package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Container labels the docker provider puts on what it launches; List
// finds its containers by them, so they are its whole memory.
const (
	DockerLabelProvider = "colony.provider"
	DockerLabelKey      = "colony.key"
	DockerLabelIndex    = "colony.index"
	DockerLabelType     = "colony.type"
	DockerLabelLabels   = "colony.labels"
)

// DockerConfig configures the docker provider, which runs Colony image
// containers through the docker CLI.
type DockerConfig struct {
	// Name of this provider: container names start with it and containers
	// carry it in the colony.provider label (default "docker"). Two
	// providers with different names on one engine do not see each other's
	// containers.
	Name string `yaml:"name"`
	// Docker is the docker CLI (default "docker", looked up in PATH).
	Docker string `yaml:"docker"`
	// Image is the Colony image (default colony:dev).
	Image string `yaml:"image"`
	// Pull is docker run's --pull policy: missing, always or never.
	Pull string `yaml:"pull"`
	// Network is the Docker network containers join (default: the engine's
	// default bridge). It must let them reach the join address.
	Network string `yaml:"network"`
	// Types offered: Profile.CPUs becomes --cpus, Profile.MemoryMiB
	// --memory (0: no limit), Profile.Labels agent labels.
	Types []InstanceType `yaml:"types"`
	// DataDir is the agent's data dir inside the container (the image's
	// volume).
	DataDir string `yaml:"data_dir"`
	// Args are extra `colony agent` flags.
	Args []string `yaml:"args"`
	// Env entries (KEY=value) are set in the containers (COLONY_ENCRYPT…).
	Env []string `yaml:"env"`
	// RunArgs are extra `docker run` flags (--restart unless-stopped, …).
	RunArgs []string `yaml:"run_args"`
	// GracePeriod is docker stop's timeout: SIGTERM (graceful leave), then
	// SIGKILL.
	GracePeriod time.Duration `yaml:"grace_period"`
	// CallTimeout bounds one docker CLI call; it runs out as ErrTransient.
	CallTimeout time.Duration `yaml:"call_timeout"`
	// KeepTerminated is how long a stopped container stays (List shows it
	// terminated; its slot stays used) before List removes it and its
	// anonymous volume.
	KeepTerminated time.Duration `yaml:"keep_terminated"`
	// Logger (nil: discard).
	Logger *slog.Logger `yaml:"-"`
}

// DefaultDockerConfig returns a heterogeneous default pool: small and
// large CPU/memory limits.
func DefaultDockerConfig() DockerConfig {
	return DockerConfig{
		Name:   "docker",
		Docker: "docker",
		Image:  "colony:dev",
		Pull:   "missing",
		Types: []InstanceType{
			{Name: "small", Profile: Profile{CPUs: 0.5, MemoryMiB: 256, Arch: "amd64", OS: "linux"}, CostPerHour: 0.01},
			{Name: "large", Profile: Profile{CPUs: 2, MemoryMiB: 2048, Arch: "amd64", OS: "linux"}, CostPerHour: 0.04},
		},
		DataDir:        "/data",
		GracePeriod:    10 * time.Second,
		CallTimeout:    2 * time.Minute,
		KeepTerminated: time.Hour,
	}
}

// Validate checks the configuration.
func (c DockerConfig) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: docker provider %q: %s", ErrInvalid, c.Name, fmt.Sprintf(format, a...))
	}
	switch {
	case c.Name == "" || !validName(c.Name):
		return bad("name must be letters, digits and dashes")
	case c.Docker == "":
		return bad("no docker CLI")
	case c.Image == "":
		return bad("no image")
	case c.Pull != "missing" && c.Pull != "always" && c.Pull != "never":
		return bad("pull %q: want missing, always or never", c.Pull)
	case c.DataDir == "":
		return bad("no data_dir")
	case c.GracePeriod < 0 || c.KeepTerminated < 0:
		return bad("negative duration")
	case c.CallTimeout <= 0:
		return bad("call_timeout must be positive")
	}
	if err := validateTypes(c.Types); err != nil {
		return fmt.Errorf("docker provider %q: %w", c.Name, err)
	}
	for _, e := range c.Env {
		if !strings.Contains(e, "=") {
			return bad("env entry %q: want KEY=value", e)
		}
	}
	return nil
}

// Docker is the docker provider.
type Docker struct {
	cfg DockerConfig
	log *slog.Logger
	// mu serialises launches in this process; the engine's unique
	// container names catch the rest (another leader).
	mu sync.Mutex
}

// NewDocker returns a docker provider. It does not contact the engine: a
// provider is configured before Docker may be up.
func NewDocker(cfg DockerConfig) (*Docker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Docker{cfg: cfg, log: log.With("subsystem", "provider", "provider", cfg.Name)}, nil
}

// Name implements Provider.
func (d *Docker) Name() string { return d.cfg.Name }

// InstanceTypes implements Provider.
func (d *Docker) InstanceTypes(context.Context) ([]InstanceType, error) {
	return slices.Clone(d.cfg.Types), nil
}

// dockerError is a failed docker CLI call.
type dockerError struct {
	args   []string
	code   int
	stderr string
}

func (e *dockerError) Error() string {
	return fmt.Sprintf("docker %s: exit %d: %s", e.args[0], e.code, tail(e.stderr, 1000))
}

// Transient daemon conditions worth a retry.
var dockerTransient = []string{"Cannot connect to the Docker daemon", "connection refused", "i/o timeout", "TLS handshake timeout", "context deadline exceeded", "toomanyrequests"}

// docker runs the CLI, classifying failures.
func (d *Docker) docker(ctx context.Context, args ...string) ([]byte, error) {
	cctx, cancel := context.WithTimeout(ctx, d.cfg.CallTimeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, d.cfg.Docker, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("docker %s: %w", args[0], ctx.Err())
	}
	if cctx.Err() != nil {
		return nil, fmt.Errorf("docker %s: no answer within %s: %w (%w)", args[0], d.cfg.CallTimeout, ErrTransient, context.DeadlineExceeded)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return nil, fmt.Errorf("docker %s: %w", args[0], err)
	}
	derr := &dockerError{args: args, code: ee.ExitCode(), stderr: stderr.String()}
	for _, s := range dockerTransient {
		if strings.Contains(derr.stderr, s) {
			return stdout.Bytes(), fmt.Errorf("%w: %w", derr, ErrTransient)
		}
	}
	return stdout.Bytes(), derr
}

// dockerContainer is the part of `docker inspect` the provider reads.
type dockerContainer struct {
	ID      string    `json:"Id"`
	Name    string    `json:"Name"`
	Created time.Time `json:"Created"`
	State   struct {
		Status     string    `json:"Status"`
		FinishedAt time.Time `json:"FinishedAt"`
	} `json:"State"`
	Config struct {
		Labels map[string]string `json:"Labels"`
	} `json:"Config"`
	NetworkSettings struct {
		Networks map[string]struct {
			IPAddress string `json:"IPAddress"`
		} `json:"Networks"`
	} `json:"NetworkSettings"`
}

func (d *Docker) instance(c dockerContainer) Instance {
	l := c.Config.Labels
	in := Instance{
		ID:             strings.TrimPrefix(c.Name, "/"),
		Type:           l[DockerLabelType],
		IdempotencyKey: l[DockerLabelKey],
		CreatedAt:      c.Created.UTC(),
	}
	in.Index, _ = strconv.Atoi(l[DockerLabelIndex])
	if s := l[DockerLabelLabels]; s != "" {
		_ = json.Unmarshal([]byte(s), &in.Labels)
	}
	switch c.State.Status {
	case "created", "restarting":
		in.State = StatePending
	case "running", "paused":
		in.State = StateRunning
	default: // exited, dead, removing
		in.State = StateTerminated
	}
	if in.State != StateTerminated {
		var ip string
		if n, ok := c.NetworkSettings.Networks[d.cfg.Network]; ok {
			ip = n.IPAddress
		} else {
			for _, n := range c.NetworkSettings.Networks {
				ip = n.IPAddress
				break
			}
		}
		if ip != "" {
			in.Addr = net.JoinHostPort(ip, "7946")
		}
	}
	return in
}

// inspect returns this provider's containers; with names, only those.
func (d *Docker) inspect(ctx context.Context) ([]dockerContainer, error) {
	out, err := d.docker(ctx, "ps", "-a", "-q", "--no-trunc", "--filter", "label="+DockerLabelProvider+"="+d.cfg.Name)
	if err != nil {
		return nil, err
	}
	ids := strings.Fields(string(out))
	if len(ids) == 0 {
		return nil, nil
	}
	out, err = d.docker(ctx, append([]string{"inspect", "--type", "container"}, ids...)...)
	if err != nil {
		// A container removed between ps and inspect: inspect prints the
		// others and fails for that one only.
		var derr *dockerError
		if !errors.As(err, &derr) || !onlyNoSuch(derr.stderr) {
			return nil, err
		}
	}
	var cs []dockerContainer
	if err := json.Unmarshal(out, &cs); err != nil {
		return nil, fmt.Errorf("docker inspect: %w", err)
	}
	return cs, nil
}

// onlyNoSuch reports whether every error line is about a missing object.
func onlyNoSuch(stderr string) bool {
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if line != "" && !strings.Contains(line, "No such") {
			return false
		}
	}
	return true
}

// List implements Provider: the engine's containers carrying this
// provider's label. Containers stopped more than KeepTerminated ago are
// removed with their anonymous volumes.
func (d *Docker) List(ctx context.Context) ([]Instance, error) {
	cs, err := d.inspect(ctx)
	if err != nil {
		return nil, fmt.Errorf("docker provider %q: list: %w", d.cfg.Name, err)
	}
	out := make([]Instance, 0, len(cs))
	for _, c := range cs {
		in := d.instance(c)
		if !in.Live() && !c.State.FinishedAt.IsZero() && time.Since(c.State.FinishedAt) > d.cfg.KeepTerminated {
			if _, err := d.docker(ctx, "rm", "-v", c.ID); err != nil {
				d.log.Warn("cannot remove old container", "id", in.ID, "err", err)
			}
			continue
		}
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b Instance) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Launch implements Provider: it lists, then runs one container per
// missing slot, named after the key and slot so the engine itself refuses
// a second copy ("name already in use" counts as launched).
func (d *Docker) Launch(ctx context.Context, req LaunchRequest) ([]Instance, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	typ, err := findType(d.cfg.Types, req.Type)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	all, err := d.List(ctx)
	if err != nil {
		return nil, err
	}
	missing := MissingIndexes(WithKey(all, req.IdempotencyKey), req.Count)
	labels := mergeLabels(typ.Profile.Labels, req.Labels)
	for _, idx := range missing {
		if err := d.run(ctx, req, typ, labels, idx); err != nil {
			return nil, fmt.Errorf("docker provider %q: launch %s slot %d: %w", d.cfg.Name, req.IdempotencyKey, idx, err)
		}
	}
	if len(missing) > 0 {
		if all, err = d.List(ctx); err != nil {
			return nil, err
		}
	}
	return WithKey(all, req.IdempotencyKey), nil
}

func (d *Docker) run(ctx context.Context, req LaunchRequest, typ InstanceType, labels map[string]string, idx int) error {
	name := InstanceName(d.cfg.Name, req.IdempotencyKey, idx)
	lj, _ := json.Marshal(labels)
	args := []string{"run", "-d", "--name", name, "--hostname", name, "--pull", d.cfg.Pull,
		"--label", DockerLabelProvider + "=" + d.cfg.Name,
		"--label", DockerLabelKey + "=" + req.IdempotencyKey,
		"--label", DockerLabelIndex + "=" + strconv.Itoa(idx),
		"--label", DockerLabelType + "=" + typ.Name,
		"--label", DockerLabelLabels + "=" + string(lj),
	}
	if d.cfg.Network != "" {
		args = append(args, "--network", d.cfg.Network)
	}
	if typ.Profile.CPUs > 0 {
		args = append(args, "--cpus", strconv.FormatFloat(typ.Profile.CPUs, 'f', -1, 64))
	}
	if typ.Profile.MemoryMiB > 0 {
		args = append(args, "--memory", strconv.FormatInt(typ.Profile.MemoryMiB, 10)+"m")
	}
	for _, e := range d.cfg.Env {
		args = append(args, "--env", e)
	}
	args = append(args, d.cfg.RunArgs...)
	args = append(args, d.cfg.Image, "agent", "--node-name", name, "--data-dir", d.cfg.DataDir)
	if req.JoinAddr != "" {
		args = append(args, "--join", req.JoinAddr)
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		args = append(args, "--label", k+"="+labels[k])
	}
	args = append(args, d.cfg.Args...)
	_, err := d.docker(ctx, args...)
	var derr *dockerError
	if errors.As(err, &derr) && strings.Contains(derr.stderr, "is already in use") {
		d.log.Info("container already exists: launched by someone else", "id", name)
		return nil
	}
	if err != nil {
		return err
	}
	d.log.Info("launched container", "id", name, "key", req.IdempotencyKey, "index", idx, "type", typ.Name)
	return nil
}

// Terminate implements Provider: docker stop (SIGTERM, the agent leaves;
// SIGKILL after GracePeriod). The stopped container stays, listed as
// terminated, until KeepTerminated passes. Missing containers are success.
func (d *Docker) Terminate(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	// Only containers carrying this provider's label: an ID that merely
	// looks like ours is never stopped.
	all, err := d.List(ctx)
	if err != nil {
		return fmt.Errorf("docker provider %q: terminate: %w", d.cfg.Name, err)
	}
	var mine []string
	for _, in := range all {
		if in.Live() && slices.Contains(ids, in.ID) {
			mine = append(mine, in.ID)
		}
	}
	if len(mine) == 0 {
		return nil
	}
	grace := strconv.Itoa(int((d.cfg.GracePeriod + time.Second - 1) / time.Second))
	_, err = d.docker(ctx, append([]string{"stop", "-t", grace}, mine...)...)
	var derr *dockerError
	if errors.As(err, &derr) && onlyNoSuch(derr.stderr) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("docker provider %q: terminate: %w", d.cfg.Name, err)
	}
	d.log.Info("terminated containers", "ids", mine)
	return nil
}
