package main

import (
	"context"
	"fmt"
	"net/http"

	"github.com/vmguard/vmguard/internal/webui"
)

type uiCmd struct {
	Listen  string `name:"listen" default:"127.0.0.1:4280" placeholder:"ADDR" help:"Address to serve the console on."`
	Verbose bool   `name:"verbose" short:"v" help:"Log debug messages."`
}

// Help is shown by `vmguard ui --help`.
func (c *uiCmd) Help() string {
	return `The web console of a running cluster: the cluster, nodes, packages and
services as vmguard status -v shows them, the event timeline with filters by
package, node and type, a package's explain chain, and time travel over the
log with a slider, all live (server-sent events). It only reads the log: it
is read-only, and operator commands stay with the CLI (vmguard pkg, node).
Its assets are in the binary; it needs nothing from the internet.

It listens on loopback by default. It shows everything in the log to whoever
reaches it: to serve it beyond this machine, put it behind a proxy that
authenticates.

Example:
  vmguard ui --nats nats://10.0.0.5:4222 --listen 127.0.0.1:4280`
}

// Run serves the console until SIGINT or SIGTERM.
func (c *uiCmd) Run(ctx context.Context, g *globals) error {
	logger := newLogger(g.Stderr, c.Verbose)
	l, closeConn, err := openLog(ctx, g, "vmguard ui")
	if err != nil {
		return err
	}
	defer closeConn()
	con, err := webui.New(webui.Config{Log: l, Logger: logger})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", con.Handler())
	addr, err := serveHTTP(ctx, c.Listen, mux, logger)
	if err != nil {
		return fmt.Errorf("%w: --listen: %v", errUsage, err)
	}
	fmt.Fprintf(g.Stdout, "vmguard ui: web console (read-only) on http://%s/\n", addr)
	return con.Run(ctx)
}
