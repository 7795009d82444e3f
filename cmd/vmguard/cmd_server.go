package main

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd"
)

type serverCmd struct {
	Store    string        `name:"store" default:".vmguard/store" help:"Directory for JetStream's files."`
	Host     string        `name:"host" default:"127.0.0.1" help:"Address to listen on."`
	Port     int           `name:"port" default:"4222" help:"Client port."`
	HTTP     int           `name:"http" default:"0" help:"Monitoring port (0: off)."`
	Name     string        `name:"name" default:"vmguard" help:"Server name."`
	Config   string        `name:"config" short:"c" type:"existingfile" help:"A nats-server config file for anything beyond these flags; flags override it."`
	Interval bool          `name:"sync-interval" help:"Faster, less safe: flush to disk every --flush instead of fsyncing each event before acknowledging it. An acknowledged event can be lost on a power failure."`
	Flush    time.Duration `name:"flush" default:"0s" help:"Flush interval with --sync-interval (0: JetStream's default, two minutes)."`
	Replicas int           `name:"replicas" default:"1" help:"Replicas of the VMGUARD stream (clustered servers only)."`
	Quiet    bool          `name:"quiet" short:"q" help:"Do not print the server's own log."`
}

// Run starts the server, provisions the stream and waits for a signal.
func (c *serverCmd) Run(ctx context.Context, g *globals) error {
	s, err := natsd.Start(natsd.Config{
		StoreDir: c.Store, Host: c.Host, Port: c.Port, HTTPPort: c.HTTP, Name: c.Name,
		ConfigFile: c.Config, Interval: c.Interval, SyncInterval: c.Flush, Log: !c.Quiet,
	})
	if err != nil {
		return err
	}
	defer func() {
		s.Shutdown()
		s.WaitForShutdown()
	}()
	nc, err := nats.Connect(s.ClientURL(), nats.InProcessServer(s))
	if err != nil {
		return fmt.Errorf("connect to embedded server: %w", err)
	}
	defer nc.Close()
	js, err := newJetStream(nc)
	if err != nil {
		return err
	}
	if _, err := events.EnsureStream(ctx, js, c.Replicas); err != nil {
		return err
	}
	mode := "durable (fsync before every acknowledgement)"
	if c.Interval {
		mode = "interval (flush every " + c.Flush.String() + "; 0s = JetStream's 2m default)"
	}
	fmt.Fprintf(g.Stdout, "vmguard server %s listening on %s, store %s, stream %s ready, %s\n",
		version, s.ClientURL(), c.Store, events.StreamName, mode)
	<-ctx.Done()
	fmt.Fprintln(g.Stdout, "vmguard server: shutting down")
	return nil
}
