package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"colony/agent"
	"colony/agent/tlsutil"
)

func clientFlags(extra ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "http-addr", Value: "127.0.0.1:7070", Usage: "API address of any Colony node", EnvVars: env("HTTP_ADDR")},
		&cli.StringFlag{Name: "token", Usage: "ACL token sent as X-Colony-Token (needed when the cluster runs with --acl-enabled)", EnvVars: env("TOKEN")},
		&cli.StringFlag{Name: "tls-ca", Usage: "CA certificate (PEM) the agent's certificate must be signed by; turns on https", EnvVars: env("TLS_CA")},
		&cli.StringFlag{Name: "tls-cert", Usage: "client certificate (PEM), needed when agents run with --tls-verify-incoming", EnvVars: env("TLS_CERT")},
		&cli.StringFlag{Name: "tls-key", Usage: "private key (PEM) of --tls-cert", EnvVars: env("TLS_KEY")},
		&cli.StringFlag{Name: "tls-server-name", Usage: "name the agent's certificate must carry (default " + tlsutil.DefaultServerName + ")", EnvVars: env("TLS_SERVER_NAME")},
	}, extra...)
}

// clientTLS is the CLI's TLS configuration, nil when no --tls-* flag is set.
func clientTLS(c *cli.Context) (*tls.Config, error) {
	cfg := tlsutil.Config{CAFile: c.String("tls-ca"), CertFile: c.String("tls-cert"), KeyFile: c.String("tls-key"), ServerName: c.String("tls-server-name")}
	switch {
	case !cfg.Enabled():
		return nil, nil
	case cfg.CAFile == "":
		return nil, errors.New("--tls-cert/--tls-key need --tls-ca (the CA the agent's certificate is signed by)")
	case cfg.CertFile == "" && cfg.KeyFile == "":
		return tlsutil.ClientOnlyConfig(cfg.CAFile, cfg.ServerName)
	}
	h, err := tlsutil.Load(cfg, false)
	if err != nil {
		return nil, err
	}
	return h.ClientConfig(), nil
}

// newClient is the API client the flags describe: https with --tls-*,
// carrying --token.
func newClient(c *cli.Context) (*agent.Client, error) {
	tc, err := clientTLS(c)
	if err != nil {
		return nil, err
	}
	cl, err := agent.NewTLSClient(c.String("http-addr"), tc)
	if err != nil {
		return nil, err
	}
	if tok := c.String("token"); tok != "" {
		if err := agent.ValidateToken(tok); err != nil {
			return nil, fmt.Errorf("--token: %w", err)
		}
		cl.SetToken(tok)
	}
	return cl, nil
}

// rawAPI is the base URL and HTTP client for commands that send raw
// requests.
func rawAPI(c *cli.Context) (string, *http.Client, error) {
	tc, err := clientTLS(c)
	if err != nil {
		return "", nil, err
	}
	addr := c.String("http-addr")
	if !strings.Contains(addr, "://") {
		if tc != nil {
			addr = "https://" + addr
		} else {
			addr = "http://" + addr
		}
	}
	hc := &http.Client{}
	if tc != nil {
		hc.Transport = &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment}
	}
	return strings.TrimRight(addr, "/"), hc, nil
}

func client(c *cli.Context) (*agent.Client, context.Context, context.CancelFunc, error) {
	cl, err := newClient(c)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(c.Context, 2*time.Minute)
	return cl, ctx, cancel, nil
}

func noArgs(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("%w (got %q)", errNoArgs, strings.Join(c.Args().Slice(), " "))
	}
	return nil
}

// printList is the body of a read-only list command: no arguments, one GET
// of path into a T, then T as JSON (--format json) or as the table that
// table writes (--format table).
func printList[T any](c *cli.Context, path string, table func(w io.Writer, v T)) error {
	if err := noArgs(c); err != nil {
		return err
	}
	if f := c.String("format"); f != "table" && f != "json" {
		return fmt.Errorf("--format %q: want table or json", f)
	}
	cl, ctx, cancel, err := client(c)
	if err != nil {
		return err
	}
	defer cancel()
	var v T
	if err := cl.Do(ctx, "GET", path, nil, &v); err != nil {
		return err
	}
	if c.String("format") == "json" {
		return printJSON(c.App.Writer, v)
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	table(tw, v)
	return tw.Flush()
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func membersCommand() *cli.Command {
	return &cli.Command{
		Name:  "members",
		Usage: "list the cluster's members as the node at --http-addr sees them",
		Flags: clientFlags(
			&cli.StringFlag{Name: "format", Value: "table", Usage: "table or json"},
			&cli.StringFlag{Name: "status", Usage: "only members with this status (alive, suspect, dead, left)"},
		),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			format := c.String("format")
			if format != "table" && format != "json" {
				return fmt.Errorf("--format %q: want table or json", format)
			}
			cl, ctx, cancel, err := client(c)
			if err != nil {
				return err
			}
			defer cancel()
			path := "/v1/members"
			if s := c.String("status"); s != "" {
				path += "?status=" + s
			}
			var ms []agent.MemberInfo
			if err := cl.Do(ctx, "GET", path, nil, &ms); err != nil {
				return err
			}
			if format == "json" {
				return printJSON(c.App.Writer, ms)
			}
			return printMembers(c.App.Writer, ms)
		},
	}
}

func printMembers(w io.Writer, ms []agent.MemberInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tSTATUS\tID\tCPUS\tMEMORY\tARCH\tLABELS")
	for _, m := range ms {
		keys := make([]string, 0, len(m.Labels))
		for k := range m.Labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		labels := make([]string, len(keys))
		for i, k := range keys {
			labels[i] = k + "=" + m.Labels[k]
		}
		id := m.ID
		if len(id) > 8 {
			id = id[:8]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%dMiB\t%s/%s\t%s\n", m.Name, m.Address, m.Status, id, m.Capabilities.CPUs, m.Capabilities.MemoryMiB, m.Capabilities.OS, m.Capabilities.Arch, strings.Join(labels, ","))
	}
	return tw.Flush()
}

func joinCommand() *cli.Command {
	return &cli.Command{
		Name:      "join",
		Usage:     "ask the node at --http-addr to join a cluster through ADDR",
		ArgsUsage: "ADDR [ADDR...]",
		Flags:     clientFlags(),
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return fmt.Errorf("join needs at least one address (host:port or DNS name)")
			}
			cl, ctx, cancel, err := client(c)
			if err != nil {
				return err
			}
			defer cancel()
			n, err := cl.Join(ctx, c.Args().Slice())
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "Joined: %d node(s) contacted\n", n)
			return nil
		},
	}
}

func leaveCommand() *cli.Command {
	return &cli.Command{
		Name:  "leave",
		Usage: "make the node at --http-addr leave the cluster gracefully and stop",
		Flags: clientFlags(),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			cl, ctx, cancel, err := client(c)
			if err != nil {
				return err
			}
			defer cancel()
			if err := cl.Leave(ctx); err != nil {
				return err
			}
			fmt.Fprintln(c.App.Writer, "Graceful leave started: the node tells the cluster, then stops")
			return nil
		},
	}
}

func infoCommand() *cli.Command {
	return &cli.Command{
		Name:  "info",
		Usage: "show the node at --http-addr: identity, capabilities, labels, health",
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
			self, err := cl.Self(ctx)
			if err != nil {
				return err
			}
			h, herr := cl.Health(ctx)
			if c.String("format") == "json" {
				return printJSON(c.App.Writer, map[string]any{"self": self, "health": h})
			}
			m := self.Member
			w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "node:\t%s\n", m.Name)
			fmt.Fprintf(w, "id:\t%s\n", m.ID)
			fmt.Fprintf(w, "state:\t%s\n", self.State)
			fmt.Fprintf(w, "gossip:\t%s (encrypted: %v)\n", m.Address, self.Encrypted)
			fmt.Fprintf(w, "api:\t%s\n", self.HTTPAddr)
			fmt.Fprintf(w, "version:\t%s\n", self.Version)
			fmt.Fprintf(w, "started:\t%s\n", self.StartedAt.Format(time.RFC3339))
			fmt.Fprintf(w, "data dir:\t%s\n", self.DataDir)
			fmt.Fprintf(w, "capabilities:\t%d cpus, %d MiB, %s/%s, kernel %s\n", m.Capabilities.CPUs, m.Capabilities.MemoryMiB, m.Capabilities.OS, m.Capabilities.Arch, m.Capabilities.Kernel)
			fmt.Fprintf(w, "labels:\t%v\n", m.Labels)
			if herr == nil {
				fmt.Fprintf(w, "health:\t%s (alive %d, suspect %d, dead %d, left %d)\n", h.Status, h.Members["alive"], h.Members["suspect"], h.Members["dead"], h.Members["left"])
			} else {
				fmt.Fprintf(w, "health:\t%v\n", herr)
			}
			return w.Flush()
		},
	}
}

func keygenCommand() *cli.Command {
	return &cli.Command{
		Name:  "keygen",
		Usage: "print a new random 32-byte gossip encryption key for --encrypt",
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			k := make([]byte, 32)
			if _, err := rand.Read(k); err != nil {
				return fmt.Errorf("read random bytes: %w", err)
			}
			fmt.Fprintln(c.App.Writer, base64.StdEncoding.EncodeToString(k))
			return nil
		},
	}
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version of this colony binary",
		Action: func(c *cli.Context) error {
			fmt.Fprintf(c.App.Writer, "colony %s (%s, %s/%s)\n", agent.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}
