package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/hostmanager"
	"github.com/vmguard/vmguard/internal/dirlock"
	"github.com/vmguard/vmguard/internal/guestgate"
	"github.com/vmguard/vmguard/internal/lease"
	"github.com/vmguard/vmguard/internal/natsconn"
	"github.com/vmguard/vmguard/internal/natsd"
	"github.com/vmguard/vmguard/internal/sdnotify"
)

type hostCmd struct {
	Node            string        `name:"node" short:"n" required:"" help:"Name of this node, as in the config's nodes: list."`
	State           string        `name:"state" help:"Directory for this node's local files; process-driver guests keep their agent state, pid file and log under <state>/guests (default .vmguard/host/<node>)."`
	AgentBin        string        `name:"agent-bin" placeholder:"PATH" help:"vmguard binary the process driver runs as 'vmguard agent' (default: this binary)."`
	HaltOnExit      bool          `name:"halt-on-exit" help:"On SIGTERM/Ctrl-C halt this node's packages (reason node_shutdown, auto_run stays on), record node.halted (reason host_shutdown), disarm the node guard and release the node lease before exiting. Without it the guests keep running: a restarted host manager takes them over, else the node guard stops them."`
	ShutdownTimeout time.Duration `name:"shutdown-timeout" default:"1m" help:"Bound of the halt of --halt-on-exit."`
	Verbose         bool          `name:"verbose" short:"v" help:"Log debug messages (every decision and action)."`
	Takeover        bool          `name:"takeover" help:"Take the node's lease even though another host manager still renews it (it steps down; this one adopts the guests). Recorded as node.taken_over with --by and --reason. Without it a live holder is refused."`
	By              string        `name:"by" help:"Who asks for --takeover (default: the current user)."`
	Reason          string        `name:"reason" help:"Why, with --takeover; recorded."`
	NoGuard         bool          `name:"no-guard" help:"Do not start or pet a node guard (vmguard guard). Without it nothing stops the guests of a host manager that died or hangs before the controller places them elsewhere."`
	Escalate        string        `name:"escalate" placeholder:"COMMAND" help:"The node guard's escalation after it stopped the guests, e.g. 'systemctl reboot --force' (see vmguard guard --help)."`
	metricsFlag     `embed:""`
	Leaf            string        `name:"leaf" env:"VMGUARD_LEAF" type:"existingfile" placeholder:"leaf.conf" help:"Run this host's leaf node for its guests from this config (vmguard init --leaf writes leaf-<node>/leaf.conf): the guests' agents connect here with their own identities, valid nowhere else; their requests and heartbeats stay on this host, and only their checked events (through this host's gate) and their JetStream reads reach the server (docs/security.md)."`
	LeafListen      string        `name:"leaf-listen" placeholder:"HOST:PORT" help:"Where the leaf node listens for guests (default: the leaf config's host and port)."`
	ClusterWait     time.Duration `name:"cluster-wait" default:"2m" help:"How long to wait, at start, for a JetStream cluster that is still forming or out of reach (no meta leader yet, the stream or the lease bucket electing a leader, this host cut off from the majority): to open the log and read the lease, then again to replay the log, before exiting."`
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
node_timeout) and renews it every node_timeout/4; if it cannot for 0.6 of
node_timeout, it stops its guests (self-fencing, before the key expires)
and records node.fenced when it can write again. The configuration in force comes from the log (vmguard apply).

A node has one host manager. One that starts while another still renews the
node's lease is refused (exit 2, naming the holder's host, pid and since
when) and changes nothing; a holder that has stopped renewing is gone, and
is replaced after at most 1.5 renewal intervals (node_timeout * 3/8), before
the guests fence themselves. --takeover replaces a live holder on purpose
(say, one that is hung but still renews): recorded as node.taken_over.

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
	logger := newLogger(g.Stderr, c.Verbose)
	// The node lease on a connection of its own: a guest flooding its
	// subjects fills the log's connection with junk the follower reads and
	// skips, and a renewal must not wait behind it.
	leaseNC, err := g.Flags.Connect("vmguard host "+c.Node+" lease",
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.PingInterval(time.Second),
		nats.MaxPingsOutstanding(3),
	)
	if err != nil {
		return err
	}
	defer leaseNC.Close()
	// A host manager started with the servers (a reboot of every machine)
	// waits for the cluster to form instead of exiting.
	d, err := startDaemon(ctx, g, logger, daemonSpec{
		name: "vmguard host " + c.Node, metrics: c.metricsFlag, wait: c.ClusterWait, what: "open the log and read the node lease",
		connOpts: []nats.Option{
			// Notice a dead connection within seconds (the default is
			// minutes): the guest monitor must not count heartbeats it
			// cannot see.
			nats.PingInterval(time.Second),
			nats.MaxPingsOutstanding(3),
		},
		ready: c.checkLease,
	})
	if err != nil {
		return err
	}
	defer d.close()
	m, l := d.metrics, d.log
	var guestNC *nats.Conn
	if c.Leaf != "" {
		leafNC, stop, err := c.startLeaf(ctx, g, logger, l.Conn())
		if err != nil {
			return err
		}
		defer stop()
		guestNC = leafNC
	}
	var hm hostmanager.Metrics
	if m != nil {
		hm = m.Node(c.Node)
	}
	r, err := hostmanager.NewRunner(hostmanager.Config{
		Node: c.Node, Log: l, LeaseConn: leaseNC, GuestConn: guestNC, Logger: logger, StateDir: state, AgentBin: c.AgentBin, NATSURL: g.NATS, AgentArgs: g.Flags.Args(),
		HaltOnExit: c.HaltOnExit, ShutdownTimeout: c.ShutdownTimeout, ReplayWait: c.ClusterWait, Version: version,
		Guard: !c.NoGuard, GuardArgs: guardArgs(c.Escalate), Metrics: hostHealth{m: hm, dog: sdnotify.NewWatchdog()},
	})
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if m != nil {
		// It reads only what concerns its node: its lag is what its own
		// consumer holds behind the last event it read.
		m.AddPending("host", r.Lag)
	}
	logger.Info("host manager starting", "node", c.Node, "nats", natsconn.Redact(g.NATS), "state", state)
	ready()
	return r.Run(ctx)
}

// startLeaf runs the host's leaf node (--leaf), connects to it in process
// (its HOST account) and runs the host's guest gate, which forwards what
// passes to the hub's gate over hub. stop ends all three.
func (c *hostCmd) startLeaf(ctx context.Context, g *globals, logger *slog.Logger, hub *nats.Conn) (*nats.Conn, func(), error) {
	lc := natsd.LeafConfig{ConfigFile: c.Leaf, Log: c.Verbose}
	if c.LeafListen != "" {
		host, port, err := net.SplitHostPort(c.LeafListen)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: --leaf-listen %s: %v", errUsage, c.LeafListen, err)
		}
		lc.Host = host
		if lc.Port, err = strconv.Atoi(port); err != nil {
			return nil, nil, fmt.Errorf("%w: --leaf-listen %s: port %q: %v", errUsage, c.LeafListen, port, err)
		}
	}
	s, err := natsd.StartLeaf(lc)
	if errors.Is(err, natsd.ErrUnauthorized) {
		return nil, nil, fmt.Errorf("%w: --leaf %s: %w", errUsage, c.Leaf, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("--leaf %s: %w", c.Leaf, err)
	}
	nc, err := nats.Connect("nats://"+strings.TrimPrefix(strings.TrimPrefix(s.ClientURL(), "tls://"), "nats://"), nats.InProcessServer(s))
	if err != nil {
		s.Shutdown()
		return nil, nil, fmt.Errorf("connect to the leaf node: %w", err)
	}
	gate, err := guestgate.New(guestgate.Config{Conn: nc, Forward: hub, Logger: logger.With("gate", "leaf")})
	if err != nil {
		nc.Close()
		s.Shutdown()
		return nil, nil, err
	}
	gctx, stopGate := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- gate.Run(gctx) }()
	logger.Info("leaf node for guests listening", "node", c.Node, "url", s.ClientURL(), "config", c.Leaf)
	return nc, func() {
		stopGate()
		<-done
		nc.Close()
		s.Shutdown()
		s.WaitForShutdown()
	}, nil
}

// guardArgs are the extra `vmguard guard` arguments of the host's flags.
func guardArgs(escalate string) []string {
	if escalate == "" {
		return nil
	}
	return []string{"--escalate", escalate}
}

// checkLease refuses to start while another host manager of this node holds
// its lease and renews it, unless --takeover, which it records. A holder
// that stops renewing is gone: its key is not renewed within 1.5 renewal
// intervals of its last write, and this one may take the node.
func (c *hostCmd) checkLease(ctx context.Context, l *events.Log) error {
	kv, err := l.OpenBucket(ctx, lease.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	get := func() (jetstream.KeyValueEntry, error) {
		gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return kv.Get(gctx, c.Node)
	}
	e, err := get()
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the lease of node %s: %w", c.Node, err)
	}
	v, err := lease.Decode(e.Value())
	if err != nil || v.TTL() <= 0 {
		return nil // not a live holder's value; the host manager overwrites it
	}
	if !c.Takeover {
		every := lease.RenewEvery(v.TTL())
		wait := lease.TakeoverWait(v.TTL())
		now := time.Now()
		deadline := e.Created().Add(wait)
		// Clamped: a skewed clock neither ends the watch at once nor stretches it.
		if lo := now.Add(every / 2); deadline.Before(lo) {
			deadline = lo
		}
		if hi := now.Add(wait); deadline.After(hi) {
			deadline = hi
		}
		for time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
			cur, err := get()
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return nil // released or expired
			}
			if err == nil && cur.Revision() != e.Revision() {
				if nv, derr := lease.Decode(cur.Value()); derr == nil {
					v = nv
				}
				return fmt.Errorf("%w: node %s is held by a running host manager (%s); stop it first, or start this one with --takeover --reason WHY",
					errUsage, c.Node, v.Who())
			}
		}
		return nil // not renewed: its holder is gone
	}
	by := c.By
	if by == "" {
		by = currentUser()
	}
	host, _ := os.Hostname()
	ev := events.New(events.HostSource(c.Node), c.Node, events.NodeTakenOver{
		Holder: events.Clip(v.Who(), events.MaxBy), NewHolder: fmt.Sprintf("pid %d on %s", os.Getpid(), events.Clip(host, 128)),
		By: events.Clip(by, events.MaxBy), Reason: events.Clip(c.Reason, events.MaxReason),
	})
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := l.Append(actx, ev); err != nil {
		return fmt.Errorf("record the takeover of node %s: %w", c.Node, err)
	}
	fmt.Fprintf(os.Stderr, "vmguard host: taking over node %s from %s\n", c.Node, v.Who())
	return nil
}
