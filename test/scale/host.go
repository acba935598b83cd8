package scale

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Connection tracking. When the kernel's netfilter connection tracking is
// loaded (it is wherever Docker or a firewall runs), it keeps one entry
// for every pair of addresses that has exchanged packets lately, UDP
// included: 120 s after the last packet of a flow that saw replies
// (nf_conntrack_udp_timeout_stream). N agents on one host, each gossiping
// and probing random others, soon touch every pair: up to N(N-1)/2
// entries. Linux sizes the table at 262,144 entries on this machine, which
// ~720 agents fill; the kernel then drops the first packet of every new
// flow ("nf_conntrack: table full, dropping packet" in dmesg), so probes
// between members that have not spoken for two minutes are lost, and live
// members are suspected, refute, and flood the cluster with suspicions.
// Runs at 750–1,000 agents stalled this way (see README). On its own
// machine an agent tracks only its own flows, at most one per peer, so this
// is a limit of packing N agents into one host, not of Colony: the harness
// raises the table when it can and marks a run whose host dropped packets.

const (
	conntrackMaxFile   = "/proc/sys/net/netfilter/nf_conntrack_max"
	conntrackHashFile  = "/sys/module/nf_conntrack/parameters/hashsize"
	conntrackStatsFile = "/proc/net/stat/nf_conntrack"
)

// conntrackNeed is how many tracking entries a run of n agents may hold:
// every pair (UDP gossip), both directions' worth, so that a previous
// mode's entries still aging out at the same N fit beside it, plus room
// for TCP (push/pull, Raft, the API) and the rest of the host.
func conntrackNeed(n int) int { return n*n + 65536 }

// readInt reads a file holding one decimal number.
func readInt(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// ensureConntrack makes the host's tracking table large enough for n
// agents when Options.RaiseConntrack allows it (writing it needs root).
// It returns what an operator should know, or "" when nothing is wrong:
// no tracking (the module is not loaded) or a table large enough.
func ensureConntrack(o *Options, n int) string {
	have, err := readInt(conntrackMaxFile)
	if err != nil {
		return "" // no connection tracking on this host
	}
	need := conntrackNeed(n)
	if have >= need {
		return ""
	}
	if !o.RaiseConntrack {
		return fmt.Sprintf("%d agents may need %d connection-tracking entries and the host has %d: packets will be dropped once it is full (raise it: sysctl -w net.netfilter.nf_conntrack_max=%d)", n, need, have, need)
	}
	if err := os.WriteFile(conntrackMaxFile, []byte(strconv.Itoa(need)), 0o644); err != nil {
		return fmt.Sprintf("%d agents may need %d connection-tracking entries and the host has %d; raising it failed (%v): run as root, or sysctl -w net.netfilter.nf_conntrack_max=%d", n, need, have, err, need)
	}
	// Keep the hash chains short: the kernel's default is max/4 buckets.
	if buckets, err := readInt(conntrackHashFile); err == nil && buckets < need/4 {
		_ = os.WriteFile(conntrackHashFile, []byte(strconv.Itoa(need/4)), 0o600)
	}
	o.logf("raised the host's connection-tracking table (net.netfilter.nf_conntrack_max) from %d to %d for %d agents", have, need, n)
	return ""
}

// conntrackDrops is the number of packets connection tracking has dropped
// since boot (the "drop" column of /proc/net/stat/nf_conntrack, summed over
// CPUs), and false when the host does not track connections.
func conntrackDrops() (uint64, bool) {
	b, err := os.ReadFile(conntrackStatsFile)
	if err != nil {
		return 0, false
	}
	return parseConntrackDrops(string(b))
}

// parseConntrackDrops sums the "drop" column of the kernel's per-CPU
// connection-tracking statistics: a header line of names, then one line of
// hexadecimal counters per CPU.
func parseConntrackDrops(text string) (uint64, bool) {
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) < 2 {
		return 0, false
	}
	col := -1
	for i, name := range strings.Fields(lines[0]) {
		if name == "drop" {
			col = i
		}
	}
	if col < 0 {
		return 0, false
	}
	var sum uint64
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) <= col {
			return 0, false
		}
		v, err := strconv.ParseUint(f[col], 16, 64)
		if err != nil {
			return 0, false
		}
		sum += v
	}
	return sum, true
}
