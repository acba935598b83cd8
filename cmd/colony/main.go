// Command colony is the Colony node agent and its command-line client. It
// only wires things together: flags and config into agent.Config, a logger,
// signals; the agent package does the work.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"colony/agent"
)

func main() {
	app := newApp()
	if err := app.Run(flagsFirst(app, os.Args)); err != nil {
		fmt.Fprintln(os.Stderr, "colony: "+err.Error())
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:                 "colony",
		Usage:                "a self-organising node agent: gossip membership, Raft, placement and monitoring in one binary",
		Version:              agent.Version,
		EnableBashCompletion: true,
		HideVersion:          true,
		Commands: append([]*cli.Command{
			agentCommand(),
			membersCommand(),
			joinCommand(),
			leaveCommand(),
			infoCommand(),
			statusCommand(),
			raftCommand(),
			settingsCommand(),
			aclCommand(),
			keygenCommand(),
			keyringCommand(),
			tlsCommand(),
			versionCommand(),
			antfarmCommand(),
		}, append(append(deployCommands(), poolCommands()...), monitorCommands()...)...),
	}
}

// flagsFirst moves a command's flags ahead of its arguments, so that
// `colony deploy web.yaml --http-addr 10.0.0.5:7070` works as well as the
// order urfave/cli requires (flags right after the command name). Only long
// flags of the command reached are moved; "--" ends them, and a value
// never is mistaken for one.
func flagsFirst(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	cmds := app.Commands
	var leaf *cli.Command
	i := 1
	for i < len(args) {
		var next *cli.Command
		for _, c := range cmds {
			if c.HasName(args[i]) {
				next = c
			}
		}
		if next == nil {
			break
		}
		leaf, cmds = next, next.Subcommands
		i++
	}
	if leaf == nil || leaf.SkipFlagParsing {
		return args
	}
	takesValue := map[string]bool{}
	for _, f := range leaf.Flags {
		// TakesValue, not a type switch: altsrc wraps cli.BoolFlag in its own type.
		takes := true
		if tv, ok := f.(interface{ TakesValue() bool }); ok {
			takes = tv.TakesValue()
		}
		for _, n := range f.Names() {
			takesValue[n] = takes
		}
	}
	out := append([]string{}, args[:i]...)
	var flags, rest []string
	for j := i; j < len(args); j++ {
		a := args[j]
		if a == "--" {
			rest = append(rest, args[j:]...)
			break
		}
		name, _, hasValue := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if _, known := takesValue[name]; !strings.HasPrefix(a, "--") || !known {
			rest = append(rest, a) // an argument, or a flag urfave will report
			continue
		}
		flags = append(flags, a)
		if takesValue[name] && !hasValue && j+1 < len(args) {
			flags = append(flags, args[j+1])
			j++
		}
	}
	return append(append(out, flags...), rest...)
}
