package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/failover"
	"github.com/vmguard/vmguard/hostmanager"
	"github.com/vmguard/vmguard/internal/metrics"
)

var _ hostmanager.Metrics = metrics.NodeMetrics{}

// metricsFlag is the --metrics option every daemon has.
type metricsFlag struct {
	Metrics string `name:"metrics" placeholder:"ADDR" help:"Serve Prometheus metrics on http://ADDR/metrics (e.g. 127.0.0.1:9464; a port alone listens on every address)."`
}

// start returns the process's metrics and serves them on --metrics until
// ctx ends; without --metrics it returns nil and serves nothing.
func (f metricsFlag) start(ctx context.Context, logger *slog.Logger) (*metrics.Metrics, error) {
	if f.Metrics == "" {
		return nil, nil
	}
	m := metrics.New()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	addr, err := serveHTTP(ctx, f.Metrics, mux, logger)
	if err != nil {
		return nil, fmt.Errorf("%w: --metrics: %v", errUsage, err)
	}
	logger.Info("serving metrics", "url", "http://"+addr.String()+"/metrics")
	return m, nil
}

// logOptions returns the events.Open options that report to m (none if m is nil).
func logOptions(m *metrics.Metrics, opts ...events.Option) []events.Option {
	if m != nil {
		opts = append(opts, events.WithObserver(m))
	}
	return opts
}

// watchFailover adds the controller's own gauges: its lag and leadership.
func watchFailover(m *metrics.Metrics, l *events.Log, r *failover.Runner) {
	m.AddLag(l, "failover", func() uint64 { return r.Stats().Seq })
	m.AddGauge("failover_leader", "1 while this failover controller leads.", nil, func() float64 {
		if r.Leader() {
			return 1
		}
		return 0
	})
}

// serveHTTP listens on addr and serves h until ctx ends; it returns the
// address it listens on (the port chosen, for ":0").
func serveHTTP(ctx context.Context, addr string, h http.Handler, logger *slog.Logger) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("web listener stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx) // server-sent event streams end with ctx
		_ = srv.Close()
	}()
	return ln.Addr(), nil
}
