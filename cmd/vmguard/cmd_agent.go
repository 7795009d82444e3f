package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
)

type agentCmd struct {
	Guest     string        `name:"guest" required:"" help:"Name of this guest (letters, digits, '-', '_')."`
	Node      string        `name:"node" help:"Node the guest runs on, if known (informational)."`
	MaxProcs  int           `name:"max-procs" default:"1024" help:"Most processes running at once."`
	State     string        `name:"state" help:"Directory for the spool, output logs and lock (default .vmguard/agent/<guest>)."`
	Heartbeat time.Duration `name:"heartbeat" default:"1s" help:"Heartbeat interval."`
	LogMax    int64         `name:"log-max-bytes" default:"10485760" help:"Cap of each service's output log (rotated once to .1)."`
	Verbose   bool          `name:"verbose" short:"v" help:"Log debug messages."`
}

// Run serves run/stop/list/ping for the guest until SIGTERM, then stops its
// processes and delivers their exits.
func (c *agentCmd) Run(ctx context.Context, g *globals) error {
	if err := events.CheckName("--guest", c.Guest); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if c.Node != "" {
		if err := events.CheckName("--node", c.Node); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	}
	if c.MaxProcs < 1 {
		return fmt.Errorf("%w: --max-procs: %d, want at least 1", errUsage, c.MaxProcs)
	}
	if c.Heartbeat <= 0 {
		return fmt.Errorf("%w: --heartbeat: %s, want more than 0", errUsage, c.Heartbeat)
	}
	if c.LogMax < 1 {
		return fmt.Errorf("%w: --log-max-bytes: %d, want at least 1", errUsage, c.LogMax)
	}
	state := c.State
	if state == "" {
		state = filepath.Join(".vmguard", "agent", c.Guest)
	}
	level := slog.LevelInfo
	if c.Verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(g.Stderr, &slog.HandlerOptions{Level: level}))
	// The agent must start and keep its processes even while NATS is
	// away: it spools their events and delivers them once it is back.
	nc, err := nats.Connect(g.NATS,
		nats.Name("vmguard agent "+c.Guest),
		nats.Timeout(5*time.Second),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(250*time.Millisecond),
	)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", g.NATS, err)
	}
	defer nc.Close()
	a, err := guestagent.New(guestagent.Config{
		Guest: c.Guest, Node: c.Node, Conn: nc, StateDir: state, MaxProcs: c.MaxProcs,
		Heartbeat: c.Heartbeat, LogMaxBytes: c.LogMax, Version: version, Logger: logger,
	})
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return a.Run(ctx)
}
