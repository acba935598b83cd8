package main

import (
	"fmt"
	"net"
	"sort"
	"time"

	"github.com/urfave/cli/v2"

	"colony/agent"
	"colony/agent/tlsutil"
)

// keyringCommand manages the gossip keyring cluster-wide, as `consul
// keyring` does: every live node runs the operation and the answer says
// on how many of them it worked.
func keyringCommand() *cli.Command {
	op := func(name, usage string) *cli.Command {
		return &cli.Command{
			Name:      name,
			Usage:     usage,
			ArgsUsage: "KEY",
			Flags:     clientFlags(),
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return fmt.Errorf("keyring %s takes one KEY (base64, from `colony keygen`)", name)
				}
				if _, err := agent.DecodeKey(c.Args().First()); err != nil {
					return err
				}
				return runKeyring(c, name, c.Args().First())
			},
		}
	}
	return &cli.Command{
		Name:  "keyring",
		Usage: "list, install, use or remove gossip encryption keys on every live node (key rotation without downtime)",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list the keys installed on the live nodes, with how many nodes hold each",
				Flags: clientFlags(),
				Action: func(c *cli.Context) error {
					if err := noArgs(c); err != nil {
						return err
					}
					return runKeyring(c, "list", "")
				},
			},
			op(agent.KeyringInstall, "install KEY on every live node: they accept it, but keep encrypting with the primary key"),
			op(agent.KeyringUse, "make the installed KEY the primary (encrypting) key on every live node"),
			op(agent.KeyringRemove, "remove KEY from every live node (refused for the primary key)"),
		},
	}
}

func runKeyring(c *cli.Context, op, key string) error {
	cl, ctx, cancel, err := client(c)
	if err != nil {
		return err
	}
	defer cancel()
	resp, err := cl.Keyring(ctx, op, key)
	if resp == nil {
		return err
	}
	w := c.App.Writer
	if op == "list" {
		keys := make([]string, 0, len(resp.Keys))
		for k := range resp.Keys {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		fmt.Fprintf(w, "Keys installed on %d of %d live nodes:\n", resp.NumOK, resp.NumNodes)
		for _, k := range keys {
			primary := ""
			if n := resp.PrimaryKeys[k]; n > 0 {
				primary = fmt.Sprintf("  primary on %d", n)
			}
			fmt.Fprintf(w, "  %s [%d/%d]%s\n", k, resp.Keys[k], resp.NumNodes, primary)
		}
	} else {
		fmt.Fprintf(w, "Keyring %s done on %d of %d live nodes\n", op, resp.NumOK, resp.NumNodes)
	}
	return err
}

func tlsCommand() *cli.Command {
	return &cli.Command{
		Name:  "tls",
		Usage: "create a private CA and node certificates for --tls-* (ECDSA P-256)",
		Subcommands: []*cli.Command{
			{
				Name:  "ca",
				Usage: "certificate authority",
				Subcommands: []*cli.Command{{
					Name:  "create",
					Usage: "create " + tlsutil.CAFile + " and " + tlsutil.CAKeyFile + " (keep the key secret and offline)",
					Flags: []cli.Flag{
						&cli.StringFlag{Name: "dir", Value: ".", Usage: "directory the files are written to"},
						&cli.StringFlag{Name: "name", Value: "Colony Agent CA", Usage: "common name of the CA"},
						&cli.IntFlag{Name: "days", Value: 5 * 365, Usage: "validity in days"},
					},
					Action: func(c *cli.Context) error {
						if err := noArgs(c); err != nil {
							return err
						}
						if c.Int("days") < 1 {
							return fmt.Errorf("--days %d: want 1 or more", c.Int("days"))
						}
						cert, key, err := tlsutil.CreateCA(tlsutil.CAOptions{Dir: c.String("dir"), Name: c.String("name"), TTL: days(c.Int("days"))})
						if err != nil {
							return err
						}
						fmt.Fprintf(c.App.Writer, "==> Saved %s\n==> Saved %s\n", cert, key)
						return nil
					},
				}},
			},
			{
				Name:  "cert",
				Usage: "node and client certificates",
				Subcommands: []*cli.Command{{
					Name:  "create",
					Usage: "create colony-NODE.pem and colony-NODE-key.pem signed by the CA",
					Flags: []cli.Flag{
						&cli.StringFlag{Name: "node", Usage: "node name (the certificate's common name)", Required: true},
						&cli.BoolFlag{Name: "client", Usage: "a client-only certificate (CLI, scripts), which cannot serve as an agent"},
						&cli.StringFlag{Name: "ca", Value: tlsutil.CAFile, Usage: "CA certificate"},
						&cli.StringFlag{Name: "ca-key", Value: tlsutil.CAKeyFile, Usage: "CA private key"},
						&cli.StringFlag{Name: "dir", Value: ".", Usage: "directory the files are written to"},
						&cli.IntFlag{Name: "days", Value: 365, Usage: "validity in days"},
						&cli.StringSliceFlag{Name: "ip", Usage: "extra IP address in the certificate (repeatable; 127.0.0.1 is always in)"},
						&cli.StringSliceFlag{Name: "dns", Usage: "extra DNS name in the certificate (repeatable)"},
						&cli.StringFlag{Name: "server-name", Value: tlsutil.DefaultServerName, Usage: "the name agents check (must match their --tls-server-name)"},
					},
					Action: func(c *cli.Context) error {
						if err := noArgs(c); err != nil {
							return err
						}
						if c.Int("days") < 1 {
							return fmt.Errorf("--days %d: want 1 or more", c.Int("days"))
						}
						var ips []net.IP
						for _, s := range c.StringSlice("ip") {
							ip := net.ParseIP(s)
							if ip == nil {
								return fmt.Errorf("--ip %q is not an IP address", s)
							}
							ips = append(ips, ip)
						}
						cert, key, err := tlsutil.CreateCert(tlsutil.CertOptions{
							Dir: c.String("dir"), CAFile: c.String("ca"), CAKeyFile: c.String("ca-key"), Node: c.String("node"),
							Client: c.Bool("client"), ServerName: c.String("server-name"), IPs: ips, DNSNames: c.StringSlice("dns"),
							TTL: days(c.Int("days")),
						})
						if err != nil {
							return err
						}
						fmt.Fprintf(c.App.Writer, "==> Using %s and %s\n==> Saved %s\n==> Saved %s\n", c.String("ca"), c.String("ca-key"), cert, key)
						return nil
					},
				}},
			},
		},
	}
}

func days(n int) time.Duration { return time.Duration(n) * 24 * time.Hour }
