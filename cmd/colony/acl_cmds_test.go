package main

import (
	"slices"
	"testing"
)

// TestFlagsFirstBoolFlags: an agent bool flag (altsrc wraps them) takes no
// value, so the flag after it is not swallowed.
func TestFlagsFirstBoolFlags(t *testing.T) {
	app := newApp()
	for _, tc := range []struct{ in, want []string }{
		{
			[]string{"colony", "agent", "--acl-enabled", "--acl-agent-token", "K", "--log-level", "warn"},
			[]string{"colony", "agent", "--acl-enabled", "--acl-agent-token", "K", "--log-level", "warn"},
		},
		{
			[]string{"colony", "acl", "token", "delete", "ID", "--token", "T"},
			[]string{"colony", "acl", "token", "delete", "--token", "T", "ID"},
		},
	} {
		if got := flagsFirst(app, tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("flagsFirst(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
