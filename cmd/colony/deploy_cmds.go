package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"colony/agent"
)

func deployCommands() []*cli.Command {
	format := &cli.StringFlag{Name: "format", Value: "table", Usage: "table or json"}
	return []*cli.Command{
		{
			Name: "deploy", Usage: "create or update a deployment from a YAML or JSON spec file ('-' for standard input)", ArgsUsage: "FILE",
			Flags: clientFlags(),
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return errors.New("deploy takes one spec FILE")
				}
				var b []byte
				var err error
				if c.Args().First() == "-" {
					b, err = io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
				} else {
					b, err = os.ReadFile(c.Args().First())
				}
				if err != nil {
					return fmt.Errorf("read spec: %w", err)
				}
				ctx, cancel := context.WithTimeout(c.Context, time.Minute)
				defer cancel()
				var res agent.WriteResult
				if err := putRaw(ctx, c, "/v1/deployments", b, &res); err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "Deployment committed at index %d; the leader places it now (see `colony ps`)\n", res.Index)
				return nil
			},
		},
		{
			Name: "deployments", Usage: "list deployments: desired, placed and pending instances", Flags: clientFlags(format),
			Action: func(c *cli.Context) error {
				return printList(c, "/v1/deployments", func(w io.Writer, ds []agent.DeploymentInfo) {
					fmt.Fprintln(w, "NAME\tDESIRED\tPLACED\tPENDING\tWHY PENDING")
					for _, d := range ds {
						pending, why := 0, ""
						if d.Pending != nil {
							pending, why = d.Pending.Count, d.Pending.Metrics.String()
						}
						fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%s\n", d.Name, d.Count, d.Placed, pending, why)
					}
				})
			},
		},
		{
			Name: "ps", Usage: "list instances (node, state, restarts, uptime) of one deployment, or of all", ArgsUsage: "[DEPLOYMENT]", Flags: clientFlags(format),
			Action: func(c *cli.Context) error {
				if c.NArg() > 1 {
					return errors.New("ps takes at most one DEPLOYMENT")
				}
				cl, ctx, cancel, err := client(c)
				if err != nil {
					return err
				}
				defer cancel()
				names := c.Args().Slice()
				if len(names) == 0 {
					var ds []agent.DeploymentInfo
					if err := cl.Do(ctx, "GET", "/v1/deployments", nil, &ds); err != nil {
						return err
					}
					for _, d := range ds {
						names = append(names, d.Name)
					}
				}
				var all []agent.InstanceInfo
				for _, n := range names {
					var is []agent.InstanceInfo
					if err := cl.Do(ctx, "GET", "/v1/deployments/"+url.PathEscape(n)+"/instances", nil, &is); err != nil {
						return err
					}
					all = append(all, is...)
				}
				if c.String("format") == "json" {
					return printJSON(c.App.Writer, all)
				}
				sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
				w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "INSTANCE\tDEPLOYMENT\tNODE\tSTATE\tRESTARTS\tUPTIME\tNOTE")
				for _, i := range all {
					node := i.NodeName
					if node == "" {
						node = i.NodeID
					}
					state, restarts, uptime, note := "unknown", "-", "-", i.Error
					if st := i.Status; st != nil {
						state, restarts = string(st.State), strconv.Itoa(st.Restarts)
						if st.State == "running" && !st.StartedAt.IsZero() {
							uptime = time.Since(st.StartedAt).Round(time.Second).String()
						}
						if note == "" {
							note = st.LastError
						}
					} else if note == "" {
						note = "not started on its node yet"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", i.ID, i.Deployment, node, state, restarts, uptime, note)
				}
				return w.Flush()
			},
		},
		{
			Name: "logs", Usage: "print an instance's output, from whichever node runs it", ArgsUsage: "INSTANCE",
			Flags: clientFlags(
				&cli.BoolFlag{Name: "stderr", Usage: "print standard error instead of standard output"},
				&cli.Int64Flag{Name: "tail", Value: 64 << 10, Usage: "bytes from the end (0: all that is kept)"},
			),
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return errors.New("logs takes one INSTANCE (see colony ps)")
				}
				stream := "stdout"
				if c.Bool("stderr") {
					stream = "stderr"
				}
				addr, hc, err := rawAPI(c)
				if err != nil {
					return err
				}
				ctx, cancel := context.WithTimeout(c.Context, time.Minute)
				defer cancel()
				u := fmt.Sprintf("%s/v1/instances/%s/logs?stream=%s&tail=%d", strings.TrimRight(addr, "/"), url.PathEscape(c.Args().First()), stream, c.Int64("tail"))
				req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
				if err != nil {
					return err
				}
				if tok := c.String("token"); tok != "" {
					req.Header.Set(agent.HeaderToken, tok)
				}
				resp, err := hc.Do(req)
				if err != nil {
					return fmt.Errorf("cannot reach the colony agent at %s: %w", addr, err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					var e agent.APIError
					b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
					if json.Unmarshal(b, &e) == nil && e.Error != "" {
						return fmt.Errorf("agent refused (%d): %s", resp.StatusCode, e.Error)
					}
					return fmt.Errorf("agent refused (%d): %s", resp.StatusCode, b)
				}
				_, err = io.Copy(c.App.Writer, resp.Body)
				return err
			},
		},
		{
			Name: "scale", Usage: "change a deployment's instance count", ArgsUsage: "NAME COUNT", Flags: clientFlags(),
			Action: func(c *cli.Context) error {
				if c.NArg() != 2 {
					return errors.New("scale takes NAME COUNT")
				}
				n, err := strconv.Atoi(c.Args().Get(1))
				if err != nil || n < 0 {
					return fmt.Errorf("count %q: want a whole number of 0 or more", c.Args().Get(1))
				}
				return simpleWrite(c, "PUT", "/v1/deployments/"+url.PathEscape(c.Args().Get(0))+"/scale", agent.ScaleRequest{Count: n})
			},
		},
		{
			Name: "stop", Usage: "remove a deployment; its instances are stopped", ArgsUsage: "NAME", Flags: clientFlags(),
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return errors.New("stop takes one deployment NAME")
				}
				return simpleWrite(c, "DELETE", "/v1/deployments/"+url.PathEscape(c.Args().First()), nil)
			},
		},
		{
			Name: "drain", Usage: "move every instance off a node and keep new ones away", ArgsUsage: "NODE", Flags: clientFlags(),
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return errors.New("drain takes one NODE (name or ID)")
				}
				return simpleWrite(c, "PUT", "/v1/nodes/"+url.PathEscape(c.Args().First())+"/drain", nil)
			},
		},
		{
			Name: "undrain", Usage: "let a drained node take instances again", ArgsUsage: "NODE", Flags: clientFlags(),
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return errors.New("undrain takes one NODE (name or ID)")
				}
				return simpleWrite(c, "DELETE", "/v1/nodes/"+url.PathEscape(c.Args().First())+"/drain", nil)
			},
		},
	}
}

func simpleWrite(c *cli.Context, method, path string, body any) error {
	cl, ctx, cancel, err := client(c)
	if err != nil {
		return err
	}
	defer cancel()
	var res agent.WriteResult
	if err := cl.Do(ctx, method, path, body, &res); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "Committed at index %d\n", res.Index)
	return nil
}

// putRaw sends a spec file as it is (YAML or JSON) and prints every
// validation error the agent lists.
func putRaw(ctx context.Context, c *cli.Context, path string, body []byte, out any) error {
	addr, hc, err := rawAPI(c)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, "PUT", strings.TrimRight(addr, "/")+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if tok := c.String("token"); tok != "" {
		req.Header.Set(agent.HeaderToken, tok)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the colony agent at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		var se agent.SpecError
		if json.Unmarshal(b, &se) == nil && len(se.Errors) > 0 {
			var lines []string
			for _, e := range se.Errors {
				lines = append(lines, "  "+e.Field+": "+e.Reason)
			}
			return fmt.Errorf("invalid deployment spec (%d problems):\n%s", len(se.Errors), strings.Join(lines, "\n"))
		}
		var e agent.APIError
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("agent refused (%d): %s", resp.StatusCode, e.Error)
		}
		return fmt.Errorf("agent refused (%d): %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return json.Unmarshal(b, out)
}
