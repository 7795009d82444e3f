package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/hostmanager"
	"github.com/vmguard/vmguard/internal/dirlock"
)

type hostCmd struct {
	Node            string        `name:"node" short:"n" required:"" help:"Name of this node, as in the config's nodes: list."`
	State           string        `name:"state" help:"Directory for this node's local files; process-driver guests keep their agent state, pid file and log under <state>/guests (default .vmguard/host/<node>)."`
	AgentBin        string        `name:"agent-bin" placeholder:"PATH" help:"vmguard binary the process driver runs as 'vmguard agent' (default: this binary)."`
	HaltOnExit      bool          `name:"halt-on-exit" help:"On SIGTERM/Ctrl-C halt this node's packages (reason node_shutdown, auto_run stays on) and release the node lease before exiting. Without it the guests keep running: a restarted host manager takes them over, else the lease lapses and they fence themselves."`
	ShutdownTimeout time.Duration `name:"shutdown-timeout" default:"1m" help:"Bound of the halt of --halt-on-exit."`
	Verbose         bool          `name:"verbose" short:"v" help:"Log debug messages (every decision and action)."`
}

// Help is shown by `vmguard host --help`.
func (c *hostCmd) Help() string {
	return `The host manager of one node (Serviceguard's cmappmgr and hpvmsg_mon):
it starts the packages placed on this node (guest first, through its driver,
then each service through the guest agent), restarts services within their
restart policy, watches guest heartbeats (guest.lost after guest_timeout),
and halts packages when asked, moved or failed. It decides only from the
event log, appending each decision with an expected-sequence check, so it
can be killed (even with kill -9) and restarted at any time: the next
instance finishes what was decided, starting nothing twice.

It holds the node's lease (key <node> in the KV bucket vmguard_leases, TTL =
node_timeout) and renews it every node_timeout/4; if it cannot, it stops
its guests at once (self-fencing) and records node.fenced when it can
write again. The configuration in force comes from the log (vmguard apply).

Example:
  vmguard apply -f examples/demo.yaml
  vmguard host --node node1 --nats nats://127.0.0.1:4222`
}

// Run runs the host manager until SIGTERM or Ctrl-C.
func (c *hostCmd) Run(ctx context.Context, g *globals) error {
	if err := events.CheckName("--node", c.Node); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("%w: --shutdown-timeout: %s, want more than 0", errUsage, c.ShutdownTimeout)
	}
	state := c.State
	if state == "" {
		state = filepath.Join(".vmguard", "host", c.Node)
	}
	lock, err := dirlock.Acquire(state, "vmguard host --node "+c.Node)
	if err != nil {
		return fmt.Errorf("%w: state: %v", errUsage, err)
	}
	defer lock.Release()
	level := slog.LevelInfo
	if c.Verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(g.Stderr, &slog.HandlerOptions{Level: level}))
	nc, err := nats.Connect(g.NATS,
		nats.Name("vmguard host "+c.Node),
		nats.Timeout(5*time.Second),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		// Notice a dead connection within seconds (the default is minutes):
		// the guest monitor must not count heartbeats it cannot see.
		nats.PingInterval(time.Second),
		nats.MaxPingsOutstanding(3),
	)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w (is `vmguard server` or `vmguard up` running? set --nats or $NATS_URL)", g.NATS, err)
	}
	defer nc.Close()
	l, err := events.Open(ctx, nc, events.WithLogger(logger))
	if err != nil {
		return err
	}
	r, err := hostmanager.NewRunner(hostmanager.Config{
		Node: c.Node, Log: l, Logger: logger, StateDir: state, AgentBin: c.AgentBin, NATSURL: g.NATS,
		HaltOnExit: c.HaltOnExit, ShutdownTimeout: c.ShutdownTimeout, Version: version,
	})
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	logger.Info("host manager starting", "node", c.Node, "nats", g.NATS, "state", state)
	return r.Run(ctx)
}
