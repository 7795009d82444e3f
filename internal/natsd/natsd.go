// Package natsd runs an embedded nats-server with JetStream for `vmguard
// server`, `vmguard up` and tests. It owns server options only; the stream
// itself is provisioned by events.EnsureStream.
package natsd

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/vmguard/vmguard/internal/dirlock"
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
	// Insecure lets the server listen beyond loopback without
	// authorization; without it Start refuses (ErrUnauthorized). Loopback
	// needs no authorization.
	Insecure bool
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
	tuneDeadPeers(opts)
	if opts.JetStreamLimits.DefaultMaxConsumers == 0 {
		// nats-server allows 1,000 consumers on a stream unless told
		// otherwise; every host manager holds two on VMGUARD (its read
		// and its index of placements) and a third while it catches up,
		// and a consumer lost under load lingers until its inactive
		// threshold: 100 host managers reached the limit
		// (docs/bench/scale.md). -1: no default limit.
		opts.JetStreamLimits.DefaultMaxConsumers = -1
	}
	opts.NoLog = !c.Log
	opts.NoSigs = true
	return opts, nil
}

// Bounds on noticing a dead peer, where the config file sets none. A
// partition drops packets without closing connections, so only pings
// and write deadlines notice it; nats-server's defaults (a route pinged
// every 30 s, two pings outstanding; a client every 2 minutes; a write
// blocked for 10 s) keep a dead route or client for 1 to 4 minutes.
const (
	// RoutePing and RoutePingsOut close a route that answers no ping for
	// about 3 × 2 s = 6 s (routes are always pinged; a ping is ~10 bytes).
	RoutePing     = 2 * time.Second
	RoutePingsOut = 3
	// RouteWriteDeadline closes a route whose socket took no data for 3 s
	// (its buffers full: the peer is gone or hopelessly behind).
	RouteWriteDeadline = 3 * time.Second
	// ClientPing and ClientPingsOut close a client that answers no ping
	// for about 3 × 5 s = 15 s; a client that sent anything meanwhile is
	// not pinged. vmguard's daemons ping the server every second
	// themselves, so they notice first; this frees what a dead client held
	// (subscriptions, pull requests) on the server.
	ClientPing     = 5 * time.Second
	ClientPingsOut = 3
)

// tuneDeadPeers sets the bounds above where opts has none.
func tuneDeadPeers(opts *server.Options) {
	if opts.Cluster.PingInterval == 0 {
		opts.Cluster.PingInterval = RoutePing
	}
	if opts.Cluster.MaxPingsOut == 0 {
		opts.Cluster.MaxPingsOut = RoutePingsOut
	}
	if opts.Cluster.WriteDeadline == 0 {
		opts.Cluster.WriteDeadline = RouteWriteDeadline
	}
	if opts.PingInterval == 0 {
		opts.PingInterval = ClientPing
	}
	if opts.MaxPingsOut == 0 {
		opts.MaxPingsOut = ClientPingsOut
	}
}

// Start locks the store, runs the server and waits until it accepts
// connections. Unless c.Insecure, it refuses (ErrUnauthorized) a server
// that listens beyond loopback without authorization (CheckAuth). It fails at once, not after a timeout, when the store is in
// use by another process (naming it) or a port cannot be listened on. The
// store's lock is released when the server has shut down.
func Start(c Config) (*server.Server, error) {
	opts, err := c.Options()
	if err != nil {
		return nil, err
	}
	if !c.Insecure {
		if err := CheckAuth(opts); err != nil {
			return nil, err
		}
	}
	lock, err := lockStore(opts.StoreDir)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		lock.Release()
		return nil, fmt.Errorf("create nats server: %w", err)
	}
	fl := start(s, c.Log)
	go func() {
		s.WaitForShutdown()
		lock.Release()
	}()
	if err := waitReady(s, fl, "nats server", opts); err != nil {
		return nil, err
	}
	return s, nil
}

// start starts s logging to a fatalLogger, which waitReady watches, in
// front of the server's own log where log is set (else of none), and
// returns that logger.
func start(s *server.Server, log bool) *fatalLogger {
	var inner server.Logger
	if log {
		s.ConfigureLogger()
		inner = s.Logger()
	}
	fl := &fatalLogger{Logger: inner, fatal: make(chan string, 1)}
	s.SetLogger(fl, false, false)
	go s.Start()
	return fl
}

// waitReady waits up to 30 s for a started server to take connections; a
// fatal error it logs meanwhile, or the bound, shuts it down and is
// returned, named what.
func waitReady(s *server.Server, fl *fatalLogger, what string, opts *server.Options) error {
	ready := time.Now().Add(30 * time.Second)
	for !s.ReadyForConnections(50 * time.Millisecond) {
		select {
		case msg := <-fl.fatal:
			s.Shutdown()
			return fmt.Errorf("%s: %s", what, msg)
		default:
		}
		if time.Now().After(ready) {
			s.Shutdown()
			return fmt.Errorf("%s on %s:%d did not become ready in 30s", what, opts.Host, opts.Port)
		}
	}
	return nil
}

// lockStore locks the store dir. A lock held by this very process is a
// server shut down a moment ago whose lock is being released (tests restart
// servers on one store): it is waited for, up to two seconds.
func lockStore(dir string) (*dirlock.Lock, error) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		lock, err := dirlock.Acquire(dir, "vmguard server")
		var held *dirlock.HeldError
		if !errors.As(err, &held) || held.Holder.PID != os.Getpid() || time.Now().After(deadline) {
			return lock, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fatalLogger passes the server's log to Logger (none: dropped) but turns a
// fatal error, such as a port already in use, into a message for Start
// instead of an exit of the whole process (nats-server's own logger exits;
// without one the server just never becomes ready).
type fatalLogger struct {
	server.Logger // nil: log nothing
	fatal         chan string
}

func (l *fatalLogger) Noticef(format string, v ...any) {
	if l.Logger != nil {
		l.Logger.Noticef(format, v...)
	}
}

func (l *fatalLogger) Warnf(format string, v ...any) {
	if l.Logger != nil {
		l.Logger.Warnf(format, v...)
	}
}

func (l *fatalLogger) Errorf(format string, v ...any) {
	if l.Logger != nil {
		l.Logger.Errorf(format, v...)
	}
}

func (l *fatalLogger) Debugf(format string, v ...any) {
	if l.Logger != nil {
		l.Logger.Debugf(format, v...)
	}
}

func (l *fatalLogger) Tracef(format string, v ...any) {
	if l.Logger != nil {
		l.Logger.Tracef(format, v...)
	}
}

func (l *fatalLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if l.Logger != nil {
		l.Logger.Errorf("%s", msg)
	}
	select {
	case l.fatal <- msg:
	default:
	}
}
