package scale

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestAgentLog: lines written from many goroutines at once all reach the
// file, whole, once it is closed.
func TestAgentLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agents.log")
	l, err := newAgentLog(path)
	if err != nil {
		t.Fatal(err)
	}
	const writers, lines = 16, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range lines {
				_, _ = fmt.Fprintf(l, "writer=%d line=%d\n", w, i)
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(got) != writers*lines {
		t.Fatalf("%d lines in the file, want %d", len(got), writers*lines)
	}
	seen := map[string]bool{}
	for _, line := range got {
		var w, i int
		if _, err := fmt.Sscanf(line, "writer=%d line=%d", &w, &i); err != nil {
			t.Fatalf("torn line %q: %v", line, err)
		}
		seen[line] = true
	}
	if len(seen) != writers*lines {
		t.Fatalf("%d distinct lines, want %d", len(seen), writers*lines)
	}
}
