// Package natsd runs an embedded nats-server with JetStream for `vmguard
// server`, `vmguard up` and tests. It owns server options only; the stream
// itself is provisioned by events.EnsureStream.
package natsd

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config says how to run the embedded server.
type Config struct {
	// StoreDir is where JetStream keeps its files (required).
	StoreDir string
	// Host to listen on; default 127.0.0.1.
	Host string
	// Port for clients; -1 picks a free one, 0 means 4222.
	Port int
	// HTTPPort for monitoring; 0 disables it.
	HTTPPort int
	// Name of the server; default "vmguard".
	Name string
	// ConfigFile is a standard nats-server config file loaded first; the
	// fields above override it where set.
	ConfigFile string
	// Interval trades durability for speed: when false (the default) every
	// write is fsynced before it is acknowledged; when true JetStream
	// flushes every SyncInterval (its own default: two minutes), so an
	// acknowledged event can be lost on a power failure.
	Interval bool
	// SyncInterval is the flush interval in interval mode (0: JetStream's default).
	SyncInterval time.Duration
	// Log enables the server's own logging to stderr.
	Log bool
}

// Options builds nats-server options from c.
func (c Config) Options() (*server.Options, error) {
	opts := &server.Options{}
	if c.ConfigFile != "" {
		o, err := server.ProcessConfigFile(c.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("read nats-server config %s: %w", c.ConfigFile, err)
		}
		opts = o
	}
	if c.StoreDir != "" {
		opts.StoreDir = c.StoreDir
	}
	if opts.StoreDir == "" {
		return nil, errors.New("store dir: missing (use --store DIR)")
	}
	opts.JetStream = true
	if c.Host != "" {
		opts.Host = c.Host
	} else if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	switch {
	case c.Port != 0:
		opts.Port = c.Port
	case opts.Port == 0:
		opts.Port = 4222
	}
	if c.HTTPPort != 0 {
		opts.HTTPPort = c.HTTPPort
		if opts.HTTPHost == "" {
			opts.HTTPHost = opts.Host
		}
	}
	if c.Name != "" {
		opts.ServerName = c.Name
	} else if opts.ServerName == "" {
		opts.ServerName = "vmguard"
	}
	if c.Interval {
		opts.SyncAlways = false
		opts.SyncInterval = c.SyncInterval
	} else {
		opts.SyncAlways = true
	}
	opts.NoLog = !c.Log
	opts.NoSigs = true
	return opts, nil
}

// Start runs the server and waits until it accepts connections.
func Start(c Config) (*server.Server, error) {
	opts, err := c.Options()
	if err != nil {
		return nil, err
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("create nats server: %w", err)
	}
	if c.Log {
		s.ConfigureLogger()
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("nats server on %s:%d did not become ready in 30s", opts.Host, opts.Port)
	}
	return s, nil
}
