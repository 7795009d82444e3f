package hostmanager

import (
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

// successorYAML: app needs web up on its node; web waits at most 1m for it.
const successorYAML = `cluster: test
nodes: [node1, node2]
packages:
  - name: web
    nodes: [node1, node2]
    successor_halt_timeout: 1m
    guest: {name: webvm}
    services:
      - {name: a, cmd: [sleep, "1000"]}
  - name: app
    nodes: [node1, node2]
    dependencies: [{name: web, condition: up, location: same_node}]
    guest: {name: appvm}
    services:
      - {name: s, cmd: [sleep, "1000"]}
`

// startBoth places and starts web and app on this node.
func startBoth(t *testing.T) *harness {
	h := newHarness(t, successorYAML)
	h.place(me, "auto_run")
	h.add("/vmguard/failover", "app", "", events.PackagePlaced{Node: me, Epoch: 1, Reason: "auto_run"})
	h.settle()
	if h.inst() == nil || h.s.Package("app").Inst == nil || !h.s.Package("app").Inst.Started {
		t.Fatal("web and app not both started")
	}
	return h
}

// TestFailedWaitsForSuccessors: a package whose service fails halts only
// once the packages that depend on it (app) halted, as Serviceguard halts a
// package whose dependency fails first: its stops wait (NotBefore), at most
// its successor_halt_timeout from the failure.
func TestFailedWaitsForSuccessors(t *testing.T) {
	t.Run("app halts first", func(t *testing.T) {
		h := startBoth(t)
		h.exit("a", 0)
		eq(t, "web's failure", h.settle(), []string{"service.failed"})
		failedAt := h.lastOf(events.TypeServiceFailed).Time
		acts := Pending(h.s, "web")
		if len(acts) != 1 || acts[0].Kind != StopGuest || !acts[0].NotBefore.Equal(failedAt.Add(time.Minute)) {
			t.Fatalf("web's stops: %+v, want the guest stop held until the failure + 1m", acts)
		}
		if got := Affected(h.s, events.Event{Subject: "app", Data: events.PackageHalted{}}); len(got) != 2 || got[1] != "web" {
			t.Errorf("Affected by an app event: %v, want app and web", got)
		}
		h.add("/vmguard/failover", "app", "", events.PackageHalting{Node: me, Epoch: 1, Reason: "dependency: web"})
		eq(t, "app halts, then web", h.settle(), []string{"process.exited", "guest.stopped", "package.halted", "guest.stopped", "package.failed"})
		if h.log[len(h.log)-3].Subject != "app" || h.last().Subject != "web" {
			t.Errorf("order: app's package.halted, then web's stop: %s", shortTypes(h.log[len(h.log)-5:]))
		}
	})
	t.Run("at most successor_halt_timeout", func(t *testing.T) {
		h := startBoth(t)
		h.exit("a", 0)
		eq(t, "web's failure", h.settle(), []string{"service.failed"})
		h.advance(59 * time.Second)
		eq(t, "before the bound", h.settle(), nil)
		h.advance(time.Second)
		eq(t, "at the bound", h.settle(), []string{"guest.stopped", "package.failed"})
		if h.s.Package("app").Inst == nil {
			t.Error("app halted by the host manager: only the controller halts it")
		}
	})
	t.Run("an operator halt does not wait", func(t *testing.T) {
		h := startBoth(t)
		h.add("/vmguard/cli/op", "web", "", events.PackageHalting{Node: me, Epoch: 1, Reason: "x", By: "op"})
		for _, a := range Pending(h.s, "web") {
			if !a.NotBefore.IsZero() {
				t.Errorf("held: %+v", a)
			}
		}
	})
}
