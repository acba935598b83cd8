package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"

	"colony/agent"
	"colony/consensus"
)

func poolCommands() []*cli.Command {
	format := &cli.StringFlag{Name: "format", Value: "table", Usage: "table or json"}
	return []*cli.Command{
		{
			Name: "pools", Usage: "list node pools the autoscaler manages", Flags: clientFlags(format),
			Action: func(c *cli.Context) error {
				return printList(c, "/v1/pools", func(w io.Writer, ps []consensus.Pool) {
					fmt.Fprintln(w, "NAME\tPROVIDER\tTYPES\tMIN\tMAX\tUP COOLDOWN\tDOWN AFTER IDLE\tLABELS")
					for _, p := range ps {
						types := strings.Join(p.Types, ",")
						if types == "" {
							types = "(all)"
						}
						var labels []string
						for k, v := range p.Labels {
							labels = append(labels, k+"="+v)
						}
						slices.Sort(labels)
						fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", p.Name, p.Provider, types, p.Min, p.Max, p.ScaleUpCooldown, p.ScaleDownAfter, strings.Join(labels, ","))
					}
				})
			},
		},
		{
			Name: "pool", Usage: "define, delete and inspect node pools",
			Subcommands: []*cli.Command{
				{
					Name: "set", Usage: "create or replace a pool", ArgsUsage: "NAME",
					Flags: clientFlags(
						&cli.StringFlag{Name: "provider", Required: true, Usage: "provider kind: local, docker or exec"},
						&cli.StringFlag{Name: "config", Usage: "YAML or JSON file with the provider's configuration (its yaml keys)"},
						&cli.StringSliceFlag{Name: "type", Usage: "instance type the pool may launch (repeat; default: every type)"},
						&cli.IntFlag{Name: "min", Value: 0, Usage: "least nodes kept"},
						&cli.IntFlag{Name: "max", Value: 10, Usage: "most nodes launched"},
						&cli.DurationFlag{Name: "scale-up-cooldown", Value: agent.DefaultScaleUpCooldown, Usage: "least time between two launches"},
						&cli.DurationFlag{Name: "scale-down-after", Value: agent.DefaultScaleDownAfter, Usage: "idle time before a node is drained and terminated"},
						&cli.StringSliceFlag{Name: "label", Usage: "KEY=VALUE given to every launched node (repeat)"},
					),
					Action: func(c *cli.Context) error {
						if c.NArg() != 1 {
							return errors.New("pool set takes one pool NAME")
						}
						spec := agent.PoolSpec{
							Provider: c.String("provider"), Types: c.StringSlice("type"), Min: c.Int("min"), Max: c.Int("max"),
							ScaleUpCooldown: c.Duration("scale-up-cooldown").String(), ScaleDownAfter: c.Duration("scale-down-after").String(),
						}
						if f := c.String("config"); f != "" {
							b, err := os.ReadFile(f)
							if err != nil {
								return fmt.Errorf("read provider config: %w", err)
							}
							if err := yaml.Unmarshal(b, &spec.ProviderConfig); err != nil {
								return fmt.Errorf("provider config %s: %w", f, err)
							}
						}
						for _, l := range c.StringSlice("label") {
							k, v, ok := strings.Cut(l, "=")
							if !ok {
								return fmt.Errorf("label %q: want KEY=VALUE", l)
							}
							if spec.Labels == nil {
								spec.Labels = map[string]string{}
							}
							spec.Labels[k] = v
						}
						return simpleWrite(c, "PUT", "/v1/pools/"+url.PathEscape(c.Args().First()), spec)
					},
				},
				{
					Name: "delete", Usage: "delete a pool (its nodes stay, unmanaged)", ArgsUsage: "NAME", Flags: clientFlags(),
					Action: func(c *cli.Context) error {
						if c.NArg() != 1 {
							return errors.New("pool delete takes one pool NAME")
						}
						return simpleWrite(c, "DELETE", "/v1/pools/"+url.PathEscape(c.Args().First()), nil)
					},
				},
				{
					Name: "intents", Usage: "list launch and terminate intents (open ones are in progress)", Flags: clientFlags(format),
					Action: func(c *cli.Context) error {
						if err := noArgs(c); err != nil {
							return err
						}
						cl, ctx, cancel, err := client(c)
						if err != nil {
							return err
						}
						defer cancel()
						var is []consensus.Intent
						if err := cl.Do(ctx, "GET", "/v1/intents", nil, &is); err != nil {
							return err
						}
						if c.String("format") == "json" {
							return printJSON(c.App.Writer, is)
						}
						w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
						fmt.Fprintln(w, "KEY\tPOOL\tKIND\tTYPE\tCOUNT\tSTATE\tINSTANCES\tREASON")
						for _, in := range is {
							fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", in.Key, in.Pool, in.Kind, in.Type, in.Count, in.State, strings.Join(in.InstanceIDs, ","), in.Reason)
						}
						return w.Flush()
					},
				},
			},
		},
		{
			Name: "events", Usage: "show the cluster's event log (scaling decisions and their results)",
			Flags: clientFlags(format, &cli.Uint64Flag{Name: "after", Usage: "only events with a sequence number above this"}),
			Action: func(c *cli.Context) error {
				if err := noArgs(c); err != nil {
					return err
				}
				cl, ctx, cancel, err := client(c)
				if err != nil {
					return err
				}
				defer cancel()
				var evs []consensus.Event
				if err := cl.Do(ctx, "GET", "/v1/events?after="+strconv.FormatUint(c.Uint64("after"), 10), nil, &evs); err != nil {
					return err
				}
				if c.String("format") == "json" {
					return printJSON(c.App.Writer, evs)
				}
				w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "SEQ\tTIME\tKIND\tPOOL\tMESSAGE")
				for _, e := range evs {
					fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.Local().Format(time.DateTime), e.Kind, e.Pool, e.Message)
				}
				return w.Flush()
			},
		},
	}
}
