package provider

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// RetryConfig configures the Retry decorator.
type RetryConfig struct {
	// Attempts is the most tries per call, the first included.
	Attempts int `yaml:"attempts"`
	// InitialBackoff is the wait after the first failure; it grows by
	// Multiplier up to MaxBackoff.
	InitialBackoff time.Duration `yaml:"initial_backoff"`
	// MaxBackoff caps the wait between two attempts.
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// Multiplier is the backoff growth factor (≥ 1).
	Multiplier float64 `yaml:"multiplier"`
	// Jitter spreads each wait uniformly by ± this fraction (0..1), so many
	// leaders' pools do not hammer a recovering cloud API in step.
	Jitter float64 `yaml:"jitter"`
	// CallTimeout bounds each attempt; an attempt that runs out counts as
	// transient (Launch and Terminate are idempotent, so retrying an
	// ambiguous call is safe).
	CallTimeout time.Duration `yaml:"call_timeout"`
	// OnEvent, if set, is called synchronously for every failed attempt and
	// for the final outcome of a call that failed at least once (the lead
	// turns these into cluster events). It must not block.
	OnEvent func(Event) `yaml:"-"`
	// Logger receives a line per failed attempt (nil: discard).
	Logger *slog.Logger `yaml:"-"`
}

// DefaultRetryConfig: 5 attempts, 0.5s doubling to 30s with ±20% jitter,
// 3 minutes per attempt. A call therefore always ends within about
// 5×3m + 1m: an intent is never stuck on a hung provider.
func DefaultRetryConfig() RetryConfig {
	return RetryConfig{
		Attempts:       5,
		InitialBackoff: 500 * time.Millisecond,
		MaxBackoff:     30 * time.Second,
		Multiplier:     2,
		Jitter:         0.2,
		CallTimeout:    3 * time.Minute,
	}
}

// Validate checks the configuration.
func (c RetryConfig) Validate() error {
	switch {
	case c.Attempts < 1:
		return fmt.Errorf("%w: retry: attempts %d: want at least 1", ErrInvalid, c.Attempts)
	case c.InitialBackoff < 0 || c.MaxBackoff < c.InitialBackoff:
		return fmt.Errorf("%w: retry: want 0 ≤ initial_backoff ≤ max_backoff", ErrInvalid)
	case c.Multiplier < 1:
		return fmt.Errorf("%w: retry: multiplier %g: want at least 1", ErrInvalid, c.Multiplier)
	case c.Jitter < 0 || c.Jitter > 1:
		return fmt.Errorf("%w: retry: jitter %g: want 0..1", ErrInvalid, c.Jitter)
	case c.CallTimeout <= 0:
		return fmt.Errorf("%w: retry: call_timeout must be positive", ErrInvalid)
	}
	return nil
}

// Event reports a failed attempt or the outcome of a call that needed
// retries.
type Event struct {
	Time     time.Time
	Provider string
	// Op is types, launch, terminate or list.
	Op string
	// Key is the launch's idempotency key (launch only).
	Key string
	// Attempt is 1-based.
	Attempt int
	// Err is the attempt's error, nil for a final success.
	Err error
	// Backoff is the wait before the next attempt (0 when Final).
	Backoff time.Duration
	// Final is set on the last event of a call: success after retries,
	// a permanent error, or retries exhausted.
	Final bool
}

// String renders the event for logs and the cluster event log.
func (e Event) String() string {
	op := e.Op
	if e.Key != "" {
		op += " " + e.Key
	}
	switch {
	case e.Final && e.Err == nil:
		return fmt.Sprintf("provider %s: %s succeeded at attempt %d", e.Provider, op, e.Attempt)
	case e.Final:
		return fmt.Sprintf("provider %s: %s failed for good at attempt %d: %v", e.Provider, op, e.Attempt, e.Err)
	}
	return fmt.Sprintf("provider %s: %s attempt %d failed, retrying in %s: %v", e.Provider, op, e.Attempt, e.Backoff.Round(time.Millisecond), e.Err)
}

// Retry is a Provider decorator: per-attempt timeouts, and retries with
// exponential backoff and jitter for ErrTransient (timeouts included).
// Other errors (ErrUnknownType, ErrCapacity, ErrInvalid, …) are returned
// at once: retrying them only delays the autoscaler's next decision.
type Retry struct {
	p   Provider
	cfg RetryConfig
	log *slog.Logger
}

// NewRetry wraps p.
func NewRetry(p Provider, cfg RetryConfig) (*Retry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Retry{p: p, cfg: cfg, log: log.With("subsystem", "provider", "provider", p.Name())}, nil
}

// Unwrap returns the decorated provider.
func (r *Retry) Unwrap() Provider { return r.p }

// Name implements Provider.
func (r *Retry) Name() string { return r.p.Name() }

// InstanceTypes implements Provider.
func (r *Retry) InstanceTypes(ctx context.Context) ([]InstanceType, error) {
	var out []InstanceType
	err := r.do(ctx, "types", "", func(ctx context.Context) (err error) {
		out, err = r.p.InstanceTypes(ctx)
		return err
	})
	return out, err
}

// Launch implements Provider. Retrying is safe because the request carries
// its idempotency key: an attempt that timed out after creating machines
// is completed, not repeated, by the next one.
func (r *Retry) Launch(ctx context.Context, req LaunchRequest) ([]Instance, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	var out []Instance
	err := r.do(ctx, "launch", req.IdempotencyKey, func(ctx context.Context) (err error) {
		out, err = r.p.Launch(ctx, req)
		return err
	})
	return out, err
}

// Terminate implements Provider.
func (r *Retry) Terminate(ctx context.Context, ids []string) error {
	return r.do(ctx, "terminate", "", func(ctx context.Context) error { return r.p.Terminate(ctx, ids) })
}

// List implements Provider.
func (r *Retry) List(ctx context.Context) ([]Instance, error) {
	var out []Instance
	err := r.do(ctx, "list", "", func(ctx context.Context) (err error) {
		out, err = r.p.List(ctx)
		return err
	})
	return out, err
}

// Backoff returns the wait after failed attempt n (1-based), before
// jitter.
func (c RetryConfig) Backoff(n int) time.Duration {
	d := float64(c.InitialBackoff)
	for i := 1; i < n && d < float64(c.MaxBackoff); i++ {
		d *= c.Multiplier
	}
	return min(time.Duration(d), c.MaxBackoff)
}

func (r *Retry) jittered(n int) time.Duration {
	d := r.cfg.Backoff(n)
	if r.cfg.Jitter > 0 && d > 0 {
		d = time.Duration(float64(d) * (1 + r.cfg.Jitter*(2*rand.Float64()-1)))
	}
	return d
}

func (r *Retry) emit(ev Event) {
	ev.Time = time.Now()
	ev.Provider = r.p.Name()
	if ev.Final {
		r.log.Info(ev.String(), "op", ev.Op, "attempt", ev.Attempt)
	} else {
		r.log.Warn(ev.String(), "op", ev.Op, "attempt", ev.Attempt)
	}
	if r.cfg.OnEvent != nil {
		r.cfg.OnEvent(ev)
	}
}

func (r *Retry) do(ctx context.Context, op, key string, call func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
		err := call(actx)
		timedOut := actx.Err() == context.DeadlineExceeded
		cancel()
		if err == nil {
			if attempt > 1 {
				r.emit(Event{Op: op, Key: key, Attempt: attempt, Final: true})
			}
			return nil
		}
		if ctx.Err() != nil {
			// The caller gave up: say so plainly, no more events.
			return fmt.Errorf("provider %s: %s: attempt %d: %w", r.p.Name(), op, attempt, ctx.Err())
		}
		if timedOut && !errors.Is(err, ErrTransient) {
			err = fmt.Errorf("attempt timed out after %s: %w (%w)", r.cfg.CallTimeout, ErrTransient, err)
		}
		if !errors.Is(err, ErrTransient) {
			r.emit(Event{Op: op, Key: key, Attempt: attempt, Err: err, Final: true})
			return fmt.Errorf("provider %s: %s: %w", r.p.Name(), op, err)
		}
		if attempt >= r.cfg.Attempts {
			r.emit(Event{Op: op, Key: key, Attempt: attempt, Err: err, Final: true})
			return fmt.Errorf("provider %s: %s: gave up after %d attempts: %w", r.p.Name(), op, attempt, err)
		}
		wait := r.jittered(attempt)
		r.emit(Event{Op: op, Key: key, Attempt: attempt, Err: err, Backoff: wait})
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("provider %s: %s: cancelled while backing off after attempt %d (%v): %w", r.p.Name(), op, attempt, err, ctx.Err())
		case <-t.C:
		}
	}
}
