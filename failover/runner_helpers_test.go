package failover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/events/eventstest"
	"github.com/vmguard/vmguard/internal/lease"
	"github.com/vmguard/vmguard/internal/natsd"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// testEnv is a real embedded JetStream server with the event log on it.
type testEnv struct {
	t   testing.TB
	ctx context.Context
	srv *server.Server
	log *events.Log
	js  jetstream.JetStream
}

func newEnv(t testing.TB) *testEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv := natsd.StartTest(t)
	l, err := events.Open(ctx, natsd.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	return &testEnv{t: t, ctx: ctx, srv: srv, log: l, js: l.JetStream()}
}

// testLogger logs to stderr with -v, else nowhere.
func testLogger(t testing.TB, name string) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("runner", name)
	}
	return slog.New(slog.DiscardHandler)
}

// runningRunner is a Runner running in its own goroutine on its own
// connection.
type runningRunner struct {
	*Runner
	cancel context.CancelFunc
	done   chan error
}

// stop cancels the runner and waits for Run to return.
func (rr *runningRunner) stop(t testing.TB) {
	t.Helper()
	rr.cancel()
	select {
	case err := <-rr.done:
		if err != nil {
			t.Errorf("runner: %v", err)
		}
		rr.done <- nil // later stops return at once
	case <-time.After(15 * time.Second):
		t.Fatal("runner did not stop within 15s")
	}
}

// start runs a Runner with cfg (Conn and Logger filled in) until the test
// ends or stop.
func (env *testEnv) start(name string, cfg Config) *runningRunner {
	env.t.Helper()
	cfg.Conn = natsd.Connect(env.t, env.srv)
	cfg.ID = name
	if cfg.Logger == nil {
		cfg.Logger = testLogger(env.t, name)
	}
	r, err := NewRunner(cfg)
	if err != nil {
		env.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(env.ctx)
	rr := &runningRunner{Runner: r, cancel: cancel, done: make(chan error, 1)}
	go func() { rr.done <- r.Run(ctx) }()
	env.t.Cleanup(func() { rr.stop(env.t) })
	return rr
}

// add appends an event about subject with a source that writes its type.
func (env *testEnv) add(subject string, data events.Payload) events.Event {
	env.t.Helper()
	e := eventstest.New(subject, data)
	seq, err := env.log.Append(env.ctx, e)
	if err != nil {
		env.t.Fatalf("append %s %s: %v", e.Type(), subject, err)
	}
	e.Seq = seq
	return e
}

func (env *testEnv) config(c *config.Cluster) {
	env.t.Helper()
	env.add("", configApplied(env.t, c))
}

// all reads the whole log.
func (env *testEnv) all() []events.Event {
	env.t.Helper()
	var evs []events.Event
	if _, err := env.log.Replay(env.ctx, events.ReadOptions{}, func(e events.Event) error {
		evs = append(evs, e)
		return nil
	}); err != nil {
		env.t.Fatal(err)
	}
	return evs
}

// last returns the last event on a subject, if any.
func (env *testEnv) last(subject string) (events.Event, bool) {
	env.t.Helper()
	e, ok, err := env.log.Last(env.ctx, subject)
	if err != nil {
		env.t.Fatal(err)
	}
	return e, ok
}

// lastPlaced returns pkg's last package.placed, if any.
func (env *testEnv) lastPlaced(pkg string) (events.PackagePlaced, events.Event, bool) {
	e, ok := env.last(events.PackageSubject(pkg, "package", "placed"))
	if !ok {
		return events.PackagePlaced{}, e, false
	}
	return e.Data.(events.PackagePlaced), e, true
}

// waitPlaced waits until pkg's last placement has an epoch above after.
func (env *testEnv) waitPlaced(pkg string, after uint64, within time.Duration) (events.PackagePlaced, events.Event) {
	env.t.Helper()
	var d events.PackagePlaced
	var e events.Event
	natstest.WaitFor(env.t, within, fmt.Sprintf("%s placed with an epoch above %d", pkg, after), func() bool {
		var ok bool
		d, e, ok = env.lastPlaced(pkg)
		return ok && d.Epoch > after
	})
	return d, e
}

// waitLost waits until node has a node.lost and returns the last one.
func (env *testEnv) waitLost(node string, within time.Duration) events.Event {
	env.t.Helper()
	var lost events.Event
	natstest.WaitFor(env.t, within, node+" lost", func() bool {
		var ok bool
		lost, ok = env.last(events.NodeSubject(node, "lost"))
		return ok
	})
	return lost
}

// leasedWeb holds the leases of nodes (key TTL ttl), writes a cluster of
// those nodes with node_timeout ttl and web configured on webNodes, and
// joins the nodes, in order; it returns the lease holder and the cluster.
func (env *testEnv) leasedWeb(ttl time.Duration, nodes []string, webNodes ...string) (*leaseHolder, *config.Cluster) {
	env.t.Helper()
	leases := env.holdLeases(ttl, nodes...)
	c := testCluster(testPkg("web", webNodes...))
	c.Nodes = nodes
	c.NodeTimeout = config.Duration(ttl)
	env.config(c)
	for _, n := range nodes {
		env.add(n, events.NodeJoined{})
	}
	return leases, c
}

// leaderAndStandby starts controller a with the election (ttl, no
// snapshots), waits up to lead for it to lead, then starts b, caught up.
func (env *testEnv) leaderAndStandby(ttl, lead time.Duration) (a, b *runningRunner) {
	env.t.Helper()
	cfg := Config{ElectionTTL: ttl, NoSnapshot: true}
	a = env.start("a", cfg)
	natstest.WaitFor(env.t, lead, "a to lead", a.Leader)
	b = env.start("b", cfg)
	<-b.CaughtUp()
	return a, b
}

// leaseHolder plays the host managers' side of the node lease contract:
// it renews each node's lease every ttl/4 until told to stop.
type leaseHolder struct {
	t       testing.TB
	kv      jetstream.KeyValue
	ttl     time.Duration
	mu      sync.Mutex
	renewed map[string]time.Time // last successful renewal (the value's Renewed)
	holds   map[string]hold
	wg      sync.WaitGroup
}

type hold struct{ stop, done chan struct{} }

func (env *testEnv) holdLeases(ttl time.Duration, nodes ...string) *leaseHolder {
	env.t.Helper()
	kv, err := lease.Ensure(env.ctx, env.js, ttl)
	if err != nil {
		env.t.Fatal(err)
	}
	h := &leaseHolder{t: env.t, kv: kv, ttl: ttl, renewed: map[string]time.Time{}, holds: map[string]hold{}}
	for _, n := range nodes {
		h.renew(env.ctx, n) // held before the node joins, as a host does
		hd := hold{stop: make(chan struct{}), done: make(chan struct{})}
		h.holds[n] = hd
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer close(hd.done)
			tick := time.NewTicker(lease.RenewEvery(ttl))
			defer tick.Stop()
			for {
				select {
				case <-hd.stop:
					return
				case <-env.ctx.Done():
					return
				case <-tick.C:
					h.renew(env.ctx, n)
				}
			}
		}()
	}
	env.t.Cleanup(h.stopAll)
	return h
}

func (h *leaseHolder) renew(ctx context.Context, node string) {
	v := lease.Value{Node: node, Holder: "test", Renewed: time.Now().UTC(), TTLMS: h.ttl.Milliseconds()}
	if _, err := h.kv.Put(ctx, node, v.Encode()); err != nil {
		if ctx.Err() == nil {
			h.t.Errorf("renew lease of %s: %v", node, err)
		}
		return
	}
	h.mu.Lock()
	h.renewed[node] = v.Renewed
	h.mu.Unlock()
}

// stop stops renewing node's lease and returns its last renewal.
func (h *leaseHolder) stop(node string) time.Time {
	h.mu.Lock()
	hd, ok := h.holds[node]
	delete(h.holds, node)
	h.mu.Unlock()
	if ok {
		close(hd.stop)
		<-hd.done
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.renewed[node]
}

func (h *leaseHolder) stopAll() {
	h.mu.Lock()
	for n, hd := range h.holds {
		close(hd.stop)
		delete(h.holds, n)
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// holdLeaderKey makes someone else ("other") the leader for a minute, so
// that runners under test with ElectionTTL of a minute stay standbys.
func (env *testEnv) holdLeaderKey() {
	env.t.Helper()
	kv, err := ensureElection(env.ctx, env.js, time.Minute)
	if err != nil {
		env.t.Fatal(err)
	}
	v, _ := json.Marshal(LeaderValue{ID: "other", Since: time.Now(), TTLMS: time.Minute.Milliseconds()})
	if _, err := kv.Create(env.ctx, LeaderKey, v); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		env.t.Fatal(err)
	}
}

// normalize makes states that mean the same deeply equal: empty slices and
// maps become nil, times UTC.
func normalize(s *State) *State {
	c := s.Clone()
	c.Time = c.Time.UTC()
	c.cfgIx, c.pkgIx = nil, nil // derived, built on first use
	if len(c.Nodes) == 0 {
		c.Nodes = nil
	}
	if len(c.Packages) == 0 {
		c.Packages = nil
	}
	for _, p := range c.Packages {
		if len(p.SwitchingOff) == 0 {
			p.SwitchingOff = nil
		}
		if len(p.FailedNodes) == 0 {
			p.FailedNodes = nil
		}
		if len(p.Services) == 0 {
			p.Services = nil
		}
	}
	return c
}

// sameState fails the test when got and want differ after normalizing.
func sameState(t testing.TB, got, want *State) {
	t.Helper()
	g, w := normalize(got), normalize(want)
	if reflect.DeepEqual(g, w) {
		return
	}
	gb, _ := json.MarshalIndent(g, "", " ")
	wb, _ := json.MarshalIndent(w, "", " ")
	if string(gb) == string(wb) {
		t.Fatalf("states differ in a way JSON does not show:\n%s", gb)
	}
	t.Fatalf("states differ:\ngot  %s\nwant %s", gb, wb)
}

// lastSeq returns the log's last sequence.
func (env *testEnv) lastSeq() uint64 {
	env.t.Helper()
	seq, err := env.log.LastSeq(env.ctx)
	if err != nil {
		env.t.Fatal(err)
	}
	return seq
}
