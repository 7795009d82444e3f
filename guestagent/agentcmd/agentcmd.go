// Package agentcmd is the guest agent's command line: its options and the
// code that runs an agent from them. Both `vmguard agent` (cmd/vmguard) and
// the slim guest binary `vmguard-agent` (cmd/vmguard-agent) use it, so the
// two take the same flags and behave the same. It must not import
// nats-server or anything else the slim binary does not need.
package agentcmd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/natsconn"
)

// Options are the agent's flags (kong tags; --nats is the caller's).
type Options struct {
	Guest     string        `name:"guest" required:"" help:"Name of this guest (letters, digits, '-', '_')."`
	Node      string        `name:"node" help:"Node the guest runs on at start (a hint: a host manager that controls the guest may name another node, which the agent follows once the log's placement confirms it). With it the agent fences: it runs processes only while it sees the node's lease renewed, and stops them all (reason fenced) when the lease lapses or NATS is unreachable for 0.6 of its ttl."`
	Fence     bool          `name:"fence" help:"Fence without --node: accept runs only once a host manager has named the node the guest runs on (confirmed by the log's placement) and its lease is seen. For a guest image that does not know where it boots."`
	MaxProcs  int           `name:"max-procs" default:"1024" help:"Most processes running at once."`
	State     string        `name:"state" help:"Directory for the spool, output logs and lock (default .vmguard/agent/<guest>)."`
	Heartbeat time.Duration `name:"heartbeat" default:"1s" help:"Heartbeat interval."`
	LogMax    int64         `name:"log-max-bytes" default:"10485760" help:"Cap of each service's output log (rotated once to .1)."`
	SickAfter time.Duration `name:"sick-after" default:"30s" help:"How long the agent goes on when it cannot record events (spool not writable, or the log refuses them while connected) before it withholds heartbeats, so that the host manager declares the guest lost, and refuses runs."`
	Verbose   bool          `name:"verbose" short:"v" help:"Log debug messages."`
	URLFile   string        `name:"nats-url-file" placeholder:"FILE" help:"Read the NATS URL from FILE (mode 0600) instead of --nats: a URL with a password on the command line shows in ps. The process driver starts agents this way."`

	// OnAgent, if set, is called with the agent before it runs (the
	// vmguard binary serves its metrics from it).
	OnAgent func(*guestagent.Agent) `kong:"-"`
}

// UsageError is an error in how the agent was called (exit code 2).
type UsageError struct{ Err error }

// Error implements error.
func (e *UsageError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *UsageError) Unwrap() error { return e.Err }

// Run connects to NATS with conn (its URL, or the one in --nats-url-file,
// and its credentials and TLS files) and serves run/stop/list/ping for the
// guest until ctx ends (SIGTERM), then stops its processes and delivers
// their exits. It logs to stderr and reports version. Errors in the options
// are *UsageError.
func (o *Options) Run(ctx context.Context, conn natsconn.Flags, stderr io.Writer, version string) error {
	if err := o.check(); err != nil {
		return &UsageError{err}
	}
	state := o.State
	if state == "" {
		state = filepath.Join(".vmguard", "agent", o.Guest)
	}
	level := slog.LevelInfo
	if o.Verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if o.URLFile != "" {
		u, err := natsconn.ReadURLFile(o.URLFile)
		if err != nil {
			return &UsageError{err}
		}
		conn.NATS = u
	}
	natsURL := conn.NATS
	copts, err := conn.Options()
	if err != nil {
		return &UsageError{err}
	}
	// The agent must start and keep its processes even while NATS is
	// away: it spools their events and delivers them once it is back.
	// Said at the first refusal, then at most every 30 s: it retries
	// four times a second.
	var lastSaid atomic.Int64
	authFailed := func(err error) {
		now := time.Now().UnixNano()
		if last := lastSaid.Load(); natsconn.IsAuthError(err) && (last == 0 || time.Duration(now-last) >= 30*time.Second) && lastSaid.CompareAndSwap(last, now) {
			logger.Error("NATS refused the agent's credentials: authorization failed; check the user and password in the URL, --creds, --nkey or the client certificate", "nats", natsconn.Redact(natsURL), "identity", conn.Identity(), "err", err)
		}
	}
	nc, err := nats.Connect(natsURL, append(copts,
		nats.Name("vmguard agent "+o.Guest),
		nats.Timeout(5*time.Second),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(250*time.Millisecond),
		// A server cut off from this guest (a partition drops packets, it
		// does not close the connection) is noticed in about 3 s, as the
		// host manager does, and the agent moves to another of the URLs:
		// with nats.go's default (2 min) its heartbeats would go nowhere
		// for minutes and the guest would be lost after guest_timeout.
		nats.PingInterval(time.Second),
		nats.MaxPingsOutstanding(3),
		// Replies to the agent come to inboxes of its own, so that its NATS
		// user need not (and must not) read every client's replies.
		nats.CustomInboxPrefix(guestagent.InboxPrefix(o.Guest)),
		// It retries for ever; a refused identity must not look like a
		// server that is away.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { authFailed(err) }),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { authFailed(err) }),
	)...)
	if err != nil {
		return natsconn.ConnectError(natsURL, conn.Identity(), err)
	}
	defer nc.Close()
	a, err := guestagent.New(guestagent.Config{
		Guest: o.Guest, Node: o.Node, Fence: o.Fence, Conn: nc, StateDir: state, MaxProcs: o.MaxProcs,
		Heartbeat: o.Heartbeat, LogMaxBytes: o.LogMax, Version: version, Logger: logger, SickAfter: o.SickAfter,
	})
	if err != nil {
		return &UsageError{err}
	}
	if o.OnAgent != nil {
		o.OnAgent(a)
	}
	return a.Run(ctx)
}

// check validates the options with messages that name the flag.
func (o *Options) check() error {
	if err := events.CheckName("--guest", o.Guest); err != nil {
		return err
	}
	if o.Node != "" {
		if err := events.CheckName("--node", o.Node); err != nil {
			return err
		}
	}
	if o.MaxProcs < 1 {
		return fmt.Errorf("--max-procs: %d, want at least 1", o.MaxProcs)
	}
	if o.Heartbeat <= 0 {
		return fmt.Errorf("--heartbeat: %s, want more than 0", o.Heartbeat)
	}
	if o.SickAfter <= 0 {
		return fmt.Errorf("--sick-after: %s, want more than 0", o.SickAfter)
	}
	if o.LogMax < 1 {
		return fmt.Errorf("--log-max-bytes: %d, want at least 1", o.LogMax)
	}
	return nil
}
