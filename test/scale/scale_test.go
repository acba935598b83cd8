package scale

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"colony/gossip"
	"colony/test/harness"
)

// TestHarnessSmall runs the whole harness at a small N: 20 agents and 20
// bare memberlist nodes in this process, 5 agent processes. It checks that
// every phase is reached and that the table and plots are written; the
// figures themselves are for make bench-scale, not for assertions.
func TestHarnessSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 45 nodes")
	}
	o := testOptions(t, 100) // 127.2.100.x, 127.3.100.x; processes on 127.2.250.x
	o.N = []int{5, 20}
	o.ProcsMax = 5
	o.MonitorK, o.MonitorInterval, o.MonitorWindow = []int{5}, 200*time.Millisecond, time.Second
	o.Binary = harness.Binary(t)
	results := runFor(t, o, 4*time.Minute, 5) // bare and colony at 5 and 20, procs at 5
	for _, r := range results {
		if r.Err != "" || r.Converge < 0 {
			t.Errorf("%s N=%d: %s (converge %s)", r.Mode, r.N, r.Err, r.Converge)
		}
		if r.Mode != ModeBare && (r.Leader < 0 || r.Plan < 0 || r.Deploy < 0 || r.View < 0) {
			t.Errorf("%s N=%d: a phase was not reached: %s", r.Mode, r.N, r.summary())
		}
		if r.FalseDead > 0 || r.NotAlive > 0 {
			t.Errorf("%s N=%d: nodes seen dead: %s", r.Mode, r.N, r.summary())
		}
		if r.Mode != ModeColony {
			continue
		}
		// Monitoring: the tree (K=5, depth 2 at 20 nodes), then flat; at
		// 5 nodes the tree is one group, measured once as flat.
		if r.N == 5 && (len(r.Monitor) != 1 || r.Monitor[0].Layout != LayoutFlat) ||
			r.N == 20 && (len(r.Monitor) != 2 || r.Monitor[0].Layout != LayoutTree || r.Monitor[1].Layout != LayoutFlat) {
			t.Errorf("N=%d: monitoring results %+v, want tree then flat (flat only at N=5)", r.N, r.Monitor)
			continue
		}
		for _, m := range r.Monitor {
			if m.Err != "" || m.Reads == 0 || m.OutMean <= 0 || m.RootIn <= 0 || m.RootFanIn < 1 {
				t.Errorf("monitoring: %s", m.summary())
			}
		}
		if r.N != 20 {
			continue
		}
		if tree, flat := r.Monitor[0], r.Monitor[1]; tree.Depth != 2 || flat.Depth != 1 || flat.RootFanIn != 19 {
			t.Errorf("N=20: tree depth %d, flat depth %d and root fan-in %d; want 2, 1, 19", tree.Depth, flat.Depth, flat.RootFanIn)
		}
	}
	merged, err := Write(o.Out, results)
	if err != nil || len(merged) != 5 {
		t.Fatalf("write: %d rows, %v", len(merged), err)
	}
	md, _ := os.ReadFile(filepath.Join(o.Out, "results.md"))
	if !strings.Contains(string(md), "× bare") {
		t.Errorf("no Colony/bare ratio in the table:\n%s", md)
	}
	files := []string{"monitor-bytes.svg", "monitor-root.svg", "monitor-cpu.svg", "monitor-age.svg"}
	for _, f := range figures {
		files = append(files, f.file)
	}
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(o.Out, f))
		if err != nil || !strings.Contains(string(b), "<circle") {
			t.Errorf("plot %s: %v", f, err)
		}
	}
	if ms := MonitorResults(o.Out); len(ms) != 3 || !strings.Contains(MonitorMarkdown(ms), "| flat |") {
		t.Errorf("monitor.csv holds %d rows, want 3", len(ms))
	}
}

// TestHarnessDenseCreateFirst: on the dense profile (compact metadata)
// with every node built before the clock starts, 20 agents and 20 bare
// nodes (gossiping 9 bytes of metadata, like a stub) converge, every agent's view lists all 20 with their metadata,
// and the rows are labelled for what they measured.
func TestHarnessDenseCreateFirst(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 40 nodes")
	}
	o := testOptions(t, 110) // 127.2.110.x, 127.3.110.x
	o.N, o.Modes, o.Profile, o.CreateFirst, o.BareMeta = []int{20}, []string{ModeBare, ModeColony}, "dense", true, 9
	o.Deploy, o.Monitor = false, false
	results := runFor(t, o, 3*time.Minute, 2)
	for _, r := range results {
		want := map[string]string{ModeBare: "dense+meta9+created", ModeColony: "dense+created"}[r.Mode]
		if r.Err != "" || r.Converge < 0 || r.Profile != want || r.FalseDead > 0 || r.NotAlive > 0 {
			t.Errorf("%s (%s): %s", r.Mode, r.Profile, r.summary())
		}
		if r.Mode == ModeColony && (r.View < 0 || r.Leader < 0 || r.Plan < 0) {
			t.Errorf("colony: a phase was not reached: %s", r.summary())
		}
	}
}

// testOptions are short harness runs for tests, on 127.2.base.x and
// 127.3.base.x, writing to a temporary directory and the test log.
func testOptions(t *testing.T, base int) Options {
	o := DefaultOptions()
	o.Base = base
	o.Settle, o.Steady, o.Pause, o.Timeout = time.Second, 3*time.Second, 500*time.Millisecond, 90*time.Second
	o.Out = t.TempDir()
	o.Log = testWriter{t}
	return o
}

// runFor runs the harness with o for at most d and fails the test unless
// it returns want results.
func runFor(t *testing.T, o Options, d time.Duration, want int) []Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	results := Run(ctx, o)
	if len(results) != want {
		t.Fatalf("%d results, want %d", len(results), want)
	}
	return results
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// TestTune: the -retransmit-mult, -gossip-nodes, -gossip-interval and
// -no-tcp-pings overrides change only what they name.
func TestTune(t *testing.T) {
	mc := gossip.DenseConfig()
	want := *mc
	(Tune{}).apply(mc)
	if (Tune{}).set() || mc.RetransmitMult != want.RetransmitMult || mc.GossipNodes != want.GossipNodes ||
		mc.GossipInterval != want.GossipInterval || mc.DisableTcpPings != want.DisableTcpPings {
		t.Fatalf("a zero Tune changed the profile: %+v", mc)
	}
	tu := Tune{RetransmitMult: 4, GossipNodes: 3, GossipInterval: 400 * time.Millisecond, NoTCPPings: true}
	tu.apply(mc)
	if !tu.set() || mc.RetransmitMult != 4 || mc.GossipNodes != 3 || mc.GossipInterval != 400*time.Millisecond ||
		!mc.DisableTcpPings || mc.ProbeInterval != want.ProbeInterval {
		t.Fatalf("tuned: %+v", mc)
	}
}

// TestMain lets this package's test binary run a shard of a -shards run:
// the harness starts its shards as its own executable, here this one.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == ShardCommand {
		if err := ShardMain(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestHarnessShards: 20 agents in three shard processes converge, elect,
// plan and run one instance each, the row is labelled for it, CPU and
// memory are the shards', and no shard outlives the run.
func TestHarnessShards(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 20 agents in 3 processes")
	}
	o := testOptions(t, 115) // 127.2.115.x
	o.N, o.Modes, o.Profile, o.Shards, o.Monitor = []int{20}, []string{ModeColony}, "dense", 3, false
	r := runFor(t, o, 3*time.Minute, 1)[0]
	if r.Err != "" || r.Converge < 0 || r.View < 0 || r.Leader < 0 || r.Plan < 0 || r.Deploy < 0 {
		t.Errorf("a phase was not reached: %s (%s)", r.summary(), r.Err)
	}
	if r.Profile != "dense+shards3" || r.FalseDead > 0 || r.NotAlive > 0 || r.CPUPercent <= 0 || r.PeakRSS == 0 {
		t.Errorf("%s: %s", r.Profile, r.summary())
	}
	logs, _ := filepath.Glob(filepath.Join(o.Out, "shard-dense-20-*.log"))
	csvs, _ := filepath.Glob(filepath.Join(o.Out, "runtime-colony-shard*-20.csv"))
	if len(logs) != 3 || len(csvs) != 3 {
		t.Errorf("shard logs %v, runtime records %v: want 3 of each", logs, csvs)
	}
	out, _ := exec.Command("pgrep", "-f", ShardCommand+" -range").Output()
	if len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("shard processes left running: %s", out)
	}
}
