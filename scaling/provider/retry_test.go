package provider

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// events collects Retry events.
type events struct {
	mu  sync.Mutex
	evs []Event
}

func (e *events) add(ev Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, ev)
}

func (e *events) list() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Event(nil), e.evs...)
}

func fastRetry(t *testing.T, p Provider, mod func(*RetryConfig)) (*Retry, *events) {
	t.Helper()
	evs := &events{}
	cfg := DefaultRetryConfig()
	cfg.InitialBackoff = 10 * time.Millisecond
	cfg.MaxBackoff = 50 * time.Millisecond
	cfg.CallTimeout = 30 * time.Second
	cfg.OnEvent = evs.add
	if mod != nil {
		mod(&cfg)
	}
	r, err := NewRetry(p, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, evs
}

func TestRetryTransientThenSuccess(t *testing.T) {
	ctx := testCtx(t)
	p, _ := fakeCloud(t, nil, "FAKE_CLOUD_FAIL=2", "FAKE_CLOUD_FAIL_ONLY=launch")
	r, evs := fastRetry(t, p, nil)
	insts, err := r.Launch(ctx, LaunchRequest{IdempotencyKey: "k", Type: "small", Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(insts) != 2 {
		t.Fatalf("%d instances", len(insts))
	}
	got := evs.list()
	if len(got) != 3 {
		t.Fatalf("events: %v", got)
	}
	for i, ev := range got[:2] {
		if ev.Final || ev.Attempt != i+1 || !errors.Is(ev.Err, ErrTransient) || ev.Backoff <= 0 || ev.Op != "launch" || ev.Key != "k" {
			t.Errorf("event %d: %+v", i, ev)
		}
		if s := ev.String(); !strings.Contains(s, "retrying in") || !strings.Contains(s, "injected transient failure") {
			t.Errorf("event %d text: %s", i, s)
		}
	}
	if last := got[2]; !last.Final || last.Err != nil || last.Attempt != 3 {
		t.Errorf("final event: %+v", last)
	}
	if all, _ := p.List(ctx); len(all) != 2 {
		t.Fatalf("%d instances in the cloud after retries, want 2", len(all))
	}
}

func TestRetryGivesUp(t *testing.T) {
	ctx := testCtx(t)
	p, _ := fakeCloud(t, nil, "FAKE_CLOUD_FAIL=100")
	r, evs := fastRetry(t, p, func(c *RetryConfig) { c.Attempts = 3 })
	_, err := r.List(ctx)
	if !errors.Is(err, ErrTransient) || !strings.Contains(err.Error(), "gave up after 3 attempts") {
		t.Fatalf("got %v", err)
	}
	got := evs.list()
	if len(got) != 3 || !got[2].Final || got[2].Err == nil {
		t.Fatalf("events: %v", got)
	}
	if !strings.Contains(got[2].String(), "failed for good at attempt 3") {
		t.Fatalf("final event text: %s", got[2])
	}
}

func TestRetryPermanentErrorNotRetried(t *testing.T) {
	ctx := testCtx(t)
	p, _ := fakeCloud(t, nil)
	r, evs := fastRetry(t, p, nil)
	_, err := r.Launch(ctx, LaunchRequest{IdempotencyKey: "k", Type: "no-such", Count: 1})
	if !errors.Is(err, ErrUnknownType) {
		t.Fatalf("got %v", err)
	}
	if got := evs.list(); len(got) != 1 || !got[0].Final || got[0].Attempt != 1 {
		t.Fatalf("events: %v", got)
	}
}

// A hung provider call ends at CallTimeout, is retried, and the whole call
// ends with a clear timeout error: nothing waits for ever.
func TestRetryTimeoutOnHang(t *testing.T) {
	ctx := testCtx(t)
	p, _ := fakeCloud(t, nil, "FAKE_CLOUD_HANG=list")
	r, evs := fastRetry(t, p, func(c *RetryConfig) { c.Attempts = 2; c.CallTimeout = 300 * time.Millisecond })
	_, err := r.List(ctx)
	if !errors.Is(err, ErrTransient) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "gave up after 2 attempts") {
		t.Fatalf("got %v", err)
	}
	if got := evs.list(); len(got) != 2 {
		t.Fatalf("events: %v", got)
	}
}

// The leader's worst case: the cloud made the machines, then the call
// timed out. The retry (same key) finds them and creates nothing more.
func TestRetryLaunchTimeoutAfterCreateIsExactlyOnce(t *testing.T) {
	ctx := testCtx(t)
	p, _ := fakeCloud(t, nil, "FAKE_CLOUD_HANG_AFTER_LAUNCH=1")
	r, evs := fastRetry(t, p, func(c *RetryConfig) { c.CallTimeout = 2 * time.Second })
	insts, err := r.Launch(ctx, LaunchRequest{IdempotencyKey: "k", Type: "small", Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(insts) != 2 {
		t.Fatalf("%d instances", len(insts))
	}
	all, err := p.List(ctx)
	if err != nil || len(all) != 2 {
		t.Fatalf("cloud holds %d instances (%v), want exactly 2", len(all), err)
	}
	got := evs.list()
	if len(got) < 2 || !errors.Is(got[0].Err, context.DeadlineExceeded) || !got[len(got)-1].Final || got[len(got)-1].Err != nil {
		t.Fatalf("events: %v", got)
	}
}

func TestRetryCancelledWhileBackingOff(t *testing.T) {
	p, _ := fakeCloud(t, nil, "FAKE_CLOUD_FAIL=100")
	r, _ := fastRetry(t, p, func(c *RetryConfig) { c.InitialBackoff = time.Hour; c.MaxBackoff = time.Hour })
	ctx, cancel := context.WithCancel(testCtx(t))
	r.cfg.OnEvent = func(Event) { cancel() } // cancel as the first backoff starts
	_, err := r.List(ctx)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "cancelled while backing off after attempt 1") {
		t.Fatalf("got %v", err)
	}
}

func TestRetryBackoffGrowsToCap(t *testing.T) {
	c := RetryConfig{InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, Multiplier: 2}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := c.Backoff(i + 1); got != w*time.Millisecond {
			t.Errorf("Backoff(%d) = %s, want %s", i+1, got, w*time.Millisecond)
		}
	}
	bad := DefaultRetryConfig()
	bad.Jitter = 2
	if _, err := NewRetry(nil, bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("jitter 2 accepted: %v", err)
	}
}
