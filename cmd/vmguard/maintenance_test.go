package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/failover"
	"github.com/vmguard/vmguard/internal/lease"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// nodeStateOf returns node's STATE in `vmguard status -o json`.
func (f *faultEnv) nodeStateOf(node string) failover.NodeView {
	f.t.Helper()
	var v failover.View
	out := f.cli("status", "-o", "json")
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		f.t.Fatalf("status -o json: %v\n%s", err, out)
	}
	for _, n := range v.Nodes {
		if n.Name == node {
			return n
		}
	}
	f.t.Fatalf("status names no node %s:\n%s", node, out)
	return failover.NodeView{}
}

// leaseOf reads node's lease as its bucket holds it now; false if it
// cannot (yet).
func (f *faultEnv) leaseOf(node string) (lease.Value, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	kv, err := lease.Open(ctx, f.l.JetStream())
	if err != nil {
		return lease.Value{}, false
	}
	e, err := kv.Get(ctx, node)
	if err != nil {
		return lease.Value{}, false
	}
	v, err := lease.Decode(e.Value())
	return v, err == nil
}

// waitLeaseFrozen waits until node's lease carries the freeze's end: its
// host manager read node.frozen and renewed since, so its agents and its
// guard know.
func (f *faultEnv) waitLeaseFrozen(node string) time.Time {
	f.t.Helper()
	var until time.Time
	natstest.WaitFor(f.t, 20*time.Second, "the lease of "+node+" to carry frozen_until", func() bool {
		v, ok := f.leaseOf(node)
		until = v.FrozenUntil
		return ok && !until.IsZero()
	})
	return until
}

// holdStill checks for d that nothing moves app away from node and that
// its agent (pid) keeps running: no node.lost of node, no placement of app,
// no guest.stopped or package.failed of app. It fails at once when one
// appears.
func (f *faultEnv) holdStill(node string, pid int, after uint64, d time.Duration) {
	f.t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		for _, e := range f.events() {
			if e.Seq <= after {
				continue
			}
			switch e.Data.(type) {
			case events.NodeLost, events.NodeFenced:
				if e.Subject == node {
					f.dumpLog()
					f.t.Fatalf("%s of frozen node %s at seq %d", e.Type(), node, e.Seq)
				}
			case events.PackagePlaced, events.GuestStopped, events.PackageFailed, events.PackageHalting:
				if e.Subject == "app" {
					f.dumpLog()
					f.t.Fatalf("%s of app at seq %d while %s is frozen", e.Type(), e.Seq, node)
				}
			}
		}
		if !alive(pid) {
			f.t.Fatalf("agent pid %d of appvm on frozen node %s is gone", pid, node)
		}
		time.Sleep(200 * time.Millisecond) // poll interval of the hold
	}
}

// appRunning starts a fault environment running app (longRunning) and
// waits until app runs; it returns the environment, app's node and the pid
// of app's agent there.
func appRunning(t *testing.T) (*faultEnv, string, int) {
	t.Helper()
	f, first := runningApp(t)
	node := startedNode(first)
	return f, node, f.agentPID(node, "appvm")
}

// waitNodeEvent waits up to 10 s for an event of type typ about node and
// returns it; what names it.
func (f *faultEnv) waitNodeEvent(what, typ, node string) events.Event {
	f.t.Helper()
	return f.waitFor(10*time.Second, what, func(e events.Event) bool {
		return e.Type() == typ && e.Subject == node
	})
}

// TestMaintenanceDrainThenRun: `node drain` moves app off its node by its
// policy (placement reason node_drained, caused by node.drained, which
// explain names), status shows the node in maintenance, nothing is placed
// back on it (a move there is refused) until `node run`, after which app
// may move back; verify is clean.
func TestMaintenanceDrainThenRun(t *testing.T) {
	f := newFaultEnv(t, faultConfig(longRunning))
	first := f.waitRunning(0, 30*time.Second, "app running")
	node := startedNode(first)
	out := f.cli("node", "drain", node, "--reason", "bios update", "--by", "alice")
	if !strings.Contains(out, "node.drained "+node) {
		t.Errorf("node drain printed %q", out)
	}
	drained := f.waitNodeEvent("node.drained", events.TypeNodeDrained, node)
	moved := f.waitRunning(drained.Seq, 30*time.Second, "app running after the drain")
	if startedNode(moved) == node {
		t.Fatalf("app runs on drained %s", node)
	}
	var placed events.Event
	for _, e := range f.events() {
		if d, ok := e.Data.(events.PackagePlaced); ok && e.Subject == "app" && e.Seq > drained.Seq && placed.Seq == 0 {
			placed = e
			if failover.ReasonCode(d.Reason) != failover.ReasonNodeDrained || e.CauseID != drained.ID {
				t.Errorf("placement after the drain: reason %q cause %s, want %s caused by the node.drained %s", d.Reason, e.CauseID, failover.ReasonNodeDrained, drained.ID)
			}
		}
	}
	if n := f.nodeStateOf(node); n.State != "maintenance" || !strings.Contains(n.Hold, "drained by alice (bios update)") {
		t.Errorf("status of %s: state %q hold %q, want maintenance, drained by alice (bios update)", node, n.State, n.Hold)
	}
	if ex := f.cli("explain", "app"); !strings.Contains(ex, "node.drained") {
		t.Errorf("explain app does not name the drain:\n%s", ex)
	}
	if out, err := runVmguard(f.url, "pkg", "move", "app", "-n", node); err == nil || !strings.Contains(out, "is in maintenance") {
		t.Errorf("pkg move onto the drained node: err %v, output %q; want it refused", err, out)
	}

	f.cli("node", "run", node, "--by", "alice")
	resumed := f.waitNodeEvent("node.resumed", events.TypeNodeResumed, node)
	if n := f.nodeStateOf(node); n.State != "running" || n.Hold != "" {
		t.Errorf("status of %s after node run: state %q hold %q, want running", node, n.State, n.Hold)
	}
	f.cli("pkg", "move", "app", "-n", node)
	back := f.waitRunning(resumed.Seq, 30*time.Second, "app running back on "+node)
	if startedNode(back) != node {
		t.Errorf("app runs on %s after the move back, want %s", startedNode(back), node)
	}
	f.checkOneServiceProcess(3 * time.Second)
	f.verify()
}

// TestMaintenanceFreezeKillHostManagerThaw: a frozen node's host manager
// is killed (an upgrade): its guest keeps running, no node.lost, no
// failover, its guard does not act; a new host manager takes over while
// frozen and decides nothing; after `node thaw` it decides again (a move
// away halts its instance); verify is clean.
func TestMaintenanceFreezeKillHostManagerThaw(t *testing.T) {
	f, node, pid := appRunning(t)
	f.cli("node", "freeze", node, "--for", "5m", "--reason", "upgrade vmguard", "--by", "bob")
	frozen := f.waitNodeEvent("node.frozen", events.TypeNodeFrozen, node)
	f.waitLeaseFrozen(node)
	if n := f.nodeStateOf(node); n.State != "frozen" || !strings.Contains(n.Hold, "Frozen: by bob") {
		t.Errorf("status of %s: state %q hold %q, want frozen by bob", node, n.State, n.Hold)
	}
	if ex := f.cli("explain", "app"); !strings.Contains(ex, "node "+node+": Frozen: by bob") {
		t.Errorf("explain app does not name the freeze:\n%s", ex)
	}
	f.kill9(node)
	// Three node_timeouts: the lease expires, the agent's fence time, the
	// guard's deadline and the controller's check all pass.
	f.holdStill(node, pid, frozen.Seq, 3*faultNodeTimeout)
	f.startHost(node)
	f.waitLeaseFrozen(node) // the new host manager holds the lease, still frozen
	f.holdStill(node, pid, frozen.Seq, faultNodeTimeout)
	if acts := f.guardActions(node); len(acts) != 0 {
		t.Errorf("guard of frozen %s acted: %+v", node, acts)
	}

	f.cli("node", "thaw", node, "--by", "bob")
	thawed := f.waitNodeEvent("node.thawed", events.TypeNodeThawed, node)
	if !alive(pid) {
		t.Errorf("agent pid %d of appvm gone by the thaw", pid)
	}
	f.cli("pkg", "move", "app", "-n", other(node))
	moved := f.waitRunning(thawed.Seq, 30*time.Second, "app running on "+other(node)+" after the thaw")
	if startedNode(moved) != other(node) {
		t.Errorf("app runs on %s, want %s", startedNode(moved), other(node))
	}
	for _, e := range f.events() {
		if e.Type() == events.TypeNodeLost && e.Subject == node {
			t.Errorf("node.lost of %s at seq %d", node, e.Seq)
		}
	}
	f.checkOneServiceProcess(3 * time.Second)
	f.verify()
}

// TestMaintenanceFreezeExpires: a freeze --for ends by itself with the
// controller's node.thawed (reason expired). With the node's host manager
// killed during the freeze, the freeze's end bounds everything: no
// node.lost before it, then the guard stops the guest, node.lost follows
// (not before the end + node_timeout) and app fails over, its old agent
// gone before guest.started on the other node.
func TestMaintenanceFreezeExpires(t *testing.T) {
	f, node, pid := appRunning(t)
	forD := 2 * faultNodeTimeout
	f.cli("node", "freeze", node, "--for", forD.String())
	frozen := f.waitNodeEvent("node.frozen", events.TypeNodeFrozen, node)
	until := frozen.Data.(events.NodeFrozen).Until
	f.waitLeaseFrozen(node)
	f.kill9(node)
	stop := make(chan struct{})
	defer close(stop)
	gone := watchGone(pid, stop)
	if d := time.Until(until); d > 0 {
		f.holdStill(node, pid, frozen.Seq, d)
	}
	thawed := f.waitFor(4*faultNodeTimeout, "node.thawed (expired)", func(e events.Event) bool {
		return e.Type() == events.TypeNodeThawed && e.Subject == node
	})
	if d := thawed.Data.(events.NodeThawed); d.Reason != failover.ReasonFreezeExpired || thawed.Source != failover.Source || thawed.CauseID != frozen.ID {
		t.Errorf("node.thawed %+v source %s cause %s, want reason expired from the controller caused by node.frozen", d, thawed.Source, thawed.CauseID)
	}
	if thawed.Time.Before(until) {
		t.Errorf("node.thawed at %s, before the freeze's end %s", thawed.Time, until)
	}
	started := f.waitFor(4*(faultNodeTimeout+2*time.Second), "guest.started for app on "+other(node), func(e events.Event) bool {
		d, ok := e.Data.(events.GuestStarted)
		return ok && e.Subject == "app" && d.Node != node
	})
	var lost events.Event
	for _, e := range f.events() {
		if e.Type() == events.TypeNodeLost && e.Subject == node && lost.Seq == 0 {
			lost = e
		}
	}
	if lost.Seq == 0 || lost.Seq > started.Seq {
		t.Fatalf("no node.lost of %s before guest.started at seq %d", node, started.Seq)
	}
	if min := until.Add(faultNodeTimeout); lost.Time.Before(min) {
		t.Errorf("node.lost at %s, before the freeze's end + node_timeout %s", lost.Time, min)
	}
	goneAt := goneBefore(t, gone, pid, node, started)
	t.Logf("freeze end %s; agent gone +%v; node.lost +%v; guest.started on %s +%v (times after the end)", until.Format(time.RFC3339Nano),
		goneAt.Sub(until).Round(time.Millisecond), lost.Time.Sub(until).Round(time.Millisecond), other(node), started.Time.Sub(until).Round(time.Millisecond))
	f.verify()
}

// goneBefore returns when the agent pid of appvm on node ended (gone, from
// watchGone), which must be before app's guest.started on the other node.
func goneBefore(t *testing.T, gone <-chan time.Time, pid int, node string, started events.Event) time.Time {
	t.Helper()
	var goneAt time.Time
	select {
	case goneAt = <-gone:
	case <-time.After(time.Second):
		t.Fatalf("agent pid %d of appvm on %s still runs after app started on %s", pid, node, other(node))
	}
	if !goneAt.Before(started.Time) {
		t.Errorf("agent gone at %s, not before guest.started at %s", goneAt.Format(time.RFC3339Nano), started.Time.Format(time.RFC3339Nano))
	}
	return goneAt
}

// TestMaintenanceThawRearms: once a node is thawed and its host manager
// renewed its lease unfrozen, a kill -9 of that host manager is a plain
// node loss again: the guard stops the guest and app fails over within
// the usual bound, not at the (much later) end the freeze was given.
func TestMaintenanceThawRearms(t *testing.T) {
	f, node, pid := appRunning(t)
	f.cli("node", "freeze", node, "--for", "1h")
	f.waitLeaseFrozen(node)
	f.cli("node", "thaw", node)
	natstest.WaitFor(t, 20*time.Second, "the lease of "+node+" without frozen_until", func() bool {
		v, ok := f.leaseOf(node)
		return ok && v.FrozenUntil.IsZero()
	})
	// The controller must have read the unfrozen lease to count the coming
	// lapse as a loss before the freeze's end an hour away; it says so.
	natstest.WaitFor(t, 30*time.Second, "the controller re-arms "+node, func() bool {
		return strings.Contains(f.logs["failover"].String(), "node re-armed after its thaw")
	})
	stop := make(chan struct{})
	defer close(stop)
	gone := watchGone(pid, stop)
	killed := time.Now()
	f.kill9(node)
	started := f.waitFor(4*(faultNodeTimeout+2*time.Second), "guest.started for app on "+other(node), func(e events.Event) bool {
		d, ok := e.Data.(events.GuestStarted)
		return ok && e.Subject == "app" && d.Node != node
	})
	goneAt := goneBefore(t, gone, pid, node, started)
	t.Logf("kill -9 after the thaw: agent gone +%v, guest.started on %s +%v", goneAt.Sub(killed).Round(time.Millisecond), other(node), started.Time.Sub(killed).Round(time.Millisecond))
	f.verify()
}

// runVmguard runs one vmguard command and returns its combined output and
// error (a refused command is not a test failure here).
func runVmguard(url string, args ...string) (string, error) {
	out, err := exec.Command(vmguardBin, append([]string{"--nats", url}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("vmguard %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}
