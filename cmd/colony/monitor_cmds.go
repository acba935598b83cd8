package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"colony/agent"
	"colony/scaling/monitor"
)

// monitorCommands are top, alarms and monitor plan: views of the
// monitoring tree's cluster summary.
func monitorCommands() []*cli.Command {
	format := &cli.StringFlag{Name: "format", Value: "table", Usage: "table or json"}
	return []*cli.Command{
		{
			Name:  "top",
			Usage: "live view of the whole cluster: nodes by status, cpu/memory percentiles, per zone, busiest nodes, workload states, alarms",
			Flags: clientFlags(
				&cli.DurationFlag{Name: "refresh", Value: 2 * time.Second, Usage: "how often the view is redrawn"},
				&cli.BoolFlag{Name: "once", Usage: "print one view and exit (scripts, tests)"},
				&cli.StringFlag{Name: "by", Value: "zone", Usage: "breakdown: zone, label, deployment or a key such as zone:eu-1"},
			),
			Action: func(c *cli.Context) error {
				if err := noArgs(c); err != nil {
					return err
				}
				cl, err := newClient(c)
				if err != nil {
					return err
				}
				for {
					ctx, cancel := context.WithTimeout(c.Context, 10*time.Second)
					var v agent.ClusterMetrics
					err := cl.Do(ctx, "GET", "/v1/cluster/metrics?by=", nil, &v)
					cancel()
					var b strings.Builder
					if !c.Bool("once") {
						b.WriteString("\x1b[H\x1b[2J") // home and clear: a refreshing screen without a TUI library
					}
					if err != nil {
						fmt.Fprintf(&b, "%s  cannot read the cluster view: %v\n", time.Now().Format(time.TimeOnly), err)
					} else {
						renderTop(&b, &v, c.String("by"))
					}
					_, _ = io.WriteString(c.App.Writer, b.String())
					if c.Bool("once") {
						return err
					}
					select {
					case <-c.Context.Done():
						return nil
					case <-time.After(c.Duration("refresh")):
					}
				}
			},
		},
		{
			Name: "alarms", Usage: "list the cluster's active alarms (node down, aggregator lost, crash loop, thresholds)", Flags: clientFlags(format),
			Action: func(c *cli.Context) error {
				return printList(c, "/v1/alarms", func(tw io.Writer, as []monitor.Alarm) {
					if len(as) == 0 {
						fmt.Fprintln(tw, "No active alarms.")
						return
					}
					fmt.Fprintln(tw, "KIND\tSUBJECT\tSINCE")
					for _, a := range as {
						fmt.Fprintf(tw, "%s\t%s\t%s\n", a.Kind, a.Subject, time.UnixMilli(a.Since).UTC().Format(time.RFC3339))
					}
				})
			},
		},
		{
			Name: "monitor", Usage: "the monitoring tree",
			Subcommands: []*cli.Command{{
				Name: "plan", Usage: "show the committed monitoring plan as a tree (root, aggregators, fan-in)", Flags: clientFlags(format),
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					cl, ctx, cancel, err := client(c)
					if err != nil {
						return err
					}
					defer cancel()
					var p *monitor.Plan
					if err := cl.Do(ctx, "GET", "/v1/monitor/plan?consistency=stale", nil, &p); err != nil {
						return err
					}
					if p == nil {
						return errors.New("no monitoring plan committed yet")
					}
					if c.String("format") == "json" {
						return printJSON(c.App.Writer, p)
					}
					var ms []agent.MemberInfo
					_ = cl.Do(ctx, "GET", "/v1/members", nil, &ms)
					names := map[string]string{}
					for _, m := range ms {
						names[m.ID] = m.Name
					}
					renderPlan(c.App.Writer, p, names)
					return nil
				},
			}},
		},
	}
}

// renderTop draws one screen of `colony top`.
func renderTop(w io.Writer, v *agent.ClusterMetrics, by string) {
	fmt.Fprintf(w, "Colony cluster at %s (root %s, data %.1fs old, bound %.1fs, plan v%d)\n",
		v.Time.Local().Format(time.TimeOnly), v.Root, v.AgeSeconds, v.FreshnessBoundSeconds, v.Epoch)
	fmt.Fprintf(w, "Nodes:     %s\n", counts(v.Nodes))
	fmt.Fprintf(w, "Workloads: %s\n", counts(v.Workloads))
	if v.Truncated {
		fmt.Fprintln(w, "(some dimensions were dropped to keep summaries small)")
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "METRIC\tSCOPE\tNODES\tMEAN\tP50\tP90\tP99\tMAX\t")
	names := make([]string, 0, len(v.Metrics))
	for n := range v.Metrics {
		if n != "sampled_at_seconds" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	prefix := by
	if prefix == "zone" || prefix == "label" || prefix == "deployment" {
		prefix += ":"
	}
	for _, n := range names {
		dims := make([]string, 0, len(v.Metrics[n]))
		for d := range v.Metrics[n] {
			if d == monitor.DimAll || strings.HasPrefix(d, prefix) {
				dims = append(dims, d)
			}
		}
		sort.Slice(dims, func(i, j int) bool {
			return dims[i] == monitor.DimAll || (dims[j] != monitor.DimAll && dims[i] < dims[j])
		})
		for _, d := range dims {
			s := v.Metrics[n][d]
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", n, d, s.Count, num(s.Mean), opt(s.P50), opt(s.P90), opt(s.P99), num(s.Max))
		}
	}
	_ = tw.Flush()
	if len(v.Busiest) > 0 {
		width := len("NODE")
		for _, l := range v.Busiest {
			width = max(width, len(l.Node))
		}
		fmt.Fprintf(w, "\nBusiest nodes (by cpu):\n  %-*s  %6s  %6s\n", width, "NODE", "CPU%", "MEM%")
		for _, l := range v.Busiest {
			fmt.Fprintf(w, "  %-*s  %6.1f  %6.1f\n", width, l.Node, l.CPU, l.Mem)
		}
	}
	if len(v.Alarms) > 0 {
		fmt.Fprintf(w, "\nAlarms (%d):\n", len(v.Alarms))
		for _, a := range v.Alarms {
			fmt.Fprintf(w, "  %-16s %s since %s\n", a.Kind, a.Subject, time.UnixMilli(a.Since).Local().Format(time.TimeOnly))
		}
	}
}

func counts(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d %s", m[k], k)
	}
	return strings.Join(parts, ", ")
}

// num prints large byte counts compactly and small numbers with two decimals.
func num(f float64) string {
	switch {
	case f >= 1<<30:
		return fmt.Sprintf("%.1fG", f/(1<<30))
	case f >= 1<<20:
		return fmt.Sprintf("%.1fM", f/(1<<20))
	case f >= 1<<14:
		return fmt.Sprintf("%.1fK", f/(1<<10))
	}
	return fmt.Sprintf("%.2f", f)
}

func opt(f *float64) string {
	if f == nil {
		return "-"
	}
	return num(*f)
}

// renderPlan prints the tree from the root down, one line per aggregator
// with its leaf children summarised.
func renderPlan(w io.Writer, p *monitor.Plan, names map[string]string) {
	name := func(id string) string {
		if n, ok := names[id]; ok {
			return n
		}
		if len(id) > 8 {
			return id[:8]
		}
		return id
	}
	fmt.Fprintf(w, "Monitoring plan v%d: %d nodes, depth %d, groups of at most %d\n", p.Version, p.Len(), p.Depth, p.GroupSize)
	var walk func(id, indent string)
	walk = func(id, indent string) {
		kids := p.Children(id)
		var aggs, leaves []string
		for _, k := range kids {
			if p.Level(k) > 0 {
				aggs = append(aggs, k)
			} else {
				leaves = append(leaves, name(k))
			}
		}
		sort.Strings(leaves)
		sort.Slice(aggs, func(i, j int) bool { return name(aggs[i]) < name(aggs[j]) })
		role := "aggregator"
		if id == p.Root() {
			role = "root"
		}
		fmt.Fprintf(w, "%s%s (%s, level %d, fan-in %d)", indent, name(id), role, p.Level(id), len(kids))
		if len(leaves) > 0 {
			fmt.Fprintf(w, ": %s", strings.Join(leaves, " "))
		}
		fmt.Fprintln(w)
		for _, a := range aggs {
			walk(a, indent+"  ")
		}
	}
	if p.Root() != "" {
		walk(p.Root(), "")
	}
}
