package main

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
)

// connect dials the NATS server named by --nats with a clear error.
func connect(g *globals, name string) (*nats.Conn, error) {
	return g.Flags.Connect(name, nats.MaxReconnects(-1))
}

// openLog connects and opens the event log.
func openLog(ctx context.Context, g *globals, name string) (*events.Log, func(), error) {
	nc, err := connect(g, name)
	if err != nil {
		return nil, nil, err
	}
	l, err := events.Open(ctx, nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return l, nc.Close, nil
}

func newJetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("open jetstream: %w", err)
	}
	return js, nil
}

// operatorReadWait bounds how long an operator's read of the log (status,
// events, verify) waits for a cluster that cannot serve it yet: a meta
// leader election after a partition heals takes seconds.
const operatorReadWait = 30 * time.Second
