// Package retry is the one poll helper Colony's tests use instead of sleeps:
// a condition is retried until it holds or a deadline passes, and the last
// reason it did not hold is what the failure says.
package retry

import (
	"testing"
	"time"
)

// Interval between attempts: short enough to be responsive, long enough not
// to busy-loop on a 2-core machine running many agents.
const Interval = 25 * time.Millisecond

// Until calls cond until it returns nil, failing t with cond's last error
// once timeout has passed.
func Until(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := Wait(timeout, cond); err != nil {
		t.Fatalf("not true after %s: %v", timeout, err)
	}
}

// Wait is Until without a testing.TB: it returns cond's last error, or nil.
func Wait(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(Interval)
	}
}
