package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"

	"github.com/urfave/cli/v2"

	"colony/agent"
	"colony/consensus"
)

func aclCommand() *cli.Command {
	format := &cli.StringFlag{Name: "format", Value: "text", Usage: "text or json"}
	printToken := func(c *cli.Context, t agent.ACLTokenInfo) error {
		if c.String("format") == "json" {
			return printJSON(c.App.Writer, t)
		}
		if c.String("format") != "text" {
			return fmt.Errorf("--format %q: want text or json", c.String("format"))
		}
		fmt.Fprintf(c.App.Writer, "AccessorID:   %s\nSecretID:     %s\nPolicy:       %s\nDescription:  %s\nCreateIndex:  %d\n", t.AccessorID, t.SecretID, t.Policy, t.Description, t.CreateIndex)
		if t.SecretID != "" {
			fmt.Fprintln(c.App.Writer, "\nThe cluster keeps only a hash of the secret: store it now, it cannot be shown again.")
		}
		return nil
	}
	return &cli.Command{
		Name:  "acl",
		Usage: "access control: bootstrap, create, list and delete tokens (agents run with --acl-enabled)",
		Subcommands: []*cli.Command{
			{
				Name:  "bootstrap",
				Usage: "create the first management token; works once per cluster",
				Flags: clientFlags(format),
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					cl, ctx, cancel, err := client(c)
					if err != nil {
						return err
					}
					defer cancel()
					var t agent.ACLTokenInfo
					if err := cl.Do(ctx, "POST", "/v1/acl/bootstrap", nil, &t); err != nil {
						return err
					}
					return printToken(c, t)
				},
			},
			{
				Name:  "token",
				Usage: "manage tokens (needs a management token)",
				Subcommands: []*cli.Command{
					{
						Name:  "create",
						Usage: "create a token with a policy: read-only, deploy, operator or management",
						Flags: clientFlags(format,
							&cli.StringFlag{Name: "policy", Required: true, Usage: "read-only, deploy, operator or management"},
							&cli.StringFlag{Name: "description", Usage: "what the token is for"},
						),
						Action: func(c *cli.Context) error {
							if err := noArgs(c); err != nil {
								return err
							}
							if err := consensus.ValidatePolicy(c.String("policy")); err != nil {
								return fmt.Errorf("--policy: %w", err)
							}
							cl, ctx, cancel, err := client(c)
							if err != nil {
								return err
							}
							defer cancel()
							var t agent.ACLTokenInfo
							req := agent.ACLTokenRequest{Policy: c.String("policy"), Description: c.String("description")}
							if err := cl.Do(ctx, "PUT", "/v1/acl/token", req, &t); err != nil {
								return err
							}
							return printToken(c, t)
						},
					},
					{
						Name:  "list",
						Usage: "list tokens (accessor IDs, never secrets)",
						Flags: clientFlags(&cli.StringFlag{Name: "format", Value: "table", Usage: "table or json"}),
						Action: func(c *cli.Context) error {
							return printList(c, "/v1/acl/tokens", func(tw io.Writer, ts []agent.ACLTokenInfo) {
								fmt.Fprintln(tw, "ACCESSOR ID\tPOLICY\tCREATED\tDESCRIPTION")
								for _, t := range ts {
									fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", t.AccessorID, t.Policy, t.CreateIndex, t.Description)
								}
							})
						},
					},
					{
						Name:      "delete",
						Usage:     "delete a token by accessor ID (see colony acl token list)",
						ArgsUsage: "ACCESSOR-ID",
						Flags:     clientFlags(),
						Action: func(c *cli.Context) error {
							if c.NArg() != 1 {
								return errors.New("acl token delete takes one ACCESSOR-ID (see colony acl token list)")
							}
							cl, ctx, cancel, err := client(c)
							if err != nil {
								return err
							}
							defer cancel()
							if err := cl.Do(ctx, "DELETE", "/v1/acl/token/"+url.PathEscape(c.Args().First()), nil, nil); err != nil {
								return err
							}
							fmt.Fprintf(c.App.Writer, "Token %s deleted\n", c.Args().First())
							return nil
						},
					},
				},
			},
		},
	}
}
