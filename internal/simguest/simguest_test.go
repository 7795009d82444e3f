package simguest

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/hostmanager"
	"github.com/vmguard/vmguard/internal/natsd"
)

// TestProtocol drives a simulated guest with the real agent client over a
// real embedded server: heartbeats from its node, run (idempotent by
// request id, conflict on a second run of the service), an injected exit,
// a stop, a graceful and a forced guest stop, and a crash, each with the
// events a real agent writes.
func TestProtocol(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := natsd.Start(natsd.Config{StoreDir: filepath.Join(t.TempDir(), "nats"), Port: -1, Interval: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	l, err := events.Open(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	sim := New(ctx, l, 20*time.Millisecond)
	d := sim.Driver("node1")
	ref := hostmanager.GuestRef{Package: "web", Node: "node1", Guest: config.Guest{Name: "webvm", Driver: config.DriverProcess}}

	beats, err := nc.SubscribeSync(guestagent.HeartbeatSubject("webvm"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, ref); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the first at once, then the ticker's
		m, err := beats.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
		var hb guestagent.Heartbeat
		if err := json.Unmarshal(m.Data, &hb); err != nil || hb.Guest != "webvm" || hb.Node != "node1" {
			t.Fatalf("heartbeat %s: %v; want webvm's from node1", m.Data, err)
		}
	}
	c, err := guestagent.NewClient(nc, "webvm")
	if err != nil {
		t.Fatal(err)
	}
	req := guestagent.RunRequest{Package: "web", Service: "main", Argv: []string{"sim"}, RequestID: "r1/main", Epoch: 3, Node: "node1"}
	rep, err := c.Run(ctx, req)
	if err != nil || rep.Process.State != guestagent.StateRunning || rep.Duplicate {
		t.Fatalf("run: %+v, %v", rep, err)
	}
	if again, err := c.Run(ctx, req); err != nil || !again.Duplicate || again.Process.PID != rep.Process.PID {
		t.Fatalf("repeated run: %+v, %v", again, err)
	}
	other := req
	other.RequestID = "r2/main"
	if _, err := c.Run(ctx, other); !errors.Is(err, guestagent.ErrConflict) {
		t.Fatalf("second run of a running service: %v, want conflict", err)
	}
	if _, err := c.Place(ctx, guestagent.PlaceRequest{Package: "web", Node: "node1", Epoch: 2}); !errors.Is(err, guestagent.ErrConflict) {
		t.Fatalf("place under an older epoch: %v, want conflict", err)
	}
	x, node, ok, err := sim.Exit(ctx, "web", "main", 7)
	if err != nil || !ok || node != "node1" {
		t.Fatalf("exit: %v %v %s", ok, err, node)
	}
	if d := x.Data.(events.ProcessExited); d.ExitCode != 7 || d.Reason != "" || d.RequestID != "r1/main" || x.CauseID != "r1" {
		t.Fatalf("exit event %+v cause %q", d, x.CauseID)
	}
	if _, _, ok, _ := sim.Exit(ctx, "web", "main", 1); ok {
		t.Fatal("a second exit of an exited process")
	}
	other.RequestID = "r3/main"
	if _, err := c.Run(ctx, other); err != nil {
		t.Fatal(err)
	}
	stop, err := c.Stop(ctx, guestagent.StopRequest{RequestID: "r3/main"})
	if err != nil || len(stop.Processes) != 1 || stop.Processes[0].Exit == nil || stop.Processes[0].Exit.Reason != guestagent.ReasonStopped {
		t.Fatalf("stop: %+v, %v", stop, err)
	}
	other.RequestID = "r4/main"
	if _, err := c.Run(ctx, other); err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(ctx, ref, false); err != nil {
		t.Fatal(err)
	}
	if up, _ := d.Status(ctx, ref); up {
		t.Fatal("guest up after its stop")
	}
	if _, err := c.Ping(ctx); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("ping of a stopped guest: %v, want no responders", err)
	}
	// A forced stop and a crash end processes without a word.
	for _, end := range []func(){
		func() { _ = d.Stop(ctx, ref, true) },
		func() { sim.Crash("node1") },
	} {
		if err := d.Start(ctx, ref); err != nil {
			t.Fatal(err)
		}
		other.RequestID = events.NewID() + "/main"
		if _, err := c.Run(ctx, other); err != nil {
			t.Fatal(err)
		}
		end()
	}
	if err := d.Start(ctx, ref); err == nil {
		t.Fatal("a guest started on a crashed node")
	}

	var got []string
	if _, err := l.Replay(ctx, events.ReadOptions{}, func(e events.Event) error {
		if e.Source != guestagent.Source("webvm") {
			t.Errorf("source %s", e.Source)
		}
		s := events.ShortType(e.Type())
		if x, ok := e.Data.(events.ProcessExited); ok {
			s += ":" + x.Reason
		}
		got = append(got, s)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{"process.started", "process.exited:", "process.started", "process.exited:stopped",
		"process.started", "process.exited:agent_stopped", "process.started", "process.started"}
	if len(got) != len(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events %v, want %v", got, want)
		}
	}
}

// TestBeatsWhileARequestWaits: a guest whose request holds its lock (a run
// appending process.started to a server that answers late) keeps sending
// heartbeats, and so do the guests after it: one goroutine beats for all
// of them, and at 1,000 nodes one slow append held back every heartbeat
// behind it until thousands of guests were reported lost.
func TestBeatsWhileARequestWaits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := natsd.StartTest(t)
	nc := natsd.Connect(t, srv)
	l, err := events.Open(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	sim := New(ctx, l, 20*time.Millisecond)
	d := sim.Driver("node1")
	for _, name := range []string{"webvm", "dbvm"} {
		ref := hostmanager.GuestRef{Package: name, Node: "node1", Guest: config.Guest{Name: name, Driver: config.DriverProcess}}
		if err := d.Start(ctx, ref); err != nil {
			t.Fatal(err)
		}
	}
	beats, err := nc.SubscribeSync(guestagent.HeartbeatSubject("*"))
	if err != nil {
		t.Fatal(err)
	}
	sim.mu.Lock()
	held := sim.guests["node1/webvm"]
	sim.mu.Unlock()
	held.mu.Lock() // a request in flight
	defer held.mu.Unlock()
	from := map[string]int{}
	for from["webvm"] < 3 || from["dbvm"] < 3 {
		m, err := beats.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("heartbeats while webvm's lock is held: %v (got %v)", err, from)
		}
		var hb guestagent.Heartbeat
		if err := json.Unmarshal(m.Data, &hb); err != nil {
			t.Fatal(err)
		}
		from[hb.Guest]++
	}
}
