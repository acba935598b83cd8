// Command colony-scale runs Colony's scale harness (package colony/test/scale):
//
//	make bench-scale N=50,100,250 PROFILE=dense
//	go run ./test/scale/cmd/colony-scale -n 250 -modes bare,colony -profile dense -out bin/scale
//
// It appends its results to OUT/results.csv and rewrites OUT/results.md
// and the SVG plots OUT/*.svg from every result held there.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	_ "net/http/pprof" // served only with -pprof-addr
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"colony/test/scale"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "colony-scale:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) > 1 && os.Args[1] == scale.ShardCommand {
		// One shard of a -shards run, started by the harness itself.
		return scale.ShardMain(os.Args[2:], os.Stdout)
	}
	if len(os.Args) > 1 && os.Args[1] == "trace" {
		return traceWindows(os.Args[2:])
	}
	o := scale.DefaultOptions()
	ns := flag.String("n", "50,100,250", "cluster sizes, comma-separated")
	modes := flag.String("modes", strings.Join(o.Modes, ","), "what to run at each N: bare (memberlist alone), colony (agents in this process), procs (one process per agent)")
	flag.StringVar(&o.Profile, "profile", o.Profile, "gossip profile of every node: lan, dense, local or wan")
	flag.IntVar(&o.ProcsMax, "procs-max", o.ProcsMax, "largest N run in process mode")
	flag.IntVar(&o.JoinParallel, "join-parallel", o.JoinParallel, "nodes joining at the same time (1: one by one)")
	flag.DurationVar(&o.JoinJitter, "join-jitter", 0, "colony mode: start every agent at once with --join-jitter set to this (a fleet booting together)")
	flag.IntVar(&o.BareMeta, "bare-meta", 0, "bare mode: every node gossips this many bytes of metadata (what metadata size alone costs memberlist; results labelled PROFILE+metaN)")
	flag.IntVar(&o.Tune.RetransmitMult, "retransmit-mult", 0, "bare and colony modes: memberlist RetransmitMult instead of the profile's (results labelled PROFILE+tuned, as for the three below)")
	flag.IntVar(&o.Tune.GossipNodes, "gossip-nodes", 0, "bare and colony modes: memberlist GossipNodes instead of the profile's")
	flag.DurationVar(&o.Tune.GossipInterval, "gossip-interval", 0, "bare and colony modes: memberlist GossipInterval instead of the profile's")
	flag.BoolVar(&o.Tune.NoTCPPings, "no-tcp-pings", false, "bare and colony modes: no TCP fallback pings (memberlist DisableTcpPings)")
	flag.BoolVar(&o.RaiseConntrack, "raise-conntrack", o.RaiseConntrack, "raise the host's connection-tracking table (net.netfilter.nf_conntrack_max, needs root) when N agents could fill it; a run during which the host dropped packets is marked either way")
	flag.BoolVar(&o.CreateFirst, "create-first", false, "bare and colony modes: build every node (data dir, sockets) before the clock starts, then join them; times then measure joining and spreading alone (results labelled PROFILE+created)")
	flag.DurationVar(&o.Settle, "settle", o.Settle, "wait after the phases before measuring steady state")
	flag.DurationVar(&o.Steady, "steady", o.Steady, "steady-state measurement window")
	flag.DurationVar(&o.Timeout, "timeout", o.Timeout, "give up waiting for the phases after this")
	flag.BoolVar(&o.Deploy, "deploy", o.Deploy, "deploy one instance per node and time it")
	flag.BoolVar(&o.Monitor, "monitor", o.Monitor, "colony mode: measure monitoring, the tree (each K of -monitor-k) then the flat alternative (K=N+1), after the steady state")
	monK := flag.String("monitor-k", "32", "K of each monitoring tree measured, comma-separated (set through the monitor.group_size setting)")
	flag.DurationVar(&o.MonitorInterval, "monitor-interval", o.MonitorInterval, "every agent's --monitor-interval")
	flag.DurationVar(&o.MonitorWindow, "monitor-window", o.MonitorWindow, "how long each monitoring layout is measured")
	flag.BoolVar(&o.FlightRecorder, "flight-recorder", false, "keep the last seconds of this process's execution trace, and write them to OUT/stall-MODE-N-Ts.trace when the process stalls for -stall-trace or longer (up to three a run); read them with go tool trace -pprof=sched")
	flag.DurationVar(&o.StallTrace, "stall-trace", o.StallTrace, "with -flight-recorder: the stall that writes a trace")
	flag.IntVar(&o.Shards, "shards", 0, "colony mode: run the agents in this many harness processes, not this one (each its own heap, garbage collector and scheduler; results labelled PROFILE+shardsK)")
	flag.StringVar(&o.Binary, "bin", "bin/colony", "colony binary for process mode")
	flag.StringVar(&o.Out, "out", o.Out, "output directory: results.csv, results.md, *.svg, agent logs")
	flag.StringVar(&o.ColonyNet, "colony-net", o.ColonyNet, "first two octets of the Colony agents' loopback addresses")
	flag.StringVar(&o.BareNet, "bare-net", o.BareNet, "first two octets of the bare memberlist nodes' loopback addresses")
	flag.IntVar(&o.Base, "base", o.Base, "third octet of the first node's address")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
	pprofAddr := flag.String("pprof-addr", "", "serve net/http/pprof here while running (e.g. 127.0.0.1:6060): goroutine dumps of a stalled run")
	contention := flag.Int("contention-rate", 0, "with -pprof-addr: sample 1 in this many mutex contentions, and blocking events of at least this many ns (0: off)")
	reportOnly := flag.Bool("report", false, "run nothing: rewrite results.md and the plots from OUT/results.csv")
	gcPercent := flag.Int("gogc", 0, "garbage collection target of this process, as GOGC (0: GOGC or Go's default of 100); every agent here shares one heap, where on its own machine each would have its own small one")
	memLimit := flag.Int64("memlimit-mb", 0, "soft memory limit of this process in MB, as GOMEMLIMIT (0: GOMEMLIMIT or none): with a high -gogc, collect sooner rather than exhaust the machine")
	flag.Parse()
	if *gcPercent != 0 {
		debug.SetGCPercent(*gcPercent)
	}
	if *memLimit > 0 {
		debug.SetMemoryLimit(*memLimit << 20)
	}
	if *reportOnly {
		merged, err := scale.Write(o.Out, nil)
		if err != nil {
			return err
		}
		fmt.Print(scale.Markdown(merged))
		if ms := scale.MonitorResults(o.Out); len(ms) > 0 {
			fmt.Print("\n" + scale.MonitorMarkdown(ms))
		}
		return nil
	}

	var err error
	if o.N, err = parseInts("-n", *ns, "a cluster size", 1, 50000); err != nil {
		return err
	}
	o.Modes = nil
	for _, m := range strings.Split(*modes, ",") {
		switch m = strings.TrimSpace(m); m {
		case scale.ModeBare, scale.ModeColony, scale.ModeProcs:
			o.Modes = append(o.Modes, m)
		default:
			return fmt.Errorf("-modes: unknown mode %q (want bare, colony or procs)", m)
		}
	}
	if o.MonitorK, err = parseInts("-monitor-k", *monK, "a group size", 2, 4096); err != nil {
		return err
	}
	if o.MonitorInterval < 100*time.Millisecond || o.MonitorWindow < o.MonitorInterval {
		return fmt.Errorf("-monitor-interval must be at least 100ms and -monitor-window at least one interval")
	}
	if o.BareMeta < 0 || o.BareMeta > 512 {
		return fmt.Errorf("-bare-meta must be 0-512 bytes (memberlist's limit)")
	}
	if o.JoinParallel < 1 {
		return fmt.Errorf("-join-parallel must be at least 1")
	}
	if o.Shards < 0 || o.Shards > 64 {
		return fmt.Errorf("-shards must be 0-64")
	}
	if o.Shards > 1 && o.CreateFirst {
		return fmt.Errorf("-create-first and -shards do not go together: the shards build their agents as they start them")
	}
	o.Log = os.Stdout
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *pprofAddr != "" {
		if *contention > 0 {
			runtime.SetMutexProfileFraction(*contention)
			runtime.SetBlockProfileRate(*contention)
		}
		srv := &http.Server{Addr: *pprofAddr}
		go func() {
			if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
				fmt.Fprintln(os.Stderr, "colony-scale: pprof:", err)
			}
		}()
		defer srv.Close()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	results := scale.Run(ctx, o)
	merged, err := scale.Write(o.Out, results)
	if err != nil {
		return err
	}
	fmt.Println()
	fmt.Print(scale.Markdown(merged))
	if ms := scale.MonitorResults(o.Out); len(ms) > 0 {
		fmt.Print("\n" + scale.MonitorMarkdown(ms))
	}
	fmt.Printf("\ntables: %s/results.md and results.csv, monitoring in monitor.md and monitor.csv; plots: %s/*.svg\n", o.Out, o.Out)
	return nil
}

// traceWindows is `colony-scale trace [-window D] [-range A-B] [-top N]
// FILE`: an execution trace window by window (scale.ReadTraceWindows).
func traceWindows(args []string) error {
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	win := fs.Duration("window", 100*time.Millisecond, "window length")
	rng := fs.String("range", "", "windows A-B (by index) whose running time and CPU samples to break down")
	top := fs.Int("top", 30, "lines of each breakdown")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *win <= 0 {
		return fmt.Errorf("usage: colony-scale trace [-window D] [-range A-B] [-top N] FILE")
	}
	from, to := -1, -1
	if *rng != "" {
		if _, err := fmt.Sscanf(*rng, "%d-%d", &from, &to); err != nil {
			return fmt.Errorf("-range %q: want A-B", *rng)
		}
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	ws, err := scale.ReadTraceWindows(f, *win)
	if err != nil {
		return err
	}
	scale.WriteTraceWindows(os.Stdout, ws, from, to, *top)
	return nil
}

// parseInts parses a comma-separated list of integers in [lo, hi] given
// to flag name; what names one value in the error.
func parseInts(name, list, what string, lo, hi int) ([]int, error) {
	var out []int
	for _, s := range strings.Split(list, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || v < lo || v > hi {
			return nil, fmt.Errorf("%s: %q is not %s (%d-%d)", name, s, what, lo, hi)
		}
		out = append(out, v)
	}
	return out, nil
}
