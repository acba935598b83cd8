package workload

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// Log streams accepted by Runner.Logs.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// logFile is one stream's log: path, rotated to path.1 whenever the next
// write would take it past max. Writes never fail from the writer's point
// of view (the copier must keep draining the pipe whatever the disk does);
// the first error is remembered for the status.
type logFile struct {
	mu   *sync.Mutex // shared by an instance's streams and Runner.Logs
	path string
	max  int64
	f    *os.File
	size int64
	err  error
}

func openLog(mu *sync.Mutex, path string, max int64) (*logFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat log: %w", err)
	}
	return &logFile{mu: mu, path: path, max: max, f: f, size: st.Size()}, nil
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	for len(p) > 0 && l.f != nil {
		if l.size >= l.max {
			l.rotate()
			if l.f == nil {
				break
			}
		}
		chunk := p[:min(int64(len(p)), l.max-l.size)]
		w, err := l.f.Write(chunk)
		l.size += int64(w)
		if err != nil {
			l.fail(err)
			break
		}
		p = p[w:]
	}
	return n, nil
}

func (l *logFile) rotate() {
	if err := l.f.Close(); err != nil {
		l.fail(err)
	}
	l.f = nil
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		l.fail(err)
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		l.fail(err)
		return
	}
	l.f, l.size = f, 0
}

func (l *logFile) fail(err error) {
	if l.err == nil {
		l.err = err
	}
}

func (l *logFile) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		if err := l.f.Close(); err != nil {
			l.fail(err)
		}
		l.f = nil
	}
	return l.err
}

// readTail returns the last tail bytes (all if tail <= 0) of path.1
// followed by path. The files are opened under mu so a rotation cannot
// happen between the two opens; reading then works on the open files.
func readTail(mu *sync.Mutex, path string, tail int64) ([]byte, error) {
	var files [2]*os.File
	var sizes [2]int64
	mu.Lock()
	for i, p := range []string{path + ".1", path} {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			mu.Unlock()
			closeAll(files[:])
			return nil, fmt.Errorf("open log: %w", err)
		}
		files[i] = f
		if st, err := f.Stat(); err == nil {
			sizes[i] = st.Size()
		}
	}
	mu.Unlock()
	defer closeAll(files[:])

	total := sizes[0] + sizes[1]
	skip := int64(0)
	if tail > 0 && total > tail {
		skip = total - tail
	}
	out := make([]byte, 0, total-skip)
	for i, f := range files {
		if f == nil {
			continue
		}
		if skip >= sizes[i] {
			skip -= sizes[i]
			continue
		}
		b, err := io.ReadAll(io.NewSectionReader(f, skip, sizes[i]-skip))
		if err != nil {
			return nil, fmt.Errorf("read log: %w", err)
		}
		out = append(out, b...)
		skip = 0
	}
	return out, nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

func logPath(dir, stream string) string { return filepath.Join(dir, stream+".log") }
