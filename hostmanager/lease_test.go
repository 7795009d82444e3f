package hostmanager

import (
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/lease"
	"github.com/vmguard/vmguard/internal/natsd"
)

// startHost runs `vmguard host` for node as an OS process (so that it can be
// killed with kill -9); its agents use node's state dir like the in-process
// runners of the test.
func (e *testEnv) startHost(node string) *exec.Cmd {
	e.t.Helper()
	cmd := exec.Command(vmguardBin, "host", "--node", node, "--nats", e.srv.ClientURL(),
		"--state", e.stateDir(node), "--agent-bin", vmguardBin, "-v",
		// These tests are about the lease and the agent's own fence, and
		// adopt guests across a kill -9; the node guard, which would stop
		// them, is tested in cmd/vmguard (TestGuard*).
		"--no-guard")
	cmd.Stdout, cmd.Stderr = e.logs, e.logs
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	e.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	return cmd
}

func (e *testEnv) leaseHolder(node string) (string, bool) {
	e.t.Helper()
	kv, err := lease.Open(context.Background(), e.log.JetStream())
	if err != nil {
		return "", false
	}
	entry, err := kv.Get(context.Background(), node)
	if err != nil {
		return "", false
	}
	v, err := lease.Decode(entry.Value())
	if err != nil {
		e.t.Fatal(err)
	}
	return v.Holder, true
}

func nodeEvents(evs []events.Event, node, short string) []events.Event {
	var out []events.Event
	for _, ev := range evs {
		if isNodeEvent(ev) && ev.Subject == node && events.ShortType(ev.Type()) == short {
			out = append(out, ev)
		}
	}
	return out
}

// A host manager that finds its lease deleted (or expired) stops its
// guests at once, records node.fenced when it can write, the package
// halts (reason fenced) and the node joins again.
func TestRunnerSelfFencesWhenLeaseLost(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.webOnNode1("none", sleeper("3"))
	pid := e.agentPID("node1", "webvm")
	if err := leaseKV(t, e).Delete(context.Background(), "node1"); err != nil {
		t.Fatal(err)
	}
	e.waitFor("node.fenced", 20*time.Second, func(evs []events.Event) bool { return len(nodeEvents(evs, "node1", "node.fenced")) == 1 })
	e.waitCount("web", "package.halted", 1, 20*time.Second)
	if isAliveProc(pid) {
		t.Errorf("agent %d still runs after the node fenced itself", pid)
	}
	h, _ := last(e.events(), "web", "package.halted")
	if r := h.Data.(events.PackageHalted).Reason; r != ReasonFenced {
		t.Errorf("package.halted reason %q, want fenced", r)
	}
	e.waitFor("node.joined again", 20*time.Second, func(evs []events.Event) bool { return len(nodeEvents(evs, "node1", "node.joined")) == 2 })
	evs := e.events()
	if f, j := nodeEvents(evs, "node1", "node.fenced")[0], nodeEvents(evs, "node1", "node.joined")[1]; j.Seq < f.Seq {
		t.Errorf("joined again (seq %d) before node.fenced (seq %d)", j.Seq, f.Seq)
	}
	if _, ok := e.leaseHolder("node1"); !ok {
		t.Error("lease not taken again")
	}
	e.checkInvariants()
}

// A host manager killed with kill -9 stops renewing its lease: its guest's
// agent fences its processes before the lease key expires (the ordering is
// checked against the key on the server), and the next host manager takes
// the lease again and brings the package back.
func TestHostKilledAgentFencesNewHostRetakesLease(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.applyConfig(testYAML("none", sleeper("3")))
	host := e.startHost("node1")
	e.placeStarted("web", "node1")
	before, ok := e.leaseHolder("node1")
	if !ok {
		t.Fatal("no lease while the host manager runs")
	}
	ps, _ := last(e.events(), "web", "process.started")
	svc := ps.Data.(events.ProcessStarted).PID
	if err := host.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitLeaseGone(t, leaseKV(t, e), "node1")
	if isAliveProc(svc) {
		t.Fatalf("the lease key expired while the service (pid %d) still ran: the agent did not fence it in time", svc)
	}
	fenced := func(evs []events.Event) (events.Event, bool) {
		for _, ev := range evs {
			if d, ok := ev.Data.(events.ProcessExited); ok && ev.Subject == "web" && d.Reason == "fenced" {
				return ev, true
			}
		}
		return events.Event{}, false
	}
	e.waitFor("the agent to fence its process", 20*time.Second, func(evs []events.Event) bool { _, ok := fenced(evs); return ok })
	starts := e.count("web", "process.started")
	e.startRunner("node1", nil, nil)
	e.waitFor("the lease taken by the new host manager", 20*time.Second, func([]events.Event) bool {
		h, ok := e.leaseHolder("node1")
		return ok && h != before
	})
	// The fenced exit counts (the service stopped without a halt): the new
	// host manager restarts it once the agent sees the lease again.
	e.waitCount("web", "process.started", starts+1, 20*time.Second)
	e.checkInvariants()
}

// kill -9 of `vmguard host` at arbitrary moments of a restart loop: every
// decided restart starts exactly once, none is lost.
func TestHostKill9NoDuplicateNoLostRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.applyConfig(testYAML("none", `
		cmd: [sh, -c, "sleep 0.05; exit 1"]
		restart: unlimited`))
	host := e.startHost("node1")
	epoch := e.place("web", "node1")
	for round := range 4 {
		n := e.count("web", "service.restarting")
		e.waitCount("web", "service.restarting", n+3+round, 30*time.Second)
		// Not a wait for an outcome: a kill at a moment of the restart
		// cycle that differs each round.
		time.Sleep(time.Duration(round*7) * time.Millisecond)
		if err := host.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		host = e.startHost("node1")
	}
	n := e.count("web", "service.restarting")
	e.haltAfterRestarts(n+3, epoch)

	evs := e.pkgEvents("web")
	halting, _ := last(evs, "web", "package.halting")
	starts := map[string]int{}
	for _, ev := range evs {
		if d, ok := ev.Data.(events.ProcessStarted); ok {
			starts[d.RequestID]++
		}
	}
	var decided []events.Event
	for _, ev := range evs {
		if _, ok := ev.Data.(events.ServiceRestarting); ok && ev.Seq < halting.Seq {
			decided = append(decided, ev)
		}
	}
	for i, d := range decided {
		switch n := starts[d.ID]; {
		case n > 1:
			t.Errorf("restart %s started %d times", d.ID, n)
		case n == 0 && i < len(decided)-1:
			t.Errorf("restart %s (seq %d) never started", d.ID, d.Seq)
		}
	}
	for id, n := range starts {
		if n > 1 {
			t.Errorf("request %s started %d times", id, n)
		}
	}
	t.Logf("%d restarts across 4 kill -9 of the host manager", len(decided))
	e.checkInvariants()
}

// logBehindProxy returns a proxy to the test's server and a log on a
// connection through it that reconnects at once when the proxy lets it.
func (e *testEnv) logBehindProxy() (*cutProxy, *events.Log) {
	e.t.Helper()
	proxy := newCutProxy(e.t, e.srv.Addr().String())
	nc, err := nats.Connect(proxy.url(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	l, err := events.Open(context.Background(), nc)
	if err != nil {
		e.t.Fatal(err)
	}
	return proxy, l
}

// A host manager that cannot reach NATS cannot renew its lease: it stops
// its guest by itself before its lease key expires, so that when the
// controller finds the key gone and places the package elsewhere the old
// guest and its service are already stopped; when NATS is back it records
// node.fenced, the package halts (fenced) and the node joins again. The
// host manager's connection (and so its agent's) goes through a proxy the
// test cuts; the server stays up, and the test's own connection sees the
// lease key expire.
func TestRunnerSelfFencesWhenNATSUnreachable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	proxy, hostLog := e.logBehindProxy()
	e.applyConfig(testYAML("none", sleeper("3")))
	e.startRunner("node1", func(c *Config) { c.Log = hostLog }, nil)
	e.placeStarted("web", "node1")
	agent := e.agentPID("node1", "webvm")
	ps, _ := last(e.events(), "web", "process.started")
	svc := ps.Data.(events.ProcessStarted).PID

	kv := leaseKV(t, e)
	if _, err := kv.Get(context.Background(), "node1"); err != nil {
		t.Fatalf("no lease before the cut: %v", err)
	}
	proxy.cut()
	cut := time.Now()
	var guestGone, svcGone time.Duration // since the cut, as first seen
	// The ordering: by the time the key is seen gone (the moment the
	// controller may declare the node lost), the guest and its service
	// are already dead. The deadline only bounds a broken run.
	waitLeaseGone(t, kv, "node1", func() {
		if guestGone == 0 && !isAliveProc(agent) {
			guestGone = time.Since(cut)
		}
		if svcGone == 0 && !isAliveProc(svc) {
			svcGone = time.Since(cut)
		}
	})
	if isAliveProc(agent) || isAliveProc(svc) {
		t.Fatalf("the lease key expired while the guest ran (agent %d alive %v, service %d alive %v): no self-fence before expiry",
			agent, isAliveProc(agent), svc, isAliveProc(svc))
	}
	t.Logf("after the cut: service gone %s, guest gone %s, lease key gone %s (node_timeout 3s)",
		svcGone.Round(time.Millisecond), guestGone.Round(time.Millisecond), time.Since(cut).Round(time.Millisecond))

	proxy.restore()
	e.waitFor("node.fenced", 30*time.Second, func(evs []events.Event) bool { return len(nodeEvents(evs, "node1", "node.fenced")) == 1 })
	e.waitCount("web", "package.halted", 1, 30*time.Second)
	h, _ := last(e.events(), "web", "package.halted")
	if r := h.Data.(events.PackageHalted).Reason; r != ReasonFenced {
		t.Errorf("package.halted reason %q, want fenced", r)
	}
	e.waitFor("node.joined again", 30*time.Second, func(evs []events.Event) bool { return len(nodeEvents(evs, "node1", "node.joined")) == 2 })
	e.checkInvariants()
}

// waitLeaseGone polls node's lease key (calling each, if given, before every
// read) until the server no longer has it: the moment the failover
// controller may declare the node lost. The deadline only bounds a broken
// run.
func waitLeaseGone(t *testing.T, kv jetstream.KeyValue, node string, each ...func()) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		for _, f := range each {
			f()
		}
		_, err := kv.Get(context.Background(), node)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return
		}
		if err != nil {
			t.Fatalf("read the lease of %s: %v", node, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lease of %s did not expire within 60s", node)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// cutProxy forwards TCP connections to a server until cut: then it closes
// them and refuses new ones (accepts and closes at once) until restored.
type cutProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { l.Close(); p.cut() })
	go p.serve()
	return p
}

func (p *cutProxy) url() string { return "nats://" + p.l.Addr().String() }

func (p *cutProxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[s] = true, true
		p.mu.Unlock()
		go func() { _, _ = io.Copy(s, c); s.Close(); c.Close() }()
		go func() { _, _ = io.Copy(c, s); s.Close(); c.Close() }()
	}
}

// cut closes every forwarded connection and refuses new ones.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// restore forwards new connections again.
func (p *cutProxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// A second host manager instance of the same node takes the lease over;
// the first steps down without touching the guests (no fence).
func TestRunnerSupersededByNewInstance(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first, _ := e.webOnNode1("none", sleeper("none"))
	pid := e.agentPID("node1", "webvm")
	e.startRunner("node1", nil, nil)
	if err := first.wait(t, 20*time.Second); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("first instance returned %v, want ErrSuperseded", err)
	}
	if !isAliveProc(pid) {
		t.Error("the guest was stopped")
	}
	if n := len(nodeEvents(e.eventsNow(), "node1", "node.fenced")); n != 0 {
		t.Errorf("node.fenced %d times", n)
	}
	if n := e.count("web", "guest.started"); n != 1 {
		t.Errorf("guest.started %d times", n)
	}
}

// With Config.LeaseConn the node lease is renewed on a connection of its
// own: while the log's connection is cut (as good as a connection clogged
// with a flood of junk to read), the lease keeps being renewed and the node
// does not fence itself. Without it the same cut fences the node
// (TestRunnerSelfFencesWhenNATSUnreachable).
func TestLeaseRenewedOnItsOwnConnection(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	proxy, hostLog := e.logBehindProxy()
	leaseNC := natsd.Connect(t, e.srv)
	e.applyConfig(testYAML("none", sleeper("3")))
	e.startRunner("node1", func(c *Config) { c.Log, c.LeaseConn = hostLog, leaseNC }, nil)
	e.placeStarted("web", "node1")
	agent := e.agentPID("node1", "webvm")

	kv := leaseKV(t, e)
	first, err := kv.Get(context.Background(), "node1")
	if err != nil {
		t.Fatalf("no lease before the cut: %v", err)
	}
	proxy.cut()
	cut := time.Now()
	// Renewals every node_timeout/4: six of them span two node_timeouts
	// of the cut, in which a lease renewed on the log's connection would
	// have been given up (fenced after 0.6 node_timeout) and expired.
	deadline := cut.Add(60 * time.Second)
	for {
		cur, err := kv.Get(context.Background(), "node1")
		if err != nil {
			t.Fatalf("the lease of node1 %v after the log's connection was cut: %v", time.Since(cut).Round(time.Millisecond), err)
		}
		if v, err := lease.Decode(cur.Value()); err != nil || v.Holder == "" {
			t.Fatalf("lease value %q: %v", cur.Value(), err)
		}
		if !isAliveProc(agent) {
			t.Fatalf("the guest's agent stopped %v after the log's connection was cut: the node fenced itself", time.Since(cut).Round(time.Millisecond))
		}
		if cur.Revision() >= first.Revision()+6 && time.Since(cut) >= 6*time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lease was renewed %d times in 60 s after the log's connection was cut", cur.Revision()-first.Revision())
		}
		time.Sleep(50 * time.Millisecond) // a poll interval, not a wait for an outcome
	}
	proxy.restore()
	if n := len(nodeEvents(e.eventsNow(), "node1", "node.fenced")); n != 0 {
		t.Errorf("node.fenced %d times while only the log's connection was cut", n)
	}
}
