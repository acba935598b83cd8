package gossip

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestLogWriter: memberlist's "[LEVEL] memberlist: text" lines come out at
// their level, without the prefixes; a line without a level is info.
func TestLogWriter(t *testing.T) {
	for _, tc := range []struct{ in, level, msg string }{
		{"2026/11/29 21:00:00 [DEBUG] memberlist: Stream connection from=1.2.3.4:5\n", "DEBUG", "Stream connection from=1.2.3.4:5"},
		{"[INFO] memberlist: Marking c1 as failed", "INFO", "Marking c1 as failed"},
		{"[WARN] memberlist: Refuting a suspect message (from: c2)", "WARN", "Refuting a suspect message (from: c2)"},
		{"[ERR] memberlist: Failed fallback TCP ping: timeout", "ERROR", "Failed fallback TCP ping: timeout"},
		{"[ERROR] memberlist: something", "ERROR", "something"},
		{"no level at all", "INFO", "no level at all"},
	} {
		var buf bytes.Buffer
		w := logWriter{logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
		if n, err := w.Write([]byte(tc.in)); err != nil || n != len(tc.in) {
			t.Fatalf("Write(%q) = %d, %v", tc.in, n, err)
		}
		out := buf.String()
		if !strings.Contains(out, "level="+tc.level) || !strings.Contains(out, "msg=\""+tc.msg+"\"") && !strings.Contains(out, "msg="+tc.msg) {
			t.Errorf("Write(%q) logged %q, want level=%s msg=%q", tc.in, out, tc.level, tc.msg)
		}
	}
}
