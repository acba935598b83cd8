package gossip

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
)

// logWriter turns memberlist's "[LEVEL] memberlist: text" lines into slog
// records, so gossip logs come out structured like the rest of the agent.
type logWriter struct {
	logger *slog.Logger
}

// logPrefixes are memberlist's level markers ("[ERR]" before "[ERROR]"
// cannot match the same line: the bracket closes one).
var logPrefixes = []struct {
	prefix string
	level  slog.Level
}{{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo}, {"[WARN]", slog.LevelWarn}, {"[ERR]", slog.LevelError}, {"[ERROR]", slog.LevelError}}

func (w logWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	level := slog.LevelInfo
	for _, p := range logPrefixes {
		if i := strings.Index(line, p.prefix); i >= 0 {
			level = p.level
			line = strings.TrimSpace(line[i+len(p.prefix):])
			break
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	w.logger.Log(context.Background(), level, line)
	return len(p), nil
}
