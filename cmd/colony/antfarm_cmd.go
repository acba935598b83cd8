package main

import (
	"context"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"colony/agent/workload/antfarm"
)

// antfarmCommand is the built-in demo workload: an ant colony optimisation
// solver for single machine total weighted tardiness that reports its
// progress through $COLONY_METRICS_FILE.
func antfarmCommand() *cli.Command {
	return &cli.Command{
		Name:            "antfarm",
		Usage:           "demo workload: ant colony optimisation for weighted tardiness scheduling (run it as a deployment; --help for its flags)",
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return antfarm.Run(ctx, c.Args().Slice(), c.App.Writer)
		},
	}
}
