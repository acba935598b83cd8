package scale

import "testing"

func TestParseConntrackDrops(t *testing.T) {
	const stats = `entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00040014  00000000 00000000 00000000 00000008 00000000 00000000 00000000 00000000 00000000 0001dbb2 000113cf 00000000  00000000 00000000 00000000 00000000
00040014  00000000 00000000 00000000 00000002 00000000 00000000 00000000 00000000 00000000 00019ddc 00010141 00000000  00000000 00000000 00000000 00000000
`
	got, ok := parseConntrackDrops(stats)
	if !ok || got != 0x1dbb2+0x19ddc {
		t.Fatalf("drops = %d, %v; want %d", got, ok, 0x1dbb2+0x19ddc)
	}
	for _, bad := range []string{"", "entries drop\n", "entries found\n1 2\n", "entries drop\n1\n", "entries drop\n1 zz\n"} {
		if v, ok := parseConntrackDrops(bad); ok {
			t.Errorf("parseConntrackDrops(%q) = %d, true; want false", bad, v)
		}
	}
	// This host's own file, when it tracks connections, must parse.
	if _, err := readInt(conntrackMaxFile); err == nil {
		if _, ok := conntrackDrops(); !ok {
			t.Errorf("%s exists but %s does not parse", conntrackMaxFile, conntrackStatsFile)
		}
	}
}

func TestConntrackNeed(t *testing.T) {
	// 720 agents already fill Linux's usual 262,144 entries; the harness
	// must ask for more than the pairs of 1,000 agents.
	if need := conntrackNeed(1000); need < 1000*999/2 {
		t.Fatalf("conntrackNeed(1000) = %d, below the %d pairs", need, 1000*999/2)
	}
	if need := conntrackNeed(20); need > 262144 {
		t.Fatalf("conntrackNeed(20) = %d: the unit-test runs must not need a larger table", need)
	}
}
