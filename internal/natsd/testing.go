package natsd

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// StartTest runs an embedded JetStream server on a free loopback port with
// its store in a test temp dir (or in dir, if given) and shuts it down when
// the test ends. Tests use interval mode unless they test durability.
func StartTest(t testing.TB, dir ...string) *server.Server {
	t.Helper()
	store := t.TempDir()
	if len(dir) > 0 {
		store = dir[0]
	}
	s, err := Start(Config{StoreDir: store, Port: -1, Interval: true})
	if err != nil {
		t.Fatalf("start nats server: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// StartTestConf runs an embedded JetStream server (interval mode) on a free
// loopback port with conf as its configuration file and its store, both in
// dir; it shuts the server down when the test ends.
func StartTestConf(t testing.TB, dir, conf string) *server.Server {
	t.Helper()
	file := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := Start(Config{StoreDir: filepath.Join(dir, "js"), Port: -1, Interval: true, ConfigFile: file})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}

// Connect opens a connection to s that is closed when the test ends.
func Connect(t testing.TB, s *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatalf("connect to %s: %v", s.ClientURL(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestCluster is a JetStream cluster of embedded servers on loopback, for
// tests. Its members keep their ports and stores, so a member that was shut
// down can be started again as itself.
type TestCluster struct {
	t       testing.TB
	mu      sync.Mutex
	cfgs    []Config
	servers []*server.Server // nil while a member is down
}

// StartCluster runs n embedded JetStream servers named n1..nN (cluster
// "vmguard-test", interval mode, routes to each other on loopback, each with
// its own store in a test temp dir), waits until they form the cluster (a
// meta leader that sees every member) and shuts them down when the test
// ends.
func StartCluster(t testing.TB, n int) *TestCluster {
	t.Helper()
	ports := freePorts(t, 2*n)
	c := &TestCluster{t: t, servers: make([]*server.Server, n)}
	var routes []string
	for i := range n {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[n+i]))
	}
	for i := range n {
		c.cfgs = append(c.cfgs, Config{
			StoreDir: t.TempDir(), Port: ports[i], Name: fmt.Sprintf("n%d", i+1), Interval: true,
			ClusterName: "vmguard-test", ClusterPort: ports[n+i],
			Routes: append(slices.Clone(routes[:i]), routes[i+1:]...),
		})
	}
	t.Cleanup(func() {
		for i := range n {
			c.Shutdown(i)
		}
	})
	// Start them together: each waits for the others before its JetStream
	// is ready.
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- c.start(i) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("start cluster: %v", err)
		}
	}
	c.WaitFormed(60 * time.Second)
	return c
}

func (c *TestCluster) start(i int) error {
	s, err := Start(c.cfgs[i])
	if err != nil {
		return fmt.Errorf("start %s: %w", c.cfgs[i].Name, err)
	}
	c.mu.Lock()
	c.servers[i] = s
	c.mu.Unlock()
	return nil
}

// freePorts returns n distinct loopback TCP ports that were free a moment ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		defer l.Close() // held until all are picked, so they differ
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// Size is the number of members, up or down.
func (c *TestCluster) Size() int { return len(c.cfgs) }

// Server returns member i (0-based), nil while it is down.
func (c *TestCluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[i]
}

// Name returns the server name of member i.
func (c *TestCluster) Name(i int) string { return c.cfgs[i].Name }

// URLs returns every member's client URL, comma-separated, for a client that
// fails over between them.
func (c *TestCluster) URLs() string {
	var urls []string
	for _, cfg := range c.cfgs {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", cfg.Port))
	}
	return strings.Join(urls, ",")
}

// Connect opens a connection to the whole cluster (every member's URL,
// reconnecting forever) that is closed when the test ends.
func (c *TestCluster) Connect(t testing.TB, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}, opts...)
	nc, err := nats.Connect(c.URLs(), opts...)
	if err != nil {
		t.Fatalf("connect to %s: %v", c.URLs(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Shutdown stops member i cleanly (Stop: the streams it leads are handed
// over first) and waits until it is down; a member that is down stays so.
func (c *TestCluster) Shutdown(i int) { c.Stop(i) }

// Stop is Shutdown, and returns Stop's counts.
func (c *TestCluster) Stop(i int) (led, moved int) {
	c.mu.Lock()
	s := c.servers[i]
	c.servers[i] = nil
	c.mu.Unlock()
	if s == nil {
		return 0, 0
	}
	return Stop(s, HandoverWait)
}

// Restart starts member i again with its ports and store.
func (c *TestCluster) Restart(i int) {
	c.t.Helper()
	if c.Server(i) != nil {
		c.t.Fatalf("restart %s: it is running", c.Name(i))
	}
	if err := c.start(i); err != nil {
		c.t.Fatalf("restart: %v", err)
	}
}

// StreamLeader returns the member that leads stream (account $G), or -1.
func (c *TestCluster) StreamLeader(stream string) int {
	for i := range c.cfgs {
		if s := c.Server(i); s != nil && s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i
		}
	}
	return -1
}

// Retry runs attempt until it returns nil, each try bounded by 5 s and all
// of them by d, and fails the test with the last error otherwise. A request
// to a cluster that has just formed (or lost a member) can go unanswered
// while the meta group settles; one bounded try would then fail a test
// that a second try passes.
func (c *TestCluster) Retry(d time.Duration, what string, attempt func(ctx context.Context) error) {
	c.t.Helper()
	var err error
	for deadline := time.Now().Add(d); ; time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = attempt(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s within %v: %v", what, d, err)
		}
	}
}

// MetaLeader returns the member that leads the JetStream meta group, or -1.
func (c *TestCluster) MetaLeader() int {
	for i := range c.cfgs {
		if s := c.Server(i); s != nil && s.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

// WaitFormed waits up to d until a meta leader sees every running member
// online and every running member is current with the meta group.
func (c *TestCluster) WaitFormed(d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for !c.formed() {
		if time.Now().After(deadline) {
			c.t.Fatalf("JetStream cluster did not form within %v", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *TestCluster) formed() bool {
	up := 0
	for i := range c.cfgs {
		s := c.Server(i)
		if s == nil {
			continue
		}
		up++
		if !s.JetStreamIsCurrent() {
			return false
		}
	}
	l := c.MetaLeader()
	if l < 0 {
		return false
	}
	s := c.Server(l)
	return s != nil && len(s.JetStreamClusterPeers()) >= up
}
