// Command vmguard-agent is the guest agent alone, for installing in VM
// guests: the same flags and behaviour as `vmguard agent`
// (guestagent/agentcmd), without the server, host manager, failover
// controller and operator tools, and without nats-server linked in, so its
// memory stays small. Exit codes: 0 ok, 1 error, 2 usage.
package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/vmguard/vmguard/guestagent/agentcmd"
	"github.com/vmguard/vmguard/internal/cliparse"
	"github.com/vmguard/vmguard/internal/natsconn"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// cli is the agent's command line: vmguard's global --nats plus the agent's
// options.
type cli struct {
	natsconn.Flags   `embed:""`
	Ver              kong.VersionFlag `name:"version" help:"Print the version and exit."`
	agentcmd.Options `embed:""`
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses args, runs the agent until ctx ends and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var c cli
	prog := cliparse.Program{
		Name:        "vmguard-agent",
		Description: "The vmguard guest agent: runs, watches and reports processes inside a guest (the same as `vmguard agent`).",
		Version:     "vmguard-agent " + version,
	}
	if _, code, done := prog.Parse(&c, args, stdout, stderr); done {
		return code
	}
	return prog.Code(c.Options.Run(ctx, c.Flags, stderr, version), stderr, func(err error) bool {
		_, ok := errors.AsType[*agentcmd.UsageError](err)
		return ok
	})
}
