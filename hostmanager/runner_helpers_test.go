package hostmanager

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/invariant"
	"github.com/vmguard/vmguard/internal/lease"
	"github.com/vmguard/vmguard/internal/natsd"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// vmguardBin is the vmguard binary built once by TestMain; process-driver
// guests run it as `vmguard agent`.
var vmguardBin string

func TestMain(m *testing.M) {
	os.Exit(natstest.MainWithBinary(m, "..", "./cmd/vmguard", &vmguardBin)) // from the module root
}

// testEnv is a real embedded server, the log, and a follower that keeps
// every event for the test to look at.
type testEnv struct {
	t   *testing.T
	srv *server.Server
	nc  *nats.Conn
	log *events.Log
	dir string

	logs *syncBuffer

	mu  sync.Mutex
	evs []events.Event
}

// syncBuffer is a buffer safe for a writer and a reader at once.
type syncBuffer = natstest.Buffer

func newEnv(t *testing.T) *testEnv {
	t.Helper()
	srv := natsd.StartTest(t)
	return newEnvOn(t, srv, natsd.Connect(t, srv))
}

// newEnvOn is newEnv on a server and connection the test manages.
func newEnvOn(t *testing.T, srv *server.Server, nc *nats.Conn) *testEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l, err := events.Open(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, srv: srv, nc: nc, log: l, dir: t.TempDir(), logs: &syncBuffer{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = l.Follow(ctx, events.ReadOptions{}, func(ev events.Event) error {
			e.mu.Lock()
			e.evs = append(e.evs, ev)
			e.mu.Unlock()
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		e.killAgents()
		if t.Failed() {
			t.Logf("event log:\n%s", e.timeline())
			t.Logf("host manager logs:\n%s", e.logs.String())
		}
	})
	return e
}

// killAgents kills every agent a process driver of this test started.
func (e *testEnv) killAgents() {
	pids, _ := filepath.Glob(filepath.Join(e.dir, "*", "guests", "*.pid"))
	for _, f := range pids {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var pid int
		if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 0 {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
}

func (e *testEnv) events() []events.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]events.Event(nil), e.evs...)
}

func (e *testEnv) timeline() string {
	var b strings.Builder
	for _, ev := range e.events() {
		fmt.Fprintf(&b, "%5d %s %-20s %s %s\n", ev.Seq, ev.Time.Format("15:04:05.000"), events.ShortType(ev.Type()), ev.Subject, ev.Summary())
	}
	return b.String()
}

// applyConfig records a cluster config, as `vmguard apply` does.
func (e *testEnv) applyConfig(yaml string) {
	e.t.Helper()
	e.append(events.Event{Source: "/vmguard/cli/test", Data: configApplied(e.t, yaml)})
}

// place appends package.placed for pkg on node, as the failover controller
// would, with the next epoch.
func (e *testEnv) place(pkg, node string) uint64 {
	e.t.Helper()
	var epoch uint64
	last, ok, err := e.log.Last(context.Background(), events.PackageSubject(pkg, "package", "placed"))
	if err != nil {
		e.t.Fatal(err)
	}
	if ok {
		epoch = last.Data.(events.PackagePlaced).Epoch
	}
	e.append(events.Event{Source: "/vmguard/failover", Subject: pkg, Data: events.PackagePlaced{Node: node, Epoch: epoch + 1, Reason: "auto_run"}})
	return epoch + 1
}

// halt appends an operator's package.halting for the package's epoch.
func (e *testEnv) halt(pkg, node string, epoch uint64) {
	e.t.Helper()
	e.append(events.Event{Source: "/vmguard/cli/test", Subject: pkg, Data: events.PackageHalting{Node: node, Epoch: epoch, Reason: "operator_halt", By: "test"}})
}

// append appends ev; a placement goes after its marker in one atomic
// batch, as the controller and the CLI append it.
func (e *testEnv) append(ev events.Event) events.Event {
	e.t.Helper()
	ev = events.Stamp(ev, time.Now())
	var seq uint64
	var err error
	if m, ok := events.PlacementMarker(ev); ok {
		var seqs []uint64
		if seqs, err = e.log.AppendBatch(context.Background(), events.BatchItem{Event: m}, events.BatchItem{Event: ev}); err == nil {
			seq = seqs[1]
		}
	} else {
		seq, err = e.log.Append(context.Background(), ev)
	}
	if err != nil {
		e.t.Fatalf("append %s: %v", ev.Type(), err)
	}
	ev.Seq = seq
	return ev
}

func (e *testEnv) pkgEvents(pkg string) []events.Event {
	var out []events.Event
	for _, ev := range e.events() {
		if ev.Subject == pkg && !isNodeEvent(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// count counts the events of a type (short form, e.g. "service.restarting")
// about pkg.
func (e *testEnv) count(pkg, short string) int {
	n := 0
	for _, ev := range e.pkgEvents(pkg) {
		if events.ShortType(ev.Type()) == short {
			n++
		}
	}
	return n
}

// waitFor polls the collected events until cond holds, or fails the test
// after timeout.
func (e *testEnv) waitFor(what string, timeout time.Duration, cond func([]events.Event) bool) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond(e.events()) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// eventsNow returns the events the log holds now: it waits until the
// collector has read up to the log's last sequence, so that a check made
// right after a runner stopped sees everything it wrote (e.events alone may
// lag behind and make a negative check pass without looking).
func (e *testEnv) eventsNow() []events.Event {
	e.t.Helper()
	last, err := e.log.LastSeq(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	e.waitFor(fmt.Sprintf("the collector to read up to seq %d", last), 30*time.Second, func(evs []events.Event) bool {
		return len(evs) > 0 && evs[len(evs)-1].Seq >= last
	})
	return e.events()
}

// waitCount waits until at least n events of a type about pkg are in the log.
func (e *testEnv) waitCount(pkg, short string, n int, timeout time.Duration) {
	e.t.Helper()
	e.waitFor(fmt.Sprintf("%d %s of %s", n, short, pkg), timeout, func([]events.Event) bool { return e.count(pkg, short) >= n })
}

// checkInvariants asserts the log-wide promises (one placement at a time,
// every restart has its cause).
func (e *testEnv) checkInvariants() {
	e.t.Helper()
	for _, p := range invariant.Check(e.events()) {
		e.t.Errorf("invariant: %s", p)
	}
}

// runnerHandle is a runner started in the background.
type runnerHandle struct {
	r      *Runner
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	err    error         // what Run returned
}

// stop cancels the runner and returns Run's error.
func (h *runnerHandle) stop(t *testing.T) error {
	t.Helper()
	h.cancel()
	return h.wait(t, 90*time.Second)
}

// wait returns Run's error once it returned by itself.
func (h *runnerHandle) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-h.done:
		return h.err
	case <-time.After(timeout):
		t.Fatal("runner did not return")
		return nil
	}
}

// stateDir is the runner state dir of node (shared by its successive runners).
func (e *testEnv) stateDir(node string) string { return filepath.Join(e.dir, node) }

// startRunner runs a host manager for node in this process; mod changes
// its config, hooks (nil: none) are its test hooks.
func (e *testEnv) startRunner(node string, mod func(*Config), hooks *testHooks) *runnerHandle {
	e.t.Helper()
	cfg := Config{
		Node: node, Log: e.log, StateDir: e.stateDir(node), AgentBin: vmguardBin,
		AgentArgs: []string{"--heartbeat", "200ms"},
		Logger:    slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("runner", events.NewID()[24:]),
	}
	if mod != nil {
		mod(&cfg)
	}
	var th testHooks
	if hooks != nil {
		th = *hooks
	}
	r, err := newRunner(cfg, th)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &runnerHandle{r: r, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		h.err = r.Run(ctx)
	}()
	e.t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(30 * time.Second):
		}
	})
	return h
}

// agentPID returns the pid of guest's agent started by node's process driver.
func (e *testEnv) agentPID(node, guest string) int {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.stateDir(node), "guests", guest+".pid"))
	if err != nil {
		e.t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil {
		e.t.Fatal(err)
	}
	return pid
}

// last returns the last event of a type about pkg.
func last(evs []events.Event, pkg, short string) (events.Event, bool) {
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Subject == pkg && events.ShortType(evs[i].Type()) == short {
			return evs[i], true
		}
	}
	return events.Event{}, false
}

// has reports whether an event of a type about pkg is in evs.
func has(evs []events.Event, pkg, short string) bool {
	_, ok := last(evs, pkg, short)
	return ok
}

// testYAML is a one-package cluster config for node1 (and node2) with short
// timeouts; svc lines are the service's settings.
func testYAML(guestRestart string, svc string) string {
	var b strings.Builder
	b.WriteString(`cluster: test
node_timeout: 3s
guest_timeout: 2s
nodes: [node1, node2]
packages:
  - name: web
    nodes: [node1, node2]
    guest:
      name: webvm
      driver: process
      start_timeout: 20s
      restart: ` + guestRestart + `
    services:
      - name: svc
        halt_timeout: 1s
`)
	for _, l := range strings.Split(strings.TrimSpace(svc), "\n") {
		b.WriteString("        " + strings.TrimSpace(l) + "\n")
	}
	return b.String()
}

// sleeper is testYAML's service lines of a service that sleeps, with
// restart (none, N or unlimited).
func sleeper(restart string) string { return "cmd: [sleep, \"1000\"]\nrestart: " + restart }

// webOnNode1 applies testYAML(guestRestart, svc), starts node1's runner
// and runs web there (placeStarted); it returns the runner and web's epoch.
func (e *testEnv) webOnNode1(guestRestart, svc string) (*runnerHandle, uint64) {
	e.t.Helper()
	e.applyConfig(testYAML(guestRestart, svc))
	h := e.startRunner("node1", nil, nil)
	return h, e.placeStarted("web", "node1")
}

// haltAfterRestarts waits for n restarts of web's service, then halts web
// on node1 (at epoch) as an operator and waits until it is halted.
func (e *testEnv) haltAfterRestarts(n int, epoch uint64) {
	e.t.Helper()
	e.waitCount("web", "service.restarting", n, 30*time.Second)
	e.halt("web", "node1", epoch)
	e.waitCount("web", "package.halted", 1, 30*time.Second)
}

// placeStarted places pkg on node and waits up to 30 s for it to start; it
// returns the placement's epoch.
func (e *testEnv) placeStarted(pkg, node string) uint64 {
	e.t.Helper()
	epoch := e.place(pkg, node)
	e.waitCount(pkg, "package.started", 1, 30*time.Second)
	return epoch
}

// leaseKV opens the node lease bucket.
func leaseKV(t *testing.T, e *testEnv) jetstream.KeyValue {
	t.Helper()
	kv, err := lease.Open(context.Background(), e.log.JetStream())
	if err != nil {
		t.Fatal(err)
	}
	return kv
}
