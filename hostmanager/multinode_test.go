package hostmanager

import (
	"strings"
	"testing"

	"github.com/vmguard/vmguard/events"
)

// mnYAML is cfgYAML with web a multi-node package.
func mnYAML(svc string) string {
	return strings.Replace(cfgYAML(svc, ""), "  - name: web\n", "  - name: web\n    package_type: multi_node\n", 1)
}

// TestMultiNodeInstance: this node's instance of a multi-node package starts
// under this node's placement, with this node's guest (<guest>-<node>);
// placements and events of the instances on other nodes neither halt it nor
// change its restart counters; `pkg halt` (no node, epoch 0) halts it.
func TestMultiNodeInstance(t *testing.T) {
	h := newHarness(t, mnYAML("restart: 1"))
	h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: "node2", Epoch: 1, Reason: "auto_run"})
	eq(t, "node2's placement", h.settle(), nil)
	h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: me, Epoch: 2, Reason: "auto_run"})
	eq(t, "this node's placement", h.settle(), []string{"package.starting", "guest.started", "process.started", "process.started", "package.started"})
	if g := h.inst().Config.Guest.Name; g != "webvm-node1" {
		t.Fatalf("guest %q, want webvm-node1", g)
	}
	if g := h.lastOf(events.TypeGuestStarted).Data.(events.GuestStarted).Guest; g != "webvm-node1" {
		t.Fatalf("guest.started of %q", g)
	}
	h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: "node3", Epoch: 3, Reason: "auto_run"})
	// node2's instance restarts and fails: nothing here.
	h.add("/vmguard/nodes/node2/host", "web", "", events.ServiceRestarting{Service: "a", Node: "node2", Epoch: 1, Attempt: 1})
	h.add("/vmguard/nodes/node2/host", "web", "", events.ServiceFailed{Service: "a", Node: "node2", Epoch: 1, Reason: "x"})
	h.add("/vmguard/nodes/node2/host", "web", "", events.PackageFailed{Node: "node2", Epoch: 1, Reason: "x"})
	if eq(t, "other nodes' instances", h.settle(), nil); h.inst().Stopping() || h.inst().Epoch != 2 {
		t.Fatalf("instance here: %+v", h.inst())
	}
	// This node's own counter: one restart allowed here.
	h.exit("a", 0)
	eq(t, "first exit here", h.settle(), []string{"service.restarting", "process.started"})
	if n := h.inst().Service("a").Restarts; n != 1 {
		t.Fatalf("restarts %d, want 1", n)
	}
	halting := h.add("/vmguard/cli/alice", "web", "", events.PackageHalting{Epoch: 0, Reason: "operator_halt", By: "alice"})
	eq(t, "pkg halt", h.settle(), []string{"process.exited", "process.exited", "guest.stopped", "package.halted"})
	if d := h.last().Data.(events.PackageHalted); d.Epoch != 2 || d.Node != me {
		t.Errorf("halted: %+v", d)
	}
	if c := h.lastOf(events.TypeGuestStopped).CauseID; c != halting.ID {
		t.Errorf("guest.stopped cause %s, want %s", c, halting.ID)
	}
}

// TestMultiNodeHaltBeforeStart: `pkg halt` of a multi-node package whose
// placement here has not started halts that placement here.
func TestMultiNodeHaltBeforeStart(t *testing.T) {
	h := newHarness(t, mnYAML(""))
	h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: me, Epoch: 1, Reason: "auto_run"})
	h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: "node2", Epoch: 2, Reason: "auto_run"})
	h.add("/vmguard/cli/alice", "web", "", events.PackageHalting{Epoch: 0, Reason: "operator_halt", By: "alice"})
	eq(t, "halted before start", h.settle(), []string{"package.halted"})
	if d := h.last().Data.(events.PackageHalted); d.Epoch != 1 || d.Node != me {
		t.Errorf("halted: %+v", d)
	}
}

// TestMultiNodeFailureWaitsOnlyHere: a failing instance of a multi-node
// package waits for a dependent that needs it on this node and runs here,
// not for one on another node (mon's instance there serves it).
func TestMultiNodeFailureWaitsOnlyHere(t *testing.T) {
	cfg := mnYAML("") + `  - name: app
    nodes: [node1, node2]
    dependencies: [{name: web, condition: up, location: same_node}]
    guest: {name: appvm}
    services:
      - {name: s, cmd: [sleep, "1000"]}
`
	for _, tc := range []struct {
		appNode string
		held    bool
	}{{me, true}, {"node2", false}} {
		h := newHarness(t, cfg)
		h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: me, Epoch: 1, Reason: "auto_run"})
		h.add("/vmguard/failover", "app", "", events.PackagePlaced{Node: tc.appNode, Epoch: 1, Reason: "auto_run"})
		h.settle()
		h.exit("a", 0)
		h.settle()
		if h.lastOf(events.TypeServiceFailed).Subject != "web" {
			t.Fatal("web's service did not fail")
		}
		held := false
		for _, a := range Pending(h.s, "web") {
			held = held || !a.NotBefore.IsZero()
		}
		if held != tc.held {
			t.Errorf("app on %s: web's stops held %v, want %v", tc.appNode, held, tc.held)
		}
	}
}

// TestTypeChangeReplacesFailoverInstance: web runs here as a failover
// package; the config makes it multi_node. A placement on another node
// then replaces it (its guest is webvm, not webvm-node1: the two kinds must
// not run at once), as the controller's fold counts it leaving; an
// instance started here as multi_node is not replaced by one elsewhere.
func TestTypeChangeReplacesFailoverInstance(t *testing.T) {
	h := newHarness(t, cfgYAML("", ""))
	h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: me, Epoch: 1, Reason: "auto_run"})
	h.settle()
	if g := h.inst().Config.Guest.Name; g != "webvm" {
		t.Fatalf("guest %q, want webvm", g)
	}
	h.config(mnYAML(""))
	eq(t, "the config alone", h.settle(), nil)
	h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: "node2", Epoch: 2, Reason: "auto_run"})
	eq(t, "an instance on node2", h.settle(), []string{"process.exited", "process.exited", "guest.stopped", "package.halted"})
	if d := h.last().Data.(events.PackageHalted); d.Epoch != 1 || d.Node != me || d.Reason != ReasonMoved {
		t.Errorf("halted: %+v", d)
	}
	h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: me, Epoch: 3, Reason: "auto_run"})
	h.settle()
	if in := h.inst(); in == nil || in.Epoch != 3 || in.Config.Guest.Name != "webvm-node1" {
		t.Fatalf("instance here: %+v", in)
	}
	h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: "node3", Epoch: 4, Reason: "auto_run"})
	if eq(t, "an instance on node3", h.settle(), nil); h.inst().Stopping() {
		t.Errorf("instance here stops: %+v", h.inst())
	}
}
