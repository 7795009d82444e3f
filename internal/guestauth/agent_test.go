package guestauth_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/guestauth"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// watchCleanup is the one violation a guest agent with --node causes: when
// it stops a lease watch (at a fence, a reconnect or its own stop) nats.go
// deletes the watch's ephemeral consumer, which a guest may not do; the
// server removes the consumer itself once its deliveries have no interest.
const watchCleanup = `Publish Violation - Subject "$JS.API.CONSUMER.DELETE.KV_vmguard_leases.`

// checkViolations fails the test for any violation but watchCleanup.
func checkViolations(t *testing.T, ts *testServer) {
	t.Helper()
	for _, v := range ts.viol.all() {
		if !strings.Contains(v, watchCleanup) {
			t.Errorf("unexpected permission violation: %s", v)
		}
	}
}

// exitedEvent returns the last process.exited of pkg if its request id is id.
func exitedEvent(t *testing.T, ts *testServer, pkg, id string) (events.Event, events.ProcessExited, bool) {
	t.Helper()
	e, ok := ts.lastEvent(t, events.PackageSubject(pkg, "process", "exited"))
	if !ok {
		return e, events.ProcessExited{}, false
	}
	d := e.Data.(events.ProcessExited)
	return e, d, d.RequestID == id
}

func leaseState(ra *runningAgent, want string) func() bool {
	return func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		p, err := ra.client.Ping(ctx)
		return err == nil && p.Lease == want
	}
}

// TestAgentUnderGuestUser runs a real agent with --node as its guest's
// restricted user: it serves runs, its process events land in the log, its
// heartbeats arrive, and it fences when the admin stops renewing the lease
// and takes runs again once it renews.
func TestAgentUnderGuestUser(t *testing.T) {
	g := guestauth.Guest{Name: "webvm", Packages: []string{"web", "api"}, Nodes: []string{"node1", "node2"}}
	u := guestUser(t, g)
	ts := startServer(t, u)

	beats, err := ts.admin.SubscribeSync(guestagent.HeartbeatSubject("webvm"))
	if err != nil {
		t.Fatal(err)
	}
	stopRenewing := ts.keepRenewing(t, "node1")
	ra := startAgent(t, ts, g, "node1", u)
	natstest.WaitFor(t, 5*time.Second, "lease held", leaseState(ra, guestagent.LeaseHeld))
	for range 2 {
		m, err := beats.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
		if !strings.Contains(string(m.Data), `"guest":"webvm"`) {
			t.Errorf("heartbeat %s", m.Data)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, pkg := range []string{"web", "api"} {
		id := "exit3-" + pkg
		if _, err := ra.client.Run(ctx, guestagent.RunRequest{Package: pkg, Service: "svc",
			Argv: []string{"sh", "-c", "exit 3"}, RequestID: id, Epoch: 1}); err != nil {
			t.Fatalf("run in %s: %v", pkg, err)
		}
		var d events.ProcessExited
		var e events.Event
		natstest.WaitFor(t, 5*time.Second, "process.exited of "+pkg, func() bool {
			var ok bool
			e, d, ok = exitedEvent(t, ts, pkg, id)
			return ok
		})
		if d.ExitCode != 3 || d.Guest != "webvm" || e.Source != guestagent.Source("webvm") || e.Subject != pkg {
			t.Errorf("process.exited: %+v %+v", e, d)
		}
		if s, ok := ts.lastEvent(t, events.PackageSubject(pkg, "process", "started")); !ok ||
			s.Data.(events.ProcessStarted).RequestID != id {
			t.Errorf("process.started of %s: %+v %v", pkg, s, ok)
		}
	}

	// Fencing: the admin stops renewing; the agent stops its process.
	if _, err := ra.client.Run(ctx, guestagent.RunRequest{Package: "web", Service: "long",
		Argv: []string{"sleep", "60"}, RequestID: "long", Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	stopRenewing()
	natstest.WaitFor(t, 5*time.Second, "fenced exit", func() bool {
		_, d, ok := exitedEvent(t, ts, "web", "long")
		return ok && d.Reason == guestagent.ReasonFenced
	})
	ts.keepRenewing(t, "node1")
	natstest.WaitFor(t, 5*time.Second, "lease held again", leaseState(ra, guestagent.LeaseHeld))
	if _, err := ra.client.Run(ctx, guestagent.RunRequest{Package: "web", Service: "again",
		Argv: []string{"true"}, RequestID: "again", Epoch: 1}); err != nil {
		t.Fatalf("run after renewal: %v", err)
	}
	natstest.WaitFor(t, 5*time.Second, "process.exited after renewal", func() bool {
		_, _, ok := exitedEvent(t, ts, "web", "again")
		return ok
	})

	// The guest moves to node2: the agent reads web's placement from the
	// log (a direct get its user may send) and follows node2's lease.
	if _, err := ts.log.Append(ctx, events.Stamp(events.Event{Source: "/vmguard/failover", Subject: "web",
		Data: events.PackagePlaced{Node: "node2", Epoch: 2, Reason: "failover", PreviousNode: "node1"}}, time.Now())); err != nil {
		t.Fatal(err)
	}
	ts.keepRenewing(t, "node2")
	if rep, err := ra.client.Place(ctx, guestagent.PlaceRequest{Package: "web", Node: "node2", Epoch: 2}); err != nil || !rep.Changed || rep.Node != "node2" {
		t.Fatalf("place on node2 as the guest's user: %+v, %v", rep, err)
	}
	natstest.WaitFor(t, 5*time.Second, "node2's lease held", func() bool {
		pctx, c := context.WithTimeout(context.Background(), time.Second)
		defer c()
		p, err := ra.client.Ping(pctx)
		return err == nil && p.Node == "node2" && p.Lease == guestagent.LeaseHeld
	})
	ra.stop(t)
	checkViolations(t, ts)
}

// TestAgentWithOwnInbox runs an agent whose connection uses its guest's own
// inbox prefix, as a user that may subscribe to that prefix only.
func TestAgentWithOwnInbox(t *testing.T) {
	g := guestauth.Guest{Name: "dbvm", Packages: []string{"db"}, Nodes: []string{"node1"},
		InboxPrefix: guestauth.InboxPrefix("dbvm")}
	u := guestUser(t, g)
	ts := startServer(t, u)
	ts.keepRenewing(t, "node1")
	ra := startAgent(t, ts, g, "node1", u, nats.CustomInboxPrefix(g.InboxPrefix))
	natstest.WaitFor(t, 5*time.Second, "lease held", leaseState(ra, guestagent.LeaseHeld))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := ra.client.Run(ctx, guestagent.RunRequest{Package: "db", Service: "svc",
		Argv: []string{"true"}, RequestID: "r1", Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 5*time.Second, "process.exited", func() bool {
		_, _, ok := exitedEvent(t, ts, "db", "r1")
		return ok
	})
	ra.stop(t)
	checkViolations(t, ts)

	// That user cannot read the replies everyone else gets.
	nc := connect(t, ts.Server, u.Name, u.Password, nats.PermissionErrOnSubscribe(true))
	sub, err := nc.SubscribeSync("_INBOX.>")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(5 * time.Second); !errors.Is(err, nats.ErrPermissionViolation) {
		t.Errorf("subscribe _INBOX.>: %v, want a permissions violation", err)
	}
}

// TestAgentKeepsProcessesAcrossReconnect cuts the agent's connection; it
// reconnects and watches its lease again before the fence would fire, so its
// process keeps running.
func TestAgentKeepsProcessesAcrossReconnect(t *testing.T) {
	g := guestauth.Guest{Name: "webvm", Packages: []string{"web"}, Nodes: []string{"node1"}}
	u := guestUser(t, g)
	ts := startServer(t, u)
	ts.keepRenewing(t, "node1")
	ra := startAgent(t, ts, g, "node1", u)
	natstest.WaitFor(t, 5*time.Second, "lease held", leaseState(ra, guestagent.LeaseHeld))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := ra.client.Run(ctx, guestagent.RunRequest{Package: "web", Service: "long",
		Argv: []string{"sleep", "60"}, RequestID: "long", Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		id, err := ra.conn.GetClientID()
		if err != nil {
			t.Fatal(err)
		}
		reconnected := ra.conn.Stats().Reconnects
		if err := ts.DisconnectClientByID(id); err != nil {
			t.Fatal(err)
		}
		natstest.WaitFor(t, 5*time.Second, "reconnect", func() bool {
			return ra.conn.Stats().Reconnects > reconnected && ra.conn.IsConnected()
		})
		// A fence stops the process by 0.8 ttl after the last renewal the
		// agent saw; watch for its exit a while longer.
		deadline := time.Now().Add(2 * leaseTTL)
		for time.Now().Before(deadline) {
			if _, d, ok := exitedEvent(t, ts, "web", "long"); ok {
				t.Fatalf("process exited after a reconnect: %+v", d)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	natstest.WaitFor(t, 5*time.Second, "lease held", leaseState(ra, guestagent.LeaseHeld))
	ra.stop(t)
	checkViolations(t, ts)
}
