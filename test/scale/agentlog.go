package scale

import (
	"fmt"
	"os"
	"sync"
)

// agentLog is the one log file all of a run's in-process agents write to.
// On its own machine an agent's log lines wait for nobody else's. Here a
// thousand agents share one file, and a write holds the file's lock for
// its system call; a goroutine coming back from that call may then wait
// for a CPU, seconds on a saturated machine, with every other agent's
// logging queued behind it. memberlist logs some warnings ("Refuting a
// suspect message") while holding its member lock, so one slow write
// stalled probes and acks in agents that had nothing to do with it: a
// coupling between agents no fleet has. Write therefore only copies the
// line into a buffer under a short lock, and one goroutine writes the
// buffer out. A line that finds the buffer full is dropped and counted.
type agentLog struct {
	f       *os.File
	mu      sync.Mutex
	buf     []byte
	dropped int
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
}

// agentLogMax bounds the lines waiting to be written.
const agentLogMax = 8 << 20

func newAgentLog(path string) (*agentLog, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	l := &agentLog{f: f, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go l.run()
	return l, nil
}

// Write implements io.Writer; it never blocks on the file.
func (l *agentLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	if len(l.buf)+len(p) > agentLogMax {
		l.dropped++
	} else {
		l.buf = append(l.buf, p...)
	}
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// run writes out what has been buffered until Close.
func (l *agentLog) run() {
	defer close(l.done)
	var out []byte
	for {
		select {
		case <-l.wake:
		case <-l.stop:
			l.flush(out)
			return
		}
		out = l.flush(out)
	}
}

// flush writes the buffered lines, swapping buffers so that writers
// never wait for the file, and returns the spare buffer.
func (l *agentLog) flush(spare []byte) []byte {
	l.mu.Lock()
	out := l.buf
	l.buf = spare[:0]
	l.mu.Unlock()
	if len(out) > 0 {
		_, _ = l.f.Write(out)
	}
	return out
}

// Close writes what is left, notes the lines dropped, and closes the file.
func (l *agentLog) Close() error {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	dropped := l.dropped
	l.mu.Unlock()
	if dropped > 0 {
		_, _ = fmt.Fprintf(l.f, "(the harness dropped %d log lines: more than %d bytes waited to be written)\n", dropped, agentLogMax)
	}
	return l.f.Close()
}
