// Command colony is the Colony node agent and its command-line client. It
// only wires things together: flags and config into agent.Config, a logger,
// signals; the agent package does the work.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"colony/agent"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
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
			keygenCommand(),
			versionCommand(),
		}, deployCommands()...),
	}
}
