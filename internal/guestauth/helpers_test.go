package guestauth_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/guestauth"
	"github.com/vmguard/vmguard/internal/lease"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// Test users: an admin with full rights (what hosts and the failover
// controller use) and restricted guests.
const (
	adminUser = "admin"
	adminPass = "admin-secret"
	leaseTTL  = time.Second
)

// violations collects the server's permission violation log lines.
type violations struct {
	mu    sync.Mutex
	lines []string
}

func (v *violations) add(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	if !strings.Contains(line, "Violation") {
		return
	}
	v.mu.Lock()
	v.lines = append(v.lines, line)
	v.mu.Unlock()
}

// Noticef, Warnf, Fatalf, Errorf, Debugf and Tracef implement server.Logger.
func (v *violations) Noticef(format string, args ...any) { v.add(format, args...) }
func (v *violations) Warnf(format string, args ...any)   { v.add(format, args...) }
func (v *violations) Fatalf(format string, args ...any)  { v.add(format, args...) }
func (v *violations) Errorf(format string, args ...any)  { v.add(format, args...) }
func (v *violations) Debugf(format string, args ...any)  {}
func (v *violations) Tracef(format string, args ...any)  {}

// all returns the violations logged so far.
func (v *violations) all() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.lines...)
}

// since returns the violations logged after the first n.
func (v *violations) since(n int) []string { return v.all()[n:] }

// testServer is an embedded JetStream server with an admin and the given
// guests as users, the VMGUARD stream and the lease bucket provisioned by
// the admin.
type testServer struct {
	*server.Server
	viol  *violations
	admin *nats.Conn
	log   *events.Log
	kv    jetstream.KeyValue
}

func startServer(t testing.TB, guests ...guestauth.User) *testServer {
	t.Helper()
	users := append([]guestauth.User{{Name: adminUser, Password: adminPass}}, guests...)
	opts := &server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true, Users: guestauth.ServerUsers(users...),
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("create server: %v", err)
	}
	v := &violations{}
	s.SetLogger(v, false, false)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready in 10s")
	}
	t.Cleanup(s.Shutdown)
	ts := &testServer{Server: s, viol: v}
	ts.admin = connect(t, s, adminUser, adminPass)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ts.log, err = events.Open(ctx, ts.admin); err != nil {
		t.Fatal(err)
	}
	if ts.kv, err = lease.Ensure(ctx, ts.log.JetStream(), leaseTTL); err != nil {
		t.Fatal(err)
	}
	return ts
}

// connect opens a connection as user that is closed when the test ends.
func connect(t testing.TB, s *server.Server, user, pass string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	opts = append([]nats.Option{nats.UserInfo(user, pass), nats.MaxReconnects(-1),
		nats.ReconnectWait(20 * time.Millisecond)}, opts...)
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// guestUser returns the user of guest g with password "<name>-secret".
func guestUser(t testing.TB, g guestauth.Guest) guestauth.User {
	t.Helper()
	p, err := guestauth.For(g)
	if err != nil {
		t.Fatal(err)
	}
	return guestauth.User{Name: g.Name, Password: g.Name + "-secret", Permissions: &p}
}

// renew puts node's lease value as its host manager would.
func (ts *testServer) renew(t testing.TB, node string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v := lease.Value{Node: node, Holder: "test", Renewed: time.Now(), TTLMS: leaseTTL.Milliseconds()}
	if _, err := ts.kv.Put(ctx, node, v.Encode()); err != nil {
		t.Errorf("renew lease %s: %v", node, err)
	}
}

// keepRenewing renews node's lease every lease.RenewEvery until the returned
// function is called.
func (ts *testServer) keepRenewing(t testing.TB, node string) (stop func()) {
	t.Helper()
	ts.renew(t, node)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(lease.RenewEvery(leaseTTL))
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				ts.renew(t, node)
			}
		}
	})
	var once sync.Once
	stop = func() { once.Do(func() { close(done); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// lastEvent returns the last event on subject, if any.
func (ts *testServer) lastEvent(t testing.TB, subject string) (events.Event, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, ok, err := ts.log.Last(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	return e, ok
}

// lastSeq returns the log's last sequence.
func (ts *testServer) lastSeq(t testing.TB) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	seq, err := ts.log.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// runningAgent is an agent running in-process as its guest's user.
type runningAgent struct {
	client *guestagent.Client
	conn   *nats.Conn // the agent's own connection
	cancel context.CancelFunc
	done   chan error
}

// startAgent runs the agent of guest g on a connection made as user u, with
// conn options opts, and waits until it answers a ping.
func startAgent(t testing.TB, ts *testServer, g guestauth.Guest, node string, u guestauth.User, opts ...nats.Option) *runningAgent {
	t.Helper()
	nc := connect(t, ts.Server, u.Name, u.Password, opts...)
	a, err := guestagent.New(guestagent.Config{
		Guest: g.Name, Node: node, Conn: nc, StateDir: t.TempDir(),
		Heartbeat: 50 * time.Millisecond, ShutdownTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{conn: nc, cancel: cancel, done: make(chan error, 1)}
	go func() { ra.done <- a.Run(ctx) }()
	t.Cleanup(func() { ra.stop(t) })
	ra.client, err = guestagent.NewClient(ts.admin, g.Name)
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 10*time.Second, "agent ping", func() bool {
		pctx, c := context.WithTimeout(context.Background(), time.Second)
		defer c()
		_, err := ra.client.Ping(pctx)
		return err == nil
	})
	return ra
}

// stop ends the agent and waits for Run to return.
func (ra *runningAgent) stop(t testing.TB) {
	t.Helper()
	ra.cancel()
	select {
	case err := <-ra.done:
		if err != nil {
			t.Errorf("agent run: %v", err)
		}
		ra.done <- nil
	case <-time.After(20 * time.Second):
		t.Errorf("agent did not stop in 20s")
	}
}
