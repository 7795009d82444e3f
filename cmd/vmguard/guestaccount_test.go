package main

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/guestauth"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// guestAccountConfig runs guest webvm "in a VM": its agent is started by
// the test, as guest-webvm, in its own account; the exec driver's start
// and stop do nothing. Its service exits every second and is restarted.
const guestAccountConfig = `cluster: acct
node_timeout: 3s
guest_timeout: 3s
nodes: [node1, node2]
packages:
  - name: web
    nodes: [node1, node2]
    guest:
      name: webvm
      driver: exec
      start_timeout: 30s
      exec: {start: ["true"], stop: ["true"], status: ["true"]}
    services:
      - name: tick
        cmd: ["sh", "-c", "sleep 1; exit 1"]
        restart: unlimited
        halt_timeout: 1s
`

// startGuestAgent runs guest webvm's agent as its own identity (its own
// account) following node.
func (e *secureEnv) startGuestAgent(c *cluster, node string) {
	e.t.Helper()
	c.env["agent"] = e.env("guest-webvm")
	c.start("agent", "agent", "--guest", "webvm", "--node", node, "--state", filepath.Join(e.dir, "agent"))
}

// connectGuest connects as guest's identity with its agent's inbox prefix
// (the only inboxes it may subscribe to).
func (e *secureEnv) connectGuest(guest string) *nats.Conn {
	e.t.Helper()
	nc, err := e.flags("guest-"+guest).Connect("test as guest "+guest, nats.CustomInboxPrefix(guestauth.InboxPrefix(guest)))
	if err != nil {
		e.t.Fatalf("connect as guest-%s: %v", guest, err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

// TestGuestAccount: in a `vmguard init` set-up, guest webvm's agent runs
// as its own identity in its own account: the host manager's requests
// reach it, its heartbeats and lease watch work, and its process events
// reach the log through the gate, so its service is restarted as usual.
// The same identity's junk, forged events and events beyond its rate are
// refused with an error and never stored; a message beyond the account's
// max_payload and a fifth connection are refused by the server; it cannot
// read the log.
func TestGuestAccount(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with OS processes; run without -short")
	}
	ctx := context.Background()
	e := newSecureEnv(t, guestAccountConfig)
	if o, err := e.cli("operator-admin", "apply", "-f", e.cfg); err != nil {
		t.Fatalf("apply as operator-admin: %v\n%s", err, o)
	}
	c := &cluster{t: t, url: e.url, dir: e.dir, procs: map[string]*exec.Cmd{}, logs: map[string]*syncBuffer{}, env: map[string][]string{
		"failover": e.env("controller"), "node1": e.env("host-node1"),
	}}
	defer c.stopAll()
	e.startGuestAgent(c, "node1")
	c.start("failover", "failover")
	c.start("node1", "host", "--node", "node1", "--state", filepath.Join(e.dir, "node1"), "--no-guard")
	admin := dialLogFlags(t, e.flags("operator-admin"))
	natstest.WaitFor(t, 90*time.Second, "3 restarts of tick, its process events through the gate", func() bool {
		return len(restarts(readLog(t, admin), "tick")) >= 3
	})
	for _, x := range readLog(t, admin) {
		if strings.HasPrefix(x.Type(), "io.vmguard.process.") && x.Source != events.GuestSource("webvm") {
			t.Errorf("process event from %s, want the guest's agent", x.Source)
		}
	}
	agent, err := guestagent.NewClient(dialLogFlags(t, e.flags("operator-admin")).Conn(), "webvm")
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 30*time.Second, "the agent in its account follows node1's lease", func() bool {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		p, err := agent.Ping(pctx)
		return err == nil && p.Lease == guestagent.LeaseHeld
	})

	// `nats micro ls` in the control account lists the agent in its own
	// account: the control account imports the $SRV subjects from each.
	admin2 := e.flags("operator-admin")
	ls := natsCLI(t, "--server", e.url, "--nkey", admin2.NKey, "--tlsca", admin2.TLSCA, "--tlscert", admin2.TLSCert, "--tlskey", admin2.TLSKey,
		"--timeout", "5s", "micro", "ls")
	if o, err := ls.CombinedOutput(); err != nil || !strings.Contains(string(o), guestagent.ServiceName) {
		t.Errorf("nats micro ls as operator-admin: %v, want the agent (%s) listed:\n%s", err, guestagent.ServiceName, o)
	}

	guest := e.connectGuest("webvm")
	js, err := jetstream.New(guest)
	if err != nil {
		t.Fatal(err)
	}
	codec, err := events.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	subj := events.PackageSubject("web", "process", "exited")
	appendRefused := func(what string, m *nats.Msg, want string) {
		t.Helper()
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, err := js.PublishMsg(actx, m)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("guest-webvm appends %s: %v, want an error with %q", what, err, want)
		}
	}
	appendRefused("junk", &nats.Msg{Subject: subj, Data: []byte("junk")}, "guest gate")
	forged := func(src, guestName string) *nats.Msg {
		m := eventMsg(t, codec, events.New(src, "web", events.ProcessExited{Guest: guestName, Service: "tick", PID: 1, ExitCode: 1, RequestID: "forged", Epoch: 1}))
		return m
	}
	appendRefused("a process.exited of another guest", forged(events.GuestSource("dbvm"), "dbvm"), "guest gate")
	appendRefused("a process.exited naming another guest", forged(events.GuestSource("webvm"), "dbvm"), "guest gate")
	appendRefused("a process.exited from a host's source", forged(events.HostSource("node1"), "webvm"), "guest gate")
	rollup := forged(events.GuestSource("webvm"), "dbvm")
	rollup.Header.Set("Nats-Rollup", "all")
	appendRefused("a forged event with Nats-Rollup", rollup, "guest gate")

	// Beyond the rate: junk as fast as the guest can ask; the gate
	// answers every request, the ones beyond the burst with 429.
	var limited, answered atomic.Int64
	inbox := guest.NewRespInbox()
	sub, err := guest.Subscribe(inbox, func(m *nats.Msg) {
		answered.Add(1)
		if strings.Contains(string(m.Data), `"code":429`) {
			limited.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	const burst = 400
	for range burst {
		if err := guest.PublishMsg(&nats.Msg{Subject: subj, Reply: inbox, Data: []byte("junk")}); err != nil {
			t.Fatal(err)
		}
	}
	natstest.WaitFor(t, 30*time.Second, "the gate's answers", func() bool { return answered.Load() >= burst*9/10 })
	if limited.Load() == 0 {
		t.Errorf("%d junk appends in a burst: none refused over the rate (%d answered)", burst, answered.Load())
	}

	// The account's limits.
	if err := guest.Publish(subj, make([]byte, guestauth.DefaultLimits.MaxPayload+1)); !errors.Is(err, nats.ErrMaxPayload) {
		t.Errorf("a message over the guest account's max_payload: %v, want %v", err, nats.ErrMaxPayload)
	}
	var extra []*nats.Conn
	defer func() {
		for _, nc := range extra {
			nc.Close()
		}
	}()
	var refusedConn error
	for range guestauth.DefaultLimits.MaxConnections {
		nc, err := e.flags("guest-webvm").Connect("extra", nats.NoReconnect())
		if err != nil {
			refusedConn = err
			break
		}
		extra = append(extra, nc)
	}
	if refusedConn == nil {
		t.Errorf("guest-webvm opened %d connections beside its agent's and the test's: want at most %d in all", len(extra), guestauth.DefaultLimits.MaxConnections)
	}

	// It cannot read the log: the account has no JetStream of its own and
	// imports no read of it.
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := js.Stream(lctx, events.StreamName); err != nil {
		t.Logf("stream info (imported, for events.Open): %v", err)
	}
	if _, err := js.CreateConsumer(lctx, events.StreamName, jetstream.ConsumerConfig{}); err == nil {
		t.Error("guest-webvm created a consumer on the log")
	}

	// Nothing of it was stored: every message in the log decodes.
	evs := readLog(t, admin)
	if n := admin.Skipped(); n != 0 {
		t.Errorf("%d malformed messages in the log (of %d events)", n, len(evs))
	}
	for _, x := range evs {
		if d, ok := x.Data.(events.ProcessExited); ok && d.RequestID == "forged" {
			t.Errorf("forged event stored at seq %d", x.Seq)
		}
	}
	for line := range strings.Lines(e.server.String()) {
		if strings.Contains(line, "guest gate") {
			t.Log(strings.TrimSpace(line))
		}
	}
}
