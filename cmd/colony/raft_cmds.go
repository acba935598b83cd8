package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"colony/agent"
	"colony/consensus"
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show the Raft cluster as the node at --http-addr sees it: leader, voters, term, indexes, members, health",
		Flags: clientFlags(&cli.StringFlag{Name: "format", Value: "text", Usage: "text or json"}),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			cl, ctx, cancel, err := client(c)
			if err != nil {
				return err
			}
			defer cancel()
			st, _, err := cl.Status(ctx)
			if err != nil {
				return err
			}
			if c.String("format") == "json" {
				if err := printJSON(c.App.Writer, st); err != nil {
					return err
				}
			} else {
				printStatus(c.App.Writer, *st)
			}
			if st.Health != "passing" {
				return cli.Exit("colony: the cluster is not healthy: "+st.Problem, 2)
			}
			return nil
		},
	}
}

func printStatus(out io.Writer, st agent.ClusterStatus) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "node:\t%s\n", st.Node)
	if st.Leader != nil {
		fmt.Fprintf(w, "leader:\t%s (%s, raft %s)\n", st.Leader.Name, st.Leader.ID, st.Leader.RaftAddr)
	} else {
		fmt.Fprintf(w, "leader:\tnone\n")
	}
	if st.Raft != nil {
		fmt.Fprintf(w, "term:\t%d\n", st.Raft.Term)
		fmt.Fprintf(w, "commit index:\t%d (applied %d, from %s)\n", st.Raft.CommitIndex, st.Raft.AppliedIndex, st.Raft.ServedBy)
	}
	fmt.Fprintf(w, "members:\talive %d, suspect %d, dead %d, left %d\n", st.Members["alive"], st.Members["suspect"], st.Members["dead"], st.Members["left"])
	fmt.Fprintf(w, "health:\t%s\n", st.Health)
	if st.Problem != "" {
		fmt.Fprintf(w, "problem:\t%s\n", st.Problem)
	}
	w.Flush()
	fmt.Fprintln(out)
	printVoters(out, st.Voters)
}

func printVoters(out io.Writer, vs []agent.VoterInfo) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "VOTER\tID\tRAFT ADDRESS\tROLE\tGOSSIP STATUS")
	for _, v := range vs {
		role := "follower"
		if v.Leader {
			role = "leader"
		}
		if !v.Voter {
			role = "non-voter"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", v.Name, v.ID, v.RaftAddr, role, v.Status)
	}
	w.Flush()
}

func raftCommand() *cli.Command {
	return &cli.Command{
		Name:  "raft",
		Usage: "Raft operations: peers, and recovery after quorum loss",
		Subcommands: []*cli.Command{
			{
				Name:  "peers",
				Usage: "list the Raft configuration (from a running node, or offline from --data-dir of a stopped one)",
				Flags: clientFlags(
					&cli.StringFlag{Name: "data-dir", Usage: "read the configuration stored in this stopped node's data dir instead of asking the API"},
					&cli.StringFlag{Name: "format", Value: "table", Usage: "table or json"},
				),
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					if dir := c.String("data-dir"); dir != "" {
						servers, err := consensus.ReadServers(dir)
						if err != nil {
							return fmt.Errorf("read raft configuration from %s (is the agent stopped?): %w", dir, err)
						}
						if c.String("format") == "json" {
							return printJSON(c.App.Writer, servers)
						}
						w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
						fmt.Fprintln(w, "ID\tRAFT ADDRESS\tVOTER")
						for _, s := range servers {
							fmt.Fprintf(w, "%s\t%s\t%v\n", s.ID, s.Address, s.Voter)
						}
						return w.Flush()
					}
					cl, ctx, cancel, err := client(c)
					if err != nil {
						return err
					}
					defer cancel()
					var vs []agent.VoterInfo
					if err := cl.Do(ctx, "GET", "/v1/status/voters", nil, &vs); err != nil {
						return err
					}
					if c.String("format") == "json" {
						return printJSON(c.App.Writer, vs)
					}
					printVoters(c.App.Writer, vs)
					return nil
				},
			},
			{
				Name:      "recover",
				Usage:     "after quorum loss, force the Raft configuration of a STOPPED voter to the given survivors (run on each survivor with the same list)",
				ArgsUsage: " ",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "data-dir", Required: true, Usage: "data dir of the stopped agent"},
					&cli.StringSliceFlag{Name: "peer", Required: true, Usage: "surviving voter as ID=RAFT_ADDRESS (repeatable; the same list on every survivor)"},
				},
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					var servers []consensus.Server
					for _, p := range c.StringSlice("peer") {
						id, addr, ok := strings.Cut(p, "=")
						if !ok || id == "" || addr == "" {
							return fmt.Errorf("--peer %q: want ID=RAFT_ADDRESS (see `colony raft peers --data-dir`)", p)
						}
						servers = append(servers, consensus.Server{ID: id, Address: addr, Voter: true})
					}
					dir := c.String("data-dir")
					if err := consensus.WritePeersFile(dir, servers); err != nil {
						return fmt.Errorf("write recovery configuration: %w", err)
					}
					fmt.Fprintf(c.App.Writer, "Wrote %s/raft/%s with %d voter(s). Start the agent: it applies the configuration, then elects a leader once a majority of these voters runs.\n", dir, consensus.PeersFileName, len(servers))
					return nil
				},
			},
		},
	}
}

func settingsCommand() *cli.Command {
	consistency := &cli.StringFlag{Name: "consistency", Value: "default", Usage: "stale, default or consistent"}
	return &cli.Command{
		Name:  "settings",
		Usage: "read and write cluster settings (a key/value stored in Raft)",
		Subcommands: []*cli.Command{
			{
				Name: "get", Usage: "print a setting's value", ArgsUsage: "KEY",
				Flags: clientFlags(consistency),
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return errors.New("settings get takes one KEY")
					}
					cl, ctx, cancel, err := client(c)
					if err != nil {
						return err
					}
					defer cancel()
					var s consensus.Setting
					if err := cl.Do(ctx, "GET", "/v1/settings/"+url.PathEscape(c.Args().First())+"?consistency="+url.QueryEscape(c.String("consistency")), nil, &s); err != nil {
						return err
					}
					fmt.Fprintln(c.App.Writer, s.Value)
					return nil
				},
			},
			{
				Name: "set", Usage: "set a setting (committed through the leader)", ArgsUsage: "KEY VALUE",
				Flags: clientFlags(),
				Action: func(c *cli.Context) error {
					if c.NArg() != 2 {
						return errors.New("settings set takes KEY VALUE")
					}
					cl, ctx, cancel, err := client(c)
					if err != nil {
						return err
					}
					defer cancel()
					var res agent.WriteResult
					if err := cl.Do(ctx, "PUT", "/v1/settings/"+url.PathEscape(c.Args().Get(0)), agent.SettingRequest{Value: c.Args().Get(1)}, &res); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "Committed at index %d\n", res.Index)
					return nil
				},
			},
			{
				Name: "delete", Usage: "delete a setting", ArgsUsage: "KEY",
				Flags: clientFlags(),
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return errors.New("settings delete takes one KEY")
					}
					cl, ctx, cancel, err := client(c)
					if err != nil {
						return err
					}
					defer cancel()
					var res agent.WriteResult
					if err := cl.Do(ctx, "DELETE", "/v1/settings/"+url.PathEscape(c.Args().First()), nil, &res); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "Committed at index %d\n", res.Index)
					return nil
				},
			},
			{
				Name: "list", Usage: "list every setting", Flags: clientFlags(consistency, &cli.StringFlag{Name: "format", Value: "table", Usage: "table or json"}),
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					cl, ctx, cancel, err := client(c)
					if err != nil {
						return err
					}
					defer cancel()
					var list []consensus.Setting
					if err := cl.Do(ctx, "GET", "/v1/settings?consistency="+url.QueryEscape(c.String("consistency")), nil, &list); err != nil {
						return err
					}
					if c.String("format") == "json" {
						return printJSON(c.App.Writer, list)
					}
					w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
					fmt.Fprintln(w, "KEY\tVALUE\tMODIFIED AT")
					for _, s := range list {
						fmt.Fprintf(w, "%s\t%s\t%d\n", s.Key, s.Value, s.ModifyIndex)
					}
					return w.Flush()
				},
			},
		},
	}
}
