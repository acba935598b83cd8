package consensus

import (
	"context"
	"io"
	"log"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter sends hashicorp/raft's hclog records to slog, keeping their
// key/value pairs as attributes instead of flattening them into text.
type hclogAdapter struct {
	logger  *slog.Logger
	name    string
	min     slog.Level
	implied []any
}

var _ hclog.Logger = (*hclogAdapter)(nil)

func newHCLogAdapter(l *slog.Logger, min slog.Level) *hclogAdapter {
	return &hclogAdapter{logger: l, min: min}
}

func toSlogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

func toHCLevel(l slog.Level) hclog.Level {
	switch {
	case l < slog.LevelDebug:
		return hclog.Trace
	case l < slog.LevelInfo:
		return hclog.Debug
	case l < slog.LevelWarn:
		return hclog.Info
	case l < slog.LevelError:
		return hclog.Warn
	default:
		return hclog.Error
	}
}

func (h *hclogAdapter) enabled(l slog.Level) bool {
	return l >= h.min && h.logger.Enabled(context.Background(), l)
}

func (h *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off {
		return
	}
	sl := toSlogLevel(level)
	if !h.enabled(sl) {
		return
	}
	all := make([]any, 0, len(h.implied)+len(args)+2)
	if h.name != "" {
		all = append(all, "component", h.name)
	}
	all = append(all, h.implied...)
	all = append(all, args...)
	h.logger.Log(context.Background(), sl, msg, all...)
}

func (h *hclogAdapter) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogAdapter) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogAdapter) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hclogAdapter) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogAdapter) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hclogAdapter) IsTrace() bool { return h.enabled(toSlogLevel(hclog.Trace)) }
func (h *hclogAdapter) IsDebug() bool { return h.enabled(toSlogLevel(hclog.Debug)) }
func (h *hclogAdapter) IsInfo() bool  { return h.enabled(toSlogLevel(hclog.Info)) }
func (h *hclogAdapter) IsWarn() bool  { return h.enabled(toSlogLevel(hclog.Warn)) }
func (h *hclogAdapter) IsError() bool { return h.enabled(toSlogLevel(hclog.Error)) }

func (h *hclogAdapter) ImpliedArgs() []any { return h.implied }

func (h *hclogAdapter) With(args ...any) hclog.Logger {
	c := *h
	c.implied = append(append([]any(nil), h.implied...), args...)
	return &c
}

func (h *hclogAdapter) Name() string { return h.name }

func (h *hclogAdapter) Named(name string) hclog.Logger {
	c := *h
	if c.name != "" {
		c.name += "." + name
	} else {
		c.name = name
	}
	return &c
}

func (h *hclogAdapter) ResetNamed(name string) hclog.Logger {
	c := *h
	c.name = name
	return &c
}

// SetLevel changes the minimum level of this adapter only (raft never calls
// it, but the interface requires it).
func (h *hclogAdapter) SetLevel(level hclog.Level) { h.min = toSlogLevel(level) }

func (h *hclogAdapter) GetLevel() hclog.Level { return toHCLevel(h.min) }

func (h *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(h.StandardWriter(opts), "", 0)
}

func (h *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return stdWriter{h}
}

// stdWriter logs each write as one info record, for code that wants a
// *log.Logger.
type stdWriter struct{ h *hclogAdapter }

func (w stdWriter) Write(p []byte) (int, error) {
	msg := string(p)
	for len(msg) > 0 && (msg[len(msg)-1] == '\n' || msg[len(msg)-1] == '\r') {
		msg = msg[:len(msg)-1]
	}
	w.h.Log(hclog.Info, msg)
	return len(p), nil
}
