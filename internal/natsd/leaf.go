package natsd

import (
	"fmt"

	"github.com/nats-io/nats-server/v2/server"
)

// LeafConfig says how to run a host's leaf node (vmguard host --leaf):
// a nats-server without JetStream whose configuration (vmguard init's
// leaf-<node>/leaf.conf) holds its guests' accounts and its remotes to
// the hub.
type LeafConfig struct {
	// ConfigFile is the leaf's nats-server configuration (required).
	ConfigFile string
	// Host and Port, where set, override the file's listen address
	// (Port -1 picks a free one).
	Host string
	Port int
	// Log enables the server's own logging to stderr.
	Log bool
}

// StartLeaf runs the leaf node and waits until it accepts connections.
// Like Start it refuses a leaf that listens beyond loopback without
// authorization (ErrUnauthorized); it never has JetStream.
func StartLeaf(c LeafConfig) (*server.Server, error) {
	opts, err := server.ProcessConfigFile(c.ConfigFile)
	if err != nil {
		return nil, fmt.Errorf("read leaf config %s: %w", c.ConfigFile, err)
	}
	if c.Host != "" {
		opts.Host = c.Host
	}
	if c.Port != 0 {
		opts.Port = c.Port
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	opts.JetStream = false
	tuneDeadPeers(opts)
	opts.NoLog = !c.Log
	opts.NoSigs = true
	if err := CheckAuth(opts); err != nil {
		return nil, err
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("create leaf node: %w", err)
	}
	fl := start(s, c.Log)
	if err := waitReady(s, fl, "leaf node", opts); err != nil {
		return nil, err
	}
	return s, nil
}
