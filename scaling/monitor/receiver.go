package monitor

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Reasons a Receiver rejects a summary; they are the label values of the
// agent's rejection counter.
const (
	RejectOversized = "oversized"
	RejectMalformed = "malformed"
	RejectVersion   = "version"
	RejectNotMember = "not_member"
	RejectReplayed  = "replayed"
	RejectStale     = "stale"
)

// ErrRejected is wrapped by every Receiver.Accept failure; the reason is in
// the message and in the counters.
var ErrRejected = errors.New("summary rejected")

// ReceiverConfig configures an aggregator's Receiver.
type ReceiverConfig struct {
	// Self is this aggregator's node ID.
	Self string
	// Monitor supplies the size limit, MaxAge, MaxClockSkew and logger.
	Monitor Config
	// Alive, if set, lets the receiver also accept from nodes that fail
	// over to it (Plan.Failover) while their planned parent is dead.
	Alive func(id string) bool
	// OnReject, if set, is called with the reason of every rejection
	// (e.g. to increment a Prometheus counter). It must not call back
	// into the Receiver.
	OnReject func(reason string)
}

// Receiver is what an aggregator feeds raw summaries into. It rejects
// oversized, malformed, unknown-version, non-child, replayed and stale
// summaries, counting each reason, and never panics on bad input. It is
// safe for concurrent use.
type Receiver struct {
	cfg ReceiverConfig
	log *slog.Logger

	mu      sync.Mutex
	plan    *Plan
	lastSeq map[string]uint64
	rejects map[string]uint64
}

// NewReceiver validates cfg and returns a receiver with no plan yet (it
// rejects everything as not_member until SetPlan).
func NewReceiver(cfg ReceiverConfig) (*Receiver, error) {
	if err := cfg.Monitor.Validate(); err != nil {
		return nil, err
	}
	if cfg.Self == "" {
		return nil, fmt.Errorf("%w: receiver needs its own node id", ErrInvalidConfig)
	}
	return &Receiver{
		cfg:     cfg,
		log:     cfg.Monitor.logger(),
		lastSeq: make(map[string]uint64),
		rejects: make(map[string]uint64),
	}, nil
}

// SetPlan switches to a newly committed plan. Sequence numbers of origins
// that are still children are kept, so a replay cannot slip in across a
// plan change.
func (r *Receiver) SetPlan(p *Plan) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.plan = p
	for id := range r.lastSeq {
		if parent, _ := p.Parent(id); parent != r.cfg.Self {
			delete(r.lastSeq, id)
		}
	}
}

// Accept decodes and checks one summary received at now, returning it if
// it may be merged.
func (r *Receiver) Accept(data []byte, now time.Time) (*Summary, error) {
	max := r.cfg.Monitor.MaxSummaryBytes
	if len(data) > max {
		return nil, r.reject(RejectOversized, "", fmt.Errorf("%d bytes > %d", len(data), max))
	}
	s, err := DecodeSummary(data, max)
	switch {
	case errors.Is(err, ErrBadVersion):
		return nil, r.reject(RejectVersion, "", err)
	case err != nil:
		return nil, r.reject(RejectMalformed, "", err)
	}
	t := time.UnixMilli(s.Time)
	if now.Sub(t) > r.cfg.Monitor.MaxAge || t.Sub(now) > r.cfg.Monitor.MaxClockSkew {
		return nil, r.reject(RejectStale, s.Origin, fmt.Errorf("sampled at %v, now %v", t, now))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.isChild(s.Origin) {
		return nil, r.rejectLocked(RejectNotMember, s.Origin, errors.New("not a child in the current plan"))
	}
	if last, ok := r.lastSeq[s.Origin]; ok && s.Seq <= last {
		return nil, r.rejectLocked(RejectReplayed, s.Origin, fmt.Errorf("seq %d not after %d", s.Seq, last))
	}
	r.lastSeq[s.Origin] = s.Seq
	return s, nil
}

func (r *Receiver) isChild(origin string) bool {
	if r.plan == nil || origin == "" || origin == r.cfg.Self {
		return false
	}
	if parent, ok := r.plan.Parent(origin); ok && parent == r.cfg.Self {
		return true
	}
	if r.cfg.Alive != nil {
		if target, ok := r.plan.Failover(origin, r.cfg.Alive); ok && target == r.cfg.Self {
			return true
		}
	}
	return false
}

func (r *Receiver) reject(reason, origin string, err error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rejectLocked(reason, origin, err)
}

func (r *Receiver) rejectLocked(reason, origin string, err error) error {
	r.rejects[reason]++
	r.log.Debug("summary rejected", "reason", reason, "origin", origin, "err", err)
	if r.cfg.OnReject != nil {
		r.cfg.OnReject(reason)
	}
	return fmt.Errorf("%w (%s): %w", ErrRejected, reason, err)
}

// Rejections returns a copy of the rejection counts by reason.
func (r *Receiver) Rejections() map[string]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]uint64, len(r.rejects))
	for k, v := range r.rejects {
		out[k] = v
	}
	return out
}
