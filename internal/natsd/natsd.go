// Package natsd runs an embedded nats-server with JetStream for `vmguard
// server`, `vmguard up` and tests. It owns server options only; the stream
// itself is provisioned by events.EnsureStream.
package natsd

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config says how to run the embedded server.
type Config struct {
	// StoreDir is where JetStream keeps its files; required unless the
	// config file or DefaultStoreDir names one.
	StoreDir string
	// DefaultStoreDir is the store when neither StoreDir nor the config
	// file's jetstream {store_dir} names one.
	DefaultStoreDir string
	// Host to listen on; default 127.0.0.1.
	Host string
	// Port for clients; -1 picks a free one, 0 means 4222.
	Port int
	// HTTPPort for monitoring; 0 disables it.
	HTTPPort int
	// Name of the server; default the config file's server_name, else
	// "vmguard". Every member of a cluster needs a name of its own.
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
	// ClusterName, ClusterPort and Routes make the server a member of a
	// JetStream cluster listening for routes on ClusterPort (on Host),
	// routed to the other members' nats-route:// URLs. A config file's
	// cluster {} block does the same; these override it where set.
	ClusterName string
	ClusterPort int
	Routes      []string
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
		opts.StoreDir = c.DefaultStoreDir
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
	if c.ClusterPort != 0 {
		opts.Cluster.Host, opts.Cluster.Port = opts.Host, c.ClusterPort
	}
	if c.ClusterName != "" {
		opts.Cluster.Name = c.ClusterName
	}
	if len(c.Routes) > 0 {
		opts.Routes = server.RoutesFromStr(strings.Join(c.Routes, ","))
	}
	clustered := opts.Cluster.Port != 0
	switch {
	case c.Name != "":
		opts.ServerName = c.Name
	case opts.ServerName == "" && clustered:
		// Members that share a name refuse each other's routes.
		return nil, errors.New("server name: a cluster member needs a name of its own (--name, or server_name in the config)")
	case opts.ServerName == "":
		opts.ServerName = "vmguard"
	}
	if clustered && opts.Cluster.Name == "" {
		return nil, errors.New("cluster name: a JetStream cluster needs one (name in the config's cluster {} block), the same on every member")
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
