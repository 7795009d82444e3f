package hostmanager

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// stopRecorder is a Driver that records forced stops.
type stopRecorder struct {
	mu    sync.Mutex
	stops []guardStop
}

type guardStop struct {
	guest string
	force bool
	at    time.Time
}

func (d *stopRecorder) Start(context.Context, GuestRef) error {
	return errors.New("the guard must never start a guest")
}
func (d *stopRecorder) Status(context.Context, GuestRef) (bool, error) {
	return true, nil
}
func (d *stopRecorder) Stop(_ context.Context, g GuestRef, force bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stops = append(d.stops, guardStop{g.Name(), force, time.Now()})
	return nil
}
func (d *stopRecorder) get() []guardStop {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]guardStop(nil), d.stops...)
}

// guardDir returns a fresh state directory for a guard, removed at the
// end of the test.
func guardDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "guard") // short: a unix socket path has a length limit
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// runGuard runs a guard of node1 on dir (cfg's other fields as given) with
// rec as its drivers until the test ends, and checks that Run then returns
// no error.
func runGuard(t *testing.T, dir string, rec *stopRecorder, cfg GuardConfig) {
	t.Helper()
	cfg.Node, cfg.StateDir = "node1", dir
	cfg.Drivers = map[string]Driver{config.DriverProcess: rec, config.DriverExec: rec}
	g, err := NewGuard(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("guard Run: %v", err)
		}
	})
}

// startGuard runs a guard on a fresh state dir with rec as its drivers.
func startGuard(t *testing.T, rec *stopRecorder, escalate []string) (string, net.Conn) {
	t.Helper()
	dir := guardDir(t)
	runGuard(t, dir, rec, GuardConfig{Escalate: escalate})
	var err error
	var c net.Conn
	waitUntil(t, 5*time.Second, "the guard's socket", func() bool {
		c, err = net.Dial("unix", GuardSocket(dir))
		return err == nil
	})
	t.Cleanup(func() { c.Close() })
	return dir, c
}

func sendPet(t *testing.T, c net.Conn, p pet) {
	t.Helper()
	b, _ := json.Marshal(p)
	if _, err := c.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
}

// waitUntil polls cond until it holds (natstest.WaitFor).
func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	natstest.WaitFor(t, within, what, cond)
}

// waitForcedStop waits for the guard's stop (what) and checks that it is
// one forced stop of webvm, not before deadline.
func (d *stopRecorder) waitForcedStop(t *testing.T, what string, deadline time.Time) {
	t.Helper()
	waitUntil(t, 10*time.Second, what, func() bool { return len(d.get()) > 0 })
	s := d.get()
	if len(s) != 1 || s[0].guest != "webvm" || !s[0].force {
		t.Fatalf("stops %+v, want one forced stop of webvm", s)
	}
	if s[0].at.Before(deadline) {
		t.Errorf("stopped at %s, before the deadline %s", s[0].at.Format(time.RFC3339Nano), deadline.Format(time.RFC3339Nano))
	}
}

var guardGuests = []GuestRef{{Package: "web", Node: "node1", Guest: config.Guest{Name: "webvm", Driver: config.DriverExec}}}

// A guard petted before each deadline does nothing; once the pets stop it
// force-stops the guests, not before the deadline, records it and escalates.
func TestGuardStopsGuestsAtDeadline(t *testing.T) {
	rec := &stopRecorder{}
	marker := filepath.Join(t.TempDir(), "escalated")
	dir, c := startGuard(t, rec, []string{"touch", marker})
	end := time.Now().Add(time.Second)
	var last time.Time
	for time.Now().Before(end) {
		last = time.Now().Add(300 * time.Millisecond)
		sendPet(t, c, pet{Holder: "h1", Deadline: last, StopWithin: time.Second, Guests: guardGuests})
		time.Sleep(100 * time.Millisecond) // the pet interval under test
	}
	if s := rec.get(); len(s) > 0 {
		t.Fatalf("stopped %+v while petted", s)
	}
	rec.waitForcedStop(t, "the guard's stop", last)
	waitUntil(t, 10*time.Second, "the escalation", func() bool { _, err := os.Stat(marker); return err == nil })
	waitUntil(t, 10*time.Second, "the action recorded", func() bool { a, _ := ReadGuardActions(dir); return len(a) > 0 })
	acts, err := ReadGuardActions(dir)
	if err != nil || len(acts) != 1 || !acts[0].Escalated || len(acts[0].Guests) != 1 {
		t.Fatalf("guard actions %+v, %v; want one, escalated, naming webvm", acts, err)
	}
}

// A fence from the host manager stops the guests at once (no escalation:
// the stop worked); a disarmed guard does nothing after its deadline; a
// second guard on the same state dir is refused; a later host manager's
// pets (a new connection) re-arm the same guard.
func TestGuardFenceDisarmReuse(t *testing.T) {
	rec := &stopRecorder{}
	marker := filepath.Join(t.TempDir(), "escalated")
	dir, c := startGuard(t, rec, []string{"touch", marker})
	sendPet(t, c, pet{Holder: "h1", Deadline: time.Now().Add(time.Hour), StopWithin: time.Second, Guests: guardGuests})
	sendPet(t, c, pet{Holder: "h1", Fence: "lease lost", Guests: guardGuests})
	waitUntil(t, 5*time.Second, "the stop on a fence", func() bool { return len(rec.get()) == 1 })
	sendPet(t, c, pet{Holder: "h1", Deadline: time.Now().Add(200 * time.Millisecond), StopWithin: time.Second, Guests: guardGuests})
	sendPet(t, c, pet{Holder: "h1", Disarm: true, Guests: []GuestRef{}})

	g2, err := NewGuard(GuardConfig{Node: "node1", StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := g2.Run(context.Background()); !errors.Is(err, ErrGuardRunning) {
		t.Errorf("second guard: %v, want ErrGuardRunning", err)
	}
	time.Sleep(time.Second) // past the disarmed deadline: nothing may happen
	if s := rec.get(); len(s) != 1 {
		t.Fatalf("stops %+v, want only the fence's", s)
	}
	c.Close() // the host manager dies
	c2, err := net.Dial("unix", GuardSocket(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	sendPet(t, c2, pet{Holder: "h2", Deadline: time.Now().Add(200 * time.Millisecond), StopWithin: time.Second, Guests: guardGuests})
	waitUntil(t, 5*time.Second, "the stop after h2's deadline", func() bool { return len(rec.get()) == 2 })
	waitUntil(t, 10*time.Second, "two actions recorded", func() bool { a, _ := ReadGuardActions(dir); return len(a) == 2 })
	acts, err := ReadGuardActions(dir)
	if err != nil || len(acts) != 2 {
		t.Fatalf("guard actions %+v, %v; want two: the fence, then the missed deadline", acts, err)
	}
	if acts[0].Escalated || acts[0].Reason != "the host manager lost its lease: lease lost" {
		t.Errorf("first guard action %+v, want the fence for the lost lease, not escalated", acts[0])
	}
	if !acts[1].Escalated {
		t.Errorf("second guard action %+v, want the missed deadline, escalated", acts[1])
	}
}

// A guard whose state directory is removed (its test, or an operator, is
// done with the node) exits instead of lingering.
func TestGuardExitsWhenItsSocketIsGone(t *testing.T) {
	dir, err := os.MkdirTemp("", "guard")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	g, err := NewGuard(GuardConfig{Node: "node1", StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(context.Background()) }()
	waitUntil(t, 5*time.Second, "the guard's socket", func() bool { _, err := os.Stat(GuardSocket(dir)); return err == nil })
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the guard still runs 10s after its state directory was removed")
	}
}

// A guard started with a first pet (the host manager's --pet) is armed by
// it alone: the host manager that started it may hang before it connects
// (SIGSTOP right after starting the guard), and a guard never petted would
// never act. It stops the guests at that pet's deadline, not before.
func TestGuardArmedByFirstPet(t *testing.T) {
	dir := guardDir(t)
	deadline := time.Now().Add(300 * time.Millisecond)
	first, _ := json.Marshal(pet{Holder: "h1", Deadline: deadline, StopWithin: time.Second, Guests: guardGuests})
	rec := &stopRecorder{}
	runGuard(t, dir, rec, GuardConfig{FirstPet: string(first)})
	rec.waitForcedStop(t, "the stop at the first pet's deadline", deadline)
	if _, err := NewGuard(GuardConfig{Node: "node1", StateDir: dir, FirstPet: "{"}); err == nil {
		t.Error("NewGuard took a first pet that is not JSON")
	}
}

// A guest-list update that replaces a pet not yet sent keeps that pet's
// deadline (a renewal's arming is never lost to a guest list), and a fence
// or disarm not yet sent is never replaced by a guest list.
func TestPetterSendKeepsDeadlineAndFence(t *testing.T) {
	p := newPetter("node1", t.TempDir(), "vmguard", nil, nil)
	deadline := time.Now().Add(time.Second).Round(0)
	p.send(pet{Holder: "h1", Deadline: deadline, StopWithin: time.Second})
	p.send(pet{Holder: "h1", Guests: guardGuests})
	if got := <-p.latest; !got.Deadline.Equal(deadline) || got.StopWithin != time.Second || len(got.Guests) != 1 {
		t.Errorf("deadline pet then guest list: sent %+v, want the deadline %s with the guests", got, deadline)
	}
	p.send(pet{Holder: "h1", Fence: "lease lost"})
	p.send(pet{Holder: "h1", Guests: guardGuests})
	if got := <-p.latest; got.Fence != "lease lost" || len(got.Guests) != 1 {
		t.Errorf("fence then guest list: sent %+v, want the fence with the guests", got)
	}
	later := deadline.Add(time.Second)
	p.send(pet{Holder: "h1", Deadline: deadline})
	p.send(pet{Holder: "h1", Deadline: later})
	if got := <-p.latest; !got.Deadline.Equal(later) {
		t.Errorf("two deadline pets: sent %+v, want the later deadline %s", got, later)
	}
}
