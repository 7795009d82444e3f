package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/failover"
	"github.com/vmguard/vmguard/internal/guestgate"
	"github.com/vmguard/vmguard/internal/lease"
	"github.com/vmguard/vmguard/internal/natsd"
)

type serverCmd struct {
	Store    string        `name:"store" help:"Directory for JetStream's files (default: the config's jetstream store_dir, else .vmguard/nats, the store of vmguard up, so a server started after up sees its log)."`
	Host     string        `name:"host" help:"Address to listen on (default: the config's host, else 127.0.0.1)."`
	Port     int           `name:"port" help:"Client port (default: the config's port, else 4222)."`
	HTTP     int           `name:"http" default:"0" help:"Monitoring port (0: the config's, else off)."`
	Name     string        `name:"name" help:"Server name, unique in a cluster (default: the config's server_name, else vmguard)."`
	Config   string        `name:"config" short:"c" type:"existingfile" help:"A nats-server config file for anything beyond these flags (a cluster {} block with routes, users); flags given override it."`
	Interval bool          `name:"sync-interval" help:"Faster, less safe: flush to disk every --flush instead of fsyncing each event before acknowledging it. An acknowledged event can be lost on a power failure."`
	Flush    time.Duration `name:"flush" default:"0s" help:"Flush interval with --sync-interval (0: JetStream's default, two minutes)."`
	Replicas int           `name:"replicas" default:"0" help:"Replicas of the VMGUARD stream and of vmguard's key-value buckets: 3 (or 5) on a cluster of that many servers. 0 keeps what the stream has, 1 for a new one."`
	Wait     time.Duration `name:"cluster-wait" default:"2m" help:"How long to wait for the JetStream cluster to form (a meta leader, and --replicas servers up) before giving up on the stream."`
	Quiet    bool          `name:"quiet" short:"q" help:"Do not print the server's own log."`
	Insecure bool          `name:"insecure" help:"Listen beyond loopback (--host 0.0.0.0) without authorization: any client that reaches the port may run commands in every guest. Without it such a server refuses to start (exit 2); give users or nkeys with -c instead (docs/security.md)."`

	metricsFlag `embed:""`
}

// Run starts the server, provisions the stream and waits for a signal.
func (c *serverCmd) Run(ctx context.Context, g *globals) error {
	if c.Replicas < 0 || c.Replicas > 5 {
		return fmt.Errorf("%w: --replicas %d: want 1 to 5 (0: keep the stream's)", errUsage, c.Replicas)
	}
	cfg := natsd.Config{
		StoreDir: c.Store, DefaultStoreDir: filepath.Join(".vmguard", "nats"), Host: c.Host, Port: c.Port, HTTPPort: c.HTTP, Name: c.Name,
		ConfigFile: c.Config, Interval: c.Interval, SyncInterval: c.Flush, Log: !c.Quiet, Insecure: c.Insecure,
	}
	s, err := natsd.Start(cfg)
	if errors.Is(err, natsd.ErrUnauthorized) {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if err != nil {
		return err
	}
	defer func() {
		// A member hands over the streams it leads before it goes, so that
		// the lease bucket is not leaderless for a raft election timeout.
		if led, moved := natsd.Stop(s, natsd.HandoverWait); led > 0 {
			fmt.Fprintf(g.Stdout, "handed over the leadership of %d of the %d streams this member led\n", moved, led)
		}
	}()
	// In process: no network, so no TLS (the server allows that for
	// in-process connections); ClientURL says tls:// when the server has TLS.
	nc, err := nats.Connect("nats://"+strings.TrimPrefix(strings.TrimPrefix(s.ClientURL(), "tls://"), "nats://"), nats.InProcessServer(s))
	if err != nil {
		return fmt.Errorf("connect to embedded server: %w", err)
	}
	defer nc.Close()
	js, err := newJetStream(nc)
	if err != nil {
		return err
	}
	replicas, err := provision(ctx, js, c.Replicas, c.Wait, g.Stdout)
	if err != nil {
		return err
	}
	where := ""
	if s.JetStreamIsClustered() {
		where = fmt.Sprintf(" (cluster member %s)", s.Name())
	}
	store := s.JetStreamConfig().StoreDir
	if opts, err := cfg.Options(); err == nil && natsd.CheckAuth(opts) != nil {
		// Only --insecure gets here (natsd.Start refuses otherwise).
		fmt.Fprintf(g.Stderr, "vmguard server: WARNING: INSECURE (--insecure): listening on %s with no authorization: any client that reaches it can run commands in every guest, append any event and fence every node\n", s.ClientURL())
	}
	logger := slog.New(slog.NewTextHandler(g.Stderr, nil))
	m, err := c.start(ctx, logger)
	if err != nil {
		return err
	}
	// The gate of guests in accounts of their own (vmguard init): their
	// events reach the log only through it.
	gate, err := guestgate.New(guestgate.Config{Conn: nc, Logger: logger})
	if err != nil {
		return err
	}
	gctx, stopGate := context.WithCancel(ctx)
	gateDone := make(chan error, 1)
	go func() { gateDone <- gate.Run(gctx) }()
	defer func() { stopGate(); <-gateDone }()
	if m != nil {
		l, err := events.Open(ctx, nc)
		if err != nil {
			return err
		}
		m.WatchLog(l)
	}
	fmt.Fprintf(g.Stdout, "vmguard server %s listening on %s%s, store %s, stream %s ready (R%d), %s\n",
		version, s.ClientURL(), where, store, events.StreamName, replicas, syncMode(s))
	ready()
	<-ctx.Done()
	fmt.Fprintln(g.Stdout, "vmguard server: shutting down")
	return nil
}

// syncMode says how the running server writes its store, read from its
// effective JetStream configuration rather than from the flags that asked
// for it.
func syncMode(s *server.Server) string {
	js := s.JetStreamConfig()
	if js == nil {
		return "no JetStream"
	}
	if js.SyncAlways {
		return "durable (fsync before every acknowledgement)"
	}
	return "interval (flush every " + js.SyncInterval.String() + "; an acknowledged event can be lost on a power failure)"
}

// provision creates or updates the VMGUARD stream with replicas replicas
// (0: the stream's count, 1 for a new stream) and brings the replica count
// of vmguard's existing buckets in line with it; it returns the count. A
// JetStream cluster refuses both until it has a meta leader (a majority of
// its servers routed to each other) and, for R3, three servers up: it
// retries for up to wait, saying what it waits for.
func provision(ctx context.Context, js jetstream.JetStream, replicas int, wait time.Duration, out io.Writer) (int, error) {
	deadline := time.Now().Add(wait)
	var said string
	for {
		n, err := provisionOnce(ctx, js, replicas)
		if err == nil {
			if said != "" {
				fmt.Fprintf(out, "vmguard server: JetStream cluster ready, stream %s provisioned\n", events.StreamName)
			}
			return n, nil
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("provision stream %s: %w", events.StreamName, ctx.Err())
		}
		if !transient(err) {
			if isAPIError(err, 10074) { // replicas > 1 not supported in non-clustered mode
				return 0, fmt.Errorf("%w: --replicas %d needs a JetStream cluster (a cluster {} block with routes in -c nats.conf; see examples/nats-cluster)", err, replicas)
			}
			return 0, err
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%w: the JetStream cluster did not become ready in --cluster-wait %v: it needs a majority of its servers up and routed to each other to elect a meta leader, and --replicas %d servers up for the stream; check that every server runs, has its own --name and the same cluster name, and that the routes reach each other", err, wait, max(replicas, 1))
		}
		waitAgain(ctx, err, &said, func(reason string) {
			fmt.Fprintf(out, "vmguard server: waiting for the JetStream cluster (up to %v): %s\n", time.Until(deadline).Round(time.Second), reason)
		})
	}
}

// provisionOnce is one attempt of provision, each request bounded so that
// an unanswered one (no meta leader yet) is tried again.
func provisionOnce(ctx context.Context, js jetstream.JetStream, replicas int) (int, error) {
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if replicas == 0 {
		n, err := events.StreamReplicas(actx, js)
		if err != nil {
			return 0, err
		}
		replicas = n
	}
	if _, err := events.EnsureStream(actx, js, replicas); err != nil {
		return 0, err
	}
	// vmguard's key-value buckets beside the log follow its replica count.
	for _, b := range []string{lease.Bucket, failover.ElectionBucket, failover.SnapshotBucket} {
		s, err := js.Stream(actx, "KV_"+b)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue // created with the right count by whoever needs it first
		}
		if err != nil {
			return 0, fmt.Errorf("read bucket %s: %w", b, err)
		}
		cfg := s.CachedInfo().Config
		if cfg.Replicas == replicas {
			continue
		}
		cfg.Replicas = replicas
		if _, err := js.UpdateStream(actx, cfg); err != nil {
			return 0, fmt.Errorf("set replicas of bucket %s to %d: %w", b, replicas, err)
		}
	}
	return replicas, nil
}

// transient reports whether waiting may cure err (events.Transient).
func transient(err error) bool { return events.Transient(err) }

// waitReason says what provision waits for, given its last error.
func waitReason(err error) string {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) {
		return "no answer from JetStream: no meta leader yet (a majority of the cluster's servers must be up and routed to each other)"
	}
	return err.Error()
}

func isAPIError(err error, code jetstream.ErrorCode) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == code
}
