package main

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/metrics"
)

// newLogger returns a text logger on w, at debug level when verbose.
func newLogger(w io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// daemonSpec says how a long-running command (vmguard host, vmguard
// failover) starts: its connection's name and extra options, its metrics
// flag, and what it must do with the log before it may run.
type daemonSpec struct {
	name    string
	metrics metricsFlag
	// wait bounds the wait for a JetStream cluster still forming
	// (--cluster-wait); what names the wait in its log lines.
	wait time.Duration
	what string
	// connOpts are added to the reconnect-for-ever options.
	connOpts []nats.Option
	// ready, if set, runs after the log is open, inside the same wait
	// for the cluster (e.g. the host's check of its node lease).
	ready func(context.Context, *events.Log) error
}

// daemon is what a started daemon holds: its connection, metrics (nil
// without --metrics) and log.
type daemon struct {
	nc      *nats.Conn
	metrics *metrics.Metrics
	log     *events.Log
}

// close closes the daemon's connection.
func (d *daemon) close() { d.nc.Close() }

// startDaemon is the start every daemon shares: connect with reconnects for
// ever, serve the metrics, and open the log (observed by the metrics) once
// the cluster takes requests, waiting up to spec.wait for one that is still
// forming (a reboot of every machine) instead of exiting. The caller closes
// the daemon when it returns without an error.
func startDaemon(ctx context.Context, g *globals, logger *slog.Logger, spec daemonSpec) (*daemon, error) {
	opts := append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond)}, spec.connOpts...)
	nc, err := g.Flags.Connect(spec.name, opts...)
	if err != nil {
		return nil, err
	}
	d := &daemon{nc: nc}
	if d.metrics, err = spec.metrics.start(ctx, logger); err != nil {
		nc.Close()
		return nil, err
	}
	if err := untilCluster(ctx, logger, spec.wait, spec.what, func(actx context.Context) error {
		if d.log == nil {
			l, err := events.Open(actx, nc, logOptions(d.metrics, events.WithLogger(logger))...)
			if err != nil {
				return err
			}
			d.log = l
		}
		if spec.ready == nil {
			return nil
		}
		// Not actx: what ready waits for may take longer than one
		// attempt's bound; its reads have bounds of their own.
		return spec.ready(ctx, d.log)
	}); err != nil {
		nc.Close()
		return nil, err
	}
	if d.metrics != nil {
		d.metrics.WatchLog(d.log)
	}
	return d, nil
}
