package hostmanager

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

func TestStartSequence(t *testing.T) {
	h := newHarness(t, cfgYAML("restart: 1", ""))
	placed := h.place(me, "auto_run")
	d, ok := Decide(h.s, "web")
	if !ok || d.Type() != events.TypePackageStarting || d.CauseID != placed.ID {
		t.Fatalf("after placed: %+v %v", d, ok)
	}
	if got := Pending(h.s, "web"); len(got) != 0 {
		t.Fatalf("pending before package.starting: %+v", got)
	}
	starting := h.decide("web")[0]
	acts := Pending(h.s, "web")
	if len(acts) != 1 || acts[0].Kind != StartGuest || acts[0].CauseID != starting.ID || acts[0].Guest.Name != "webvm" || acts[0].Guest.Driver != config.DriverProcess {
		t.Fatalf("after starting: %+v", acts)
	}
	h.perform(acts[0])
	gs := h.last()
	if gs.Type() != events.TypeGuestStarted || gs.CauseID != starting.ID {
		t.Fatalf("guest.started: %+v", gs)
	}
	acts = Pending(h.s, "web")
	if len(acts) != 2 {
		t.Fatalf("after guest.started: %+v", acts)
	}
	for i, name := range []string{"a", "b"} {
		a := acts[i]
		if a.Kind != RunService || a.Service.Name != name || a.RequestID != gs.ID+"/"+name || a.CauseID != gs.ID || !a.NotBefore.IsZero() || a.Service.Cmd[0] != "sleep" {
			t.Errorf("run %s: %+v", name, a)
		}
	}
	if _, ok := Decide(h.s, "web"); ok {
		t.Fatal("package.started before the services run")
	}
	h.perform(acts[0])
	if _, ok := Decide(h.s, "web"); ok {
		t.Fatal("package.started with one service of two")
	}
	h.perform(acts[1])
	d, ok = Decide(h.s, "web")
	if !ok || d.Type() != events.TypePackageStarted || d.CauseID != h.last().ID {
		t.Fatalf("after both started: %+v", d)
	}
	h.decide("web")
	if !h.inst().Started || len(Pending(h.s, "web")) != 0 {
		t.Fatalf("after package.started: %+v pending %+v", h.inst(), Pending(h.s, "web"))
	}
}

// TestRestartPolicy covers restart none / N / unlimited: every exit counts,
// code 0 included, until the limit; then service.failed and the halt.
func TestRestartPolicy(t *testing.T) {
	tests := []struct {
		restart  string
		restarts int // restarts before service.failed; -1: never fails (checked for 10)
		left     []int
	}{
		{"none", 0, nil},
		{"0", 0, nil},
		{"1", 1, []int{0}},
		{"3", 3, []int{2, 1, 0}},
		{"unlimited", -1, []int{-1, -1, -1, -1, -1, -1, -1, -1, -1, -1}},
	}
	for _, tt := range tests {
		t.Run(tt.restart, func(t *testing.T) {
			h := newHarness(t, cfgYAML("restart: "+tt.restart, ""))
			h.start()
			n := tt.restarts
			if n < 0 {
				n = 10
			}
			for i := range n {
				h.advance(time.Second)
				exit := h.exit("a", i%2) // exit 0 counts too
				got := h.settle()
				eq(t, "after exit", got, []string{"service.restarting", "process.started"})
				r := h.lastOf(events.TypeServiceRestarting)
				d := r.Data.(events.ServiceRestarting)
				if r.CauseID != exit.ID || d.Attempt != i+1 || d.RestartsLeft != tt.left[i] || d.DelayMS != 0 || d.Service != "a" || d.Epoch != 1 || d.Node != me {
					t.Errorf("restart %d: cause %s (exit %s) %+v", i+1, r.CauseID, exit.ID, d)
				}
				st := h.last().Data.(events.ProcessStarted)
				if st.RequestID != r.ID || h.last().CauseID != r.ID {
					t.Errorf("run request %q cause %q, want the restarting id %s", st.RequestID, h.last().CauseID, r.ID)
				}
			}
			if tt.restarts < 0 {
				return
			}
			exit := h.exit("a", 0)
			got := h.settle()
			eq(t, "last exit", got, []string{"service.failed", "process.exited", "guest.stopped", "package.failed"})
			f := h.lastOf(events.TypeServiceFailed)
			fd := f.Data.(events.ServiceFailed)
			if f.CauseID != exit.ID || fd.Restarts != tt.restarts || !strings.Contains(fd.Reason, "exited with code 0") {
				t.Errorf("service.failed: cause %s %+v", f.CauseID, fd)
			}
			stop := h.lastOf(events.TypeProcessExited).Data.(events.ProcessExited)
			if stop.Service != "b" || stop.Reason != "stopped" {
				t.Errorf("halt stopped %+v, want service b", stop)
			}
			pf := h.last()
			pd := pf.Data.(events.PackageFailed)
			if pd.Service != "a" || pd.Epoch != 1 || pd.Node != me || pf.CauseID != h.lastOf(events.TypeGuestStopped).ID {
				t.Errorf("package.failed: %+v cause %s", pd, pf.CauseID)
			}
			if h.s.Package("web").Inst != nil || h.processes() != 0 || h.guestUp["webvm"] {
				t.Error("package failed but something is left")
			}
		})
	}
}

func TestDecideRestartTable(t *testing.T) {
	at := t0.Add(time.Hour)
	win := func(d time.Duration) config.Duration { return config.Duration(d) }
	bo := &config.Backoff{Delay: config.Duration(time.Second), Factor: 3, Max: config.Duration(20 * time.Second)}
	tests := []struct {
		name    string
		spec    config.Service
		sv      ServiceState
		restart bool
		attempt int
		left    int
		delay   time.Duration
	}{
		{"none", config.Service{}, ServiceState{}, false, 0, 0, 0},
		{"N first", config.Service{Restart: config.Limit{N: 2}}, ServiceState{}, true, 1, 1, 0},
		{"N last", config.Service{Restart: config.Limit{N: 2}}, ServiceState{Restarts: 1}, true, 2, 0, 0},
		{"N used up", config.Service{Restart: config.Limit{N: 2}}, ServiceState{Restarts: 2}, false, 0, 0, 0},
		{"unlimited", config.Service{Restart: config.Unlimited}, ServiceState{Restarts: 1000}, true, 1001, -1, 0},
		{"window: old restarts do not count", config.Service{Restart: config.Limit{N: 2}, RestartWindow: win(time.Minute)},
			ServiceState{Restarts: 5, RestartTimes: []time.Time{at.Add(-3 * time.Minute), at.Add(-61 * time.Second)}}, true, 1, 1, 0},
		{"window: recent restarts count", config.Service{Restart: config.Limit{N: 2}, RestartWindow: win(time.Minute)},
			ServiceState{Restarts: 5, RestartTimes: []time.Time{at.Add(-3 * time.Minute), at.Add(-59 * time.Second)}}, true, 2, 0, 0},
		{"window: used up inside", config.Service{Restart: config.Limit{N: 2}, RestartWindow: win(time.Minute)},
			ServiceState{Restarts: 2, RestartTimes: []time.Time{at.Add(-30 * time.Second), at.Add(-time.Second)}}, false, 0, 0, 0},
		{"window: edge is outside", config.Service{Restart: config.Limit{N: 1}, RestartWindow: win(time.Minute)},
			ServiceState{Restarts: 1, RestartTimes: []time.Time{at.Add(-time.Minute)}}, true, 1, 0, 0},
		{"backoff 1", config.Service{Restart: config.Unlimited, Backoff: bo}, ServiceState{}, true, 1, -1, time.Second},
		{"backoff 3", config.Service{Restart: config.Unlimited, Backoff: bo}, ServiceState{Restarts: 2}, true, 3, -1, 9 * time.Second},
		{"backoff capped", config.Service{Restart: config.Unlimited, Backoff: bo}, ServiceState{Restarts: 3}, true, 4, -1, 20 * time.Second},
		{"backoff restarts from 1 in a new window", config.Service{Restart: config.Unlimited, Backoff: bo, RestartWindow: win(time.Minute)},
			ServiceState{Restarts: 9, RestartTimes: []time.Time{at.Add(-2 * time.Minute)}}, true, 1, -1, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := decideRestart(tt.spec, &tt.sv, at)
			if o.restart != tt.restart || (o.restart && (o.attempt != tt.attempt || o.left != tt.left || o.delay != tt.delay)) {
				t.Errorf("got %+v, want restart %v attempt %d left %d delay %v", o, tt.restart, tt.attempt, tt.left, tt.delay)
			}
		})
	}
}

func TestRestartWindowOverEventTimes(t *testing.T) {
	h := newHarness(t, cfgYAML("restart: 2\nrestart_window: 1m", ""))
	h.start()
	// Exits a minute apart never use up two restarts.
	for range 5 {
		h.advance(61 * time.Second)
		h.exit("a", 1)
		eq(t, "spaced exit", h.settle(), []string{"service.restarting", "process.started"})
	}
	if sv := h.inst().Service("a"); sv.Restarts != 5 || len(sv.RestartTimes) != 1 {
		t.Errorf("restarts %d, window times %v", sv.Restarts, sv.RestartTimes)
	}
	// Three quick exits: two restarts, then failed.
	h.advance(61 * time.Second)
	for range 2 {
		h.advance(time.Second)
		h.exit("a", 1)
		eq(t, "quick exit", h.settle(), []string{"service.restarting", "process.started"})
	}
	h.advance(time.Second)
	h.exit("a", 1)
	eq(t, "third quick exit", h.settle(), []string{"service.failed", "process.exited", "guest.stopped", "package.failed"})
}

func TestBackoffDelaysTheRun(t *testing.T) {
	h := newHarness(t, cfgYAML("restart: unlimited\nbackoff: {delay: 1s, factor: 2, max: 3s}", ""))
	h.start()
	for i, want := range []int64{1000, 2000, 3000, 3000} {
		h.exit("a", 1)
		eq(t, "exit", h.settle(), []string{"service.restarting"})
		r := h.last()
		if d := r.Data.(events.ServiceRestarting); d.DelayMS != want || d.Attempt != i+1 {
			t.Errorf("attempt %d: %+v, want delay %d", i+1, d, want)
		}
		acts := Pending(h.s, "web")
		if len(acts) != 1 || acts[0].Kind != RunService || !acts[0].NotBefore.Equal(r.Time.Add(time.Duration(want)*time.Millisecond)) || acts[0].RequestID != r.ID {
			t.Fatalf("pending: %+v", acts)
		}
		h.advance(time.Duration(want) * time.Millisecond)
		eq(t, "after the delay", h.settle(), []string{"process.started"})
	}
}

func TestExitReasons(t *testing.T) {
	tests := []struct {
		name string
		x    events.ProcessExited
		want string
	}{
		{"exit 0", events.ProcessExited{ExitCode: 0}, "exited with code 0"},
		{"signal", events.ProcessExited{ExitCode: -1, Signal: "SIGKILL"}, "killed by SIGKILL"},
		// A stop vmguard did not ask for (someone used the agent, or the
		// agent restarted) is a failure like any other exit.
		{"stopped by someone else", events.ProcessExited{ExitCode: -1, Signal: "SIGTERM", Reason: "stopped"}, "stopped (stopped)"},
		{"agent restart", events.ProcessExited{ExitCode: -1, Reason: "agent_restart"}, "stopped (agent_restart)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, cfgYAML("", ""))
			h.start()
			h.exitWith("b", tt.x)
			eq(t, "exit", h.settle(), []string{"service.failed", "process.exited", "guest.stopped", "package.failed"})
			if r := h.lastOf(events.TypeServiceFailed).Data.(events.ServiceFailed).Reason; !strings.HasPrefix(r, tt.want) {
				t.Errorf("reason %q, want %q...", r, tt.want)
			}
		})
	}
}

func TestOperatorHalt(t *testing.T) {
	h := newHarness(t, cfgYAML("restart: unlimited", ""))
	h.start()
	h.holdRuns = false
	halting := h.add("/vmguard/cli/alice", "web", "", events.PackageHalting{Node: me, Epoch: 1, Reason: "maintenance", By: "alice"})
	acts := Pending(h.s, "web")
	if len(acts) != 2 || acts[0].Kind != StopService || acts[1].Kind != StopService || acts[0].CauseID != halting.ID || acts[0].RequestID == "" {
		t.Fatalf("pending: %+v", acts)
	}
	if _, ok := Decide(h.s, "web"); ok {
		t.Fatal("a decision while processes run")
	}
	h.perform(acts[0]) // service a stops: not a failure
	if _, ok := Decide(h.s, "web"); ok {
		t.Fatal("decision with one process still running")
	}
	acts = Pending(h.s, "web")
	if len(acts) != 1 || acts[0].Kind != StopService || acts[0].Service.Name != "b" {
		t.Fatalf("pending after a stopped: %+v", acts)
	}
	h.perform(acts[0])
	acts = Pending(h.s, "web")
	if len(acts) != 1 || acts[0].Kind != StopGuest || acts[0].Force || acts[0].Reason != "maintenance" {
		t.Fatalf("pending after both stopped: %+v", acts)
	}
	if _, ok := Decide(h.s, "web"); ok {
		t.Fatal("package.halted with the guest up")
	}
	h.perform(acts[0])
	eq(t, "after guest stop", h.settle(), []string{"package.halted"})
	d := h.last().Data.(events.PackageHalted)
	if d.Reason != "maintenance" || d.Epoch != 1 || h.last().CauseID != h.lastOf(events.TypeGuestStopped).ID {
		t.Errorf("halted: %+v", d)
	}
	if h.s.Package("web").Inst != nil {
		t.Error("instance left after package.halted")
	}
	// A halt for another node or another epoch changes nothing here.
	h.place(me, "operator_run")
	h.settle()
	h.add("/vmguard/cli/alice", "web", "", events.PackageHalting{Node: "node2", Epoch: 2, Reason: "x"})
	h.add("/vmguard/cli/alice", "web", "", events.PackageHalting{Node: me, Epoch: 1, Reason: "x"})
	if h.inst().Stopping() || len(h.settle()) != 0 {
		t.Error("a halt of another node or epoch stopped the package")
	}
}

func TestHaltBeforeStart(t *testing.T) {
	h := newHarness(t, cfgYAML("", ""))
	h.add("/vmguard/nodes/node2/host", "web", "", events.PackagePlaced{Node: "node2", Epoch: 1, Reason: "auto_run"})
	h.add("/vmguard/nodes/node2/host", "web", "", events.PackageStarting{Node: "node2", Epoch: 1})
	h.place(me, "operator_move") // waits for epoch 1 to be released
	halting := h.add("/vmguard/cli/alice", "web", "", events.PackageHalting{Node: me, Epoch: 2, Reason: "no", By: "alice"})
	eq(t, "while waiting", h.settle(), nil)
	h.add("/vmguard/nodes/node2/host", "web", "", events.PackageHalted{Node: "node2", Epoch: 1, Reason: "moved"})
	eq(t, "released", h.settle(), []string{"package.halted"})
	if e := h.last(); e.CauseID != halting.ID || e.Data.(events.PackageHalted).Epoch != 2 || e.Data.(events.PackageHalted).Reason != "no" {
		t.Errorf("halted: %+v", e)
	}
}

// TestHaltWhileStarting: a halt that arrives while the guest start may be
// under way stops the guest before the package counts as halted.
func TestHaltWhileStarting(t *testing.T) {
	h := newHarness(t, cfgYAML("", ""))
	h.place(me, "auto_run")
	h.decide("web") // package.starting; the StartGuest is not performed yet
	h.add("/vmguard/cli/alice", "web", "", events.PackageHalting{Node: me, Epoch: 1, Reason: "stop"})
	if _, ok := Decide(h.s, "web"); ok {
		t.Fatal("package.halted while the guest may be starting")
	}
	acts := Pending(h.s, "web")
	if len(acts) != 1 || acts[0].Kind != StopGuest {
		t.Fatalf("pending: %+v", acts)
	}
	eq(t, "settle", h.settle(), []string{"guest.stopped", "package.halted"})
}

func TestWaitsForPreviousPlacement(t *testing.T) {
	for _, release := range []string{"halted", "failed", "node.lost", "node.fenced"} {
		t.Run(release, func(t *testing.T) {
			h := newHarness(t, cfgYAML("", ""))
			h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: "node2", Epoch: 1, Reason: "auto_run"})
			h.add("/vmguard/nodes/node2/host", "web", "", events.PackageStarting{Node: "node2", Epoch: 1})
			h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: me, Epoch: 2, Reason: "operator_move", PreviousNode: "node2"})
			// A node.lost of another node, and node2's events of old epochs, change nothing.
			h.add("/vmguard/failover", "node3", "", events.NodeLost{Reason: "lease expired"})
			eq(t, "before release", h.settle(), nil)
			var rel events.Event
			switch release {
			case "halted":
				rel = h.add("/vmguard/nodes/node2/host", "web", "", events.PackageHalted{Node: "node2", Epoch: 1, Reason: "moved"})
			case "failed":
				rel = h.add("/vmguard/nodes/node2/host", "web", "", events.PackageFailed{Node: "node2", Epoch: 1, Reason: "x"})
			case "node.lost":
				rel = h.add("/vmguard/failover", "node2", "", events.NodeLost{Reason: "lease expired"})
			case "node.fenced":
				rel = h.add("/vmguard/nodes/node2/host", "node2", "", events.NodeFenced{Reason: "lease lost"})
			}
			got := h.settle()
			if len(got) == 0 || got[0] != "package.starting" {
				t.Fatalf("after release: %v", got)
			}
			if c := h.lastOf(events.TypePackageStarting).CauseID; c != rel.ID {
				t.Errorf("package.starting cause %s, want the release %s", c, rel.ID)
			}
		})
	}
}

// TestNodeLostBeforePlacementDoesNotRelease: a node lost earlier does not
// release a placement made on it later.
func TestNodeLostBeforePlacementDoesNotRelease(t *testing.T) {
	h := newHarness(t, cfgYAML("", ""))
	h.add("/vmguard/failover", "node2", "", events.NodeLost{Reason: "lease expired"})
	h.add("/vmguard/nodes/node2/host", "node2", "", events.NodeJoined{})
	h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: "node2", Epoch: 1, Reason: "auto_run"})
	h.place(me, "operator_move")
	eq(t, "settle", h.settle(), nil)
}

// TestPlacedOnLostNodeIsVoid (sim finding place_on_lost_node): a
// placement stored after its node's loss or fence (a controller that
// paused between its check and its append) is void: this node does not
// start it, not even once it joins again, and a newer placement elsewhere
// does not wait for it. The controller's fold has it lost at once and
// places the package anew.
func TestPlacedOnLostNodeIsVoid(t *testing.T) {
	for _, down := range []string{"node.lost", "node.fenced"} {
		t.Run(down, func(t *testing.T) {
			h := newHarness(t, cfgYAML("", ""))
			h.add("/vmguard/nodes/"+me+"/host", me, "", events.NodeJoined{})
			h.add("/vmguard/nodes/node2/host", "node2", "", events.NodeJoined{})
			if down == "node.lost" {
				h.add("/vmguard/failover", me, "", events.NodeLost{Reason: "lease expired"})
			} else {
				h.add("/vmguard/nodes/"+me+"/host", me, "", events.NodeFenced{Reason: "lease lost"})
			}
			h.place(me, "auto_run")
			eq(t, "placed on the lost node", h.settle(), nil)
			h.add("/vmguard/nodes/"+me+"/host", me, "", events.NodeJoined{})
			eq(t, "joined again", h.settle(), nil)
			h.crash()
			eq(t, "joined again, replayed", h.settle(), nil)
			if c := h.s.Package("web").Current; !c.Released {
				t.Fatalf("placement on the lost node not released: %+v", c)
			}
			// The controller places it anew: that one starts.
			h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: me, Epoch: 2, Reason: "node_lost"})
			if got := h.settle(); len(got) == 0 || got[0] != "package.starting" {
				t.Fatalf("new placement after the join: %v", got)
			}
		})
	}
	t.Run("a newer placement elsewhere does not wait for it", func(t *testing.T) {
		h := newHarness(t, cfgYAML("", ""))
		h.add("/vmguard/nodes/node2/host", "node2", "", events.NodeJoined{})
		h.add("/vmguard/failover", "node2", "", events.NodeLost{Reason: "lease expired"})
		h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: "node2", Epoch: 1, Reason: "auto_run"})
		h.add("/vmguard/nodes/node2/host", "node2", "", events.NodeJoined{})
		h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: me, Epoch: 2, Reason: "node_lost", PreviousNode: "node2"})
		if got := h.settle(); len(got) == 0 || got[0] != "package.starting" {
			t.Fatalf("placement here after a void one on node2: %v", got)
		}
	})
}

func TestMovedElsewhere(t *testing.T) {
	h := newHarness(t, cfgYAML("restart: unlimited", ""))
	h.start()
	moved := h.add("/vmguard/cli/bob", "web", "", events.PackagePlaced{Node: "node2", Epoch: 2, Reason: "operator_move", PreviousNode: me, By: "bob"})
	eq(t, "after move", h.settle(), []string{"process.exited", "process.exited", "guest.stopped", "package.halted"})
	e := h.last()
	if d := e.Data.(events.PackageHalted); d.Reason != ReasonMoved || d.Epoch != 1 {
		t.Errorf("halted: %+v", d)
	}
	if a := h.lastOf(events.TypeGuestStopped).CauseID; a != moved.ID {
		t.Errorf("guest.stopped cause %s, want the placement %s", a, moved.ID)
	}
	// node2's events for epoch 2 change nothing here.
	h.add("/vmguard/nodes/node2/host", "web", "", events.GuestStarted{Guest: "webvm", Node: "node2", Epoch: 2})
	h.add(agentSource("webvm"), "web", "", events.ProcessExited{Guest: "webvm", Service: "a", PID: 5, RequestID: "x", Epoch: 2})
	eq(t, "node2's events", h.settle(), nil)
}

func TestSupersededBeforeStart(t *testing.T) {
	h := newHarness(t, cfgYAML("", ""))
	h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: "node2", Epoch: 1, Reason: "auto_run"})
	h.place(me, "failover") // epoch 2 waits for epoch 1
	p3 := h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: "node3", Epoch: 3, Reason: "operator_move"})
	// This node never started epoch 2: it releases it at once.
	eq(t, "settle", h.settle(), []string{"package.halted"})
	e := h.last()
	if d := e.Data.(events.PackageHalted); d.Epoch != 2 || d.Reason != ReasonMoved || d.Node != me || e.CauseID != p3.ID {
		t.Errorf("halted: %+v cause %s", d, e.CauseID)
	}
	if p := h.s.Package("web"); len(p.Prior) != 1 || p.Prior[0].Epoch != 1 {
		t.Errorf("prior placements: %+v", p.Prior)
	}
}

func TestReplacedOnThisNode(t *testing.T) {
	h := newHarness(t, cfgYAML("restart: 1", ""))
	h.start()
	h.exit("a", 1)
	h.settle()
	if h.inst().Service("a").Restarts != 1 {
		t.Fatal("restart not counted")
	}
	h.place(me, "operator_run")
	got := h.settle()
	want := []string{"process.exited", "process.exited", "guest.stopped", "package.halted",
		"package.starting", "guest.started", "process.started", "process.started", "package.started"}
	eq(t, "replaced", got, want)
	if d := h.lastOf(events.TypePackageHalted).Data.(events.PackageHalted); d.Reason != ReasonReplaced || d.Epoch != 1 {
		t.Errorf("halted: %+v", d)
	}
	// Counters start from zero on the new placement.
	in := h.inst()
	if in.Epoch != 2 || in.Service("a").Restarts != 0 {
		t.Errorf("new instance: epoch %d restarts %d", in.Epoch, in.Service("a").Restarts)
	}
	h.exit("a", 1)
	eq(t, "restart on the new placement", h.settle(), []string{"service.restarting", "process.started"})
}

// TestHaltBeforeStartWhileReplacing: web runs under epoch 1, is placed
// again on this node (epoch 2), and an operator halts epoch 2 before the
// old instance is down: epoch 2 must not start (sim seed 92).
func TestHaltBeforeStartWhileReplacing(t *testing.T) {
	h := newHarness(t, cfgYAML("restart: 1", ""))
	h.start()
	h.place(me, "node_lost")
	h.add("/vmguard/cli/op", "web", "", events.PackageHalting{Node: me, Epoch: 2, Reason: "operator_halt", By: "op"})
	got := h.settle()
	want := []string{"process.exited", "process.exited", "guest.stopped", "package.halted", "package.halted"}
	eq(t, "halted before start", got, want)
	if d := h.last().Data.(events.PackageHalted); d.Epoch != 2 || d.Reason != "operator_halt" {
		t.Errorf("last: %+v", d)
	}
	if h.s.Package("web").Inst != nil {
		t.Errorf("an instance runs: %+v", h.s.Package("web").Inst)
	}
}

func TestOlderEpochChangesNothing(t *testing.T) {
	h := newHarness(t, cfgYAML("", ""))
	h.start()
	before := snapshot(t, h.s)
	old := []events.Payload{
		events.ProcessExited{Guest: "webvm", Service: "a", PID: 1, RequestID: "r", Epoch: 0},
		events.GuestLost{Guest: "webvm", Node: me, Epoch: 7},
		events.GuestStopped{Guest: "webvm", Node: me, Epoch: 0},
		events.PackageHalting{Node: me, Epoch: 0, Reason: "x"},
		events.ServiceRestarting{Service: "a", Node: me, Epoch: 0, Attempt: 1},
		events.PackagePlaced{Node: "node2", Epoch: 1, Reason: "stale"},
	}
	for _, d := range old {
		h.add("/vmguard/test", "web", "", d)
	}
	after := snapshot(t, h.s)
	// Only the package's Seq and the state's Seq move.
	h.s.Packages["web"].Seq = before.Packages["web"].Seq
	h.s.Seq = before.Seq
	if got := snapshotJSON(t, h.s); got != snapshotJSON(t, before) {
		t.Errorf("old epochs changed the state:\n%s\n%s", snapshotJSON(t, before), got)
	}
	_ = after
	eq(t, "decisions", h.settle(), nil)
}

// TestUnknownExitsAreIgnored: exits of processes the state does not know
// (an old guest's, repeated) change nothing.
func TestUnknownExitsAreIgnored(t *testing.T) {
	h := newHarness(t, cfgYAML("restart: 1", ""))
	h.start()
	x := h.exit("a", 1)
	h.settle()
	// The same exit reported again under a new id.
	d := x.Data.(events.ProcessExited)
	h.add(agentSource("webvm"), "web", "", d)
	eq(t, "repeated exit", h.settle(), nil)
	if h.inst().Service("a").Restarts != 1 {
		t.Error("a repeated exit counted")
	}
}

func TestReset(t *testing.T) {
	h := newHarness(t, cfgYAML("restart: 1", "restart: 1"))
	h.start()
	h.exit("a", 1)
	h.exit("b", 1)
	h.settle()
	h.add("/vmguard/cli/alice", "web", "", events.PackageReset{Service: "a", By: "alice"})
	if h.inst().Service("a").Restarts != 0 || h.inst().Service("b").Restarts != 1 {
		t.Fatal("reset of a: wrong counters")
	}
	h.exit("a", 1)
	eq(t, "a after reset", h.settle(), []string{"service.restarting", "process.started"})
	h.add(agentSource("webvm"), "web", "", events.GuestLost{Guest: "webvm", Node: me, Epoch: 1})
	h.settle()
	if h.inst().Guest.Restarts != 1 {
		t.Fatal("guest restart not counted")
	}
	h.add("/vmguard/cli/alice", "web", "", events.PackageReset{By: "alice"})
	in := h.inst()
	if in.Service("a").Restarts != 0 || in.Service("b").Restarts != 0 || in.Guest.Restarts != 0 {
		t.Errorf("reset all: %+v %+v %+v", in.Service("a"), in.Service("b"), in.Guest)
	}
	h.exit("b", 1)
	eq(t, "b after reset", h.settle(), []string{"service.restarting", "process.started"})
}

func TestGuestLost(t *testing.T) {
	h := newHarness(t, cfgYAML("restart: 3", "restart: 1"))
	h.start()
	h.exit("a", 1)
	h.settle()
	lost := h.add("/vmguard/nodes/node1/host", "web", "", events.GuestLost{Guest: "webvm", Node: me, Epoch: 1})
	acts := Pending(h.s, "web")
	if len(acts) != 1 || acts[0].Kind != StopGuest || !acts[0].Force || acts[0].CauseID != lost.ID {
		t.Fatalf("pending after lost: %+v", acts)
	}
	got := h.settle()
	eq(t, "guest restart", got, []string{"guest.stopped", "guest.started", "process.started", "process.started"})
	gs := h.lastOf(events.TypeGuestStarted)
	if gs.CauseID != lost.ID {
		t.Errorf("guest.started cause %s, want the loss %s", gs.CauseID, lost.ID)
	}
	in := h.inst()
	if in.Guest.Restarts != 1 || in.Guest.Starts != 2 || in.Service("a").Restarts != 1 {
		t.Errorf("after guest restart: guest %+v, a restarts %d", in.Guest, in.Service("a").Restarts)
	}
	if rid := h.last().Data.(events.ProcessStarted).RequestID; !strings.HasPrefix(rid, gs.ID+"/") {
		t.Errorf("run request %q, want <guest.started id>/<service>", rid)
	}
	// The second loss uses up guest.restart: 1.
	h.add("/vmguard/nodes/node1/host", "web", "", events.GuestLost{Guest: "webvm", Node: me, Epoch: 1})
	acts = Pending(h.s, "web")
	if len(acts) != 1 || acts[0].Kind != StopGuest || !acts[0].Force {
		t.Fatalf("pending after second loss: %+v (processes in a lost guest are not asked to stop)", acts)
	}
	eq(t, "second loss", h.settle(), []string{"guest.stopped", "package.failed"})
	if r := h.last().Data.(events.PackageFailed).Reason; !strings.Contains(r, "lost") {
		t.Errorf("reason %q", r)
	}
}

func TestGuestLostNoRestart(t *testing.T) {
	h := newHarness(t, cfgYAML("", ""))
	h.start()
	h.add("/vmguard/nodes/node1/host", "web", "", events.GuestLost{Guest: "webvm", Node: me, Epoch: 1})
	eq(t, "loss", h.settle(), []string{"guest.stopped", "package.failed"})
}

func TestGuestDidNotStart(t *testing.T) {
	h := newHarness(t, cfgYAML("", "restart: 3"))
	h.failStart = "timed out after 30s"
	h.place(me, "auto_run")
	eq(t, "start", h.settle(), []string{"package.starting", "guest.stopped", "package.failed"})
	if r := h.last().Data.(events.PackageFailed).Reason; r != "guest webvm did not start: start failed: timed out after 30s" {
		t.Errorf("reason %q", r)
	}
}

func TestGuestStoppedByItself(t *testing.T) {
	h := newHarness(t, cfgYAML("", "restart: 1"))
	h.start()
	// The driver saw the guest go down (not asked): a guest restart.
	h.guestUp["webvm"] = false
	delete(h.running, "webvm")
	h.add("/vmguard/nodes/node1/host", "web", "", events.GuestStopped{Guest: "webvm", Node: me, Epoch: 1, Reason: "shut off"})
	eq(t, "restart", h.settle(), []string{"guest.started", "process.started", "process.started"})
	// A restart that fails to start uses up the restarts.
	h.failStart = "domain not found"
	h.add("/vmguard/nodes/node1/host", "web", "", events.GuestLost{Guest: "webvm", Node: me, Epoch: 1})
	eq(t, "lost again", h.settle(), []string{"guest.stopped", "package.failed"})
}

func TestFencedOrLostNode(t *testing.T) {
	for _, typ := range []string{"fenced", "lost"} {
		t.Run(typ, func(t *testing.T) {
			h := newHarness(t, cfgYAML("", ""))
			h.start()
			if typ == "fenced" {
				h.add(HostSource(me), me, "", events.NodeFenced{Reason: "lease lost"})
			} else {
				h.add("/vmguard/failover", me, "", events.NodeLost{Reason: "lease expired"})
			}
			if !h.inst().Stopping() {
				t.Fatal("instance not halting")
			}
			// The host stopped the guest at once when it fenced (or must,
			// if the cluster counts its node lost): the guest is forced off,
			// its processes go with it, no graceful stop of each service.
			acts := Pending(h.s, "web")
			if len(acts) != 1 || acts[0].Kind != StopGuest || !acts[0].Force {
				t.Fatalf("pending: %+v, want one forced StopGuest", acts)
			}
			got := h.settle()
			eq(t, "halt", got, []string{"guest.stopped", "package.halted"})
			if h.processes() != 0 || h.guestUp["webvm"] {
				t.Error("something still runs")
			}
		})
	}
}

func TestNotInConfig(t *testing.T) {
	h := newHarness(t, cfgYAML("", ""))
	h.add("/vmguard/failover", "db", "", events.PackagePlaced{Node: me, Epoch: 1, Reason: "operator_run"})
	eq(t, "unknown package", h.settle(), []string{"package.failed"})
	// Without any config nothing is decided.
	h2 := newHarness(t, "")
	h2.place(me, "auto_run")
	eq(t, "no config", h2.settle(), nil)
}

func TestStrayProcessIsStopped(t *testing.T) {
	h := newHarness(t, cfgYAML("", ""))
	h.start()
	st := h.add(agentSource("webvm"), "web", "", events.ProcessStarted{Guest: "webvm", Service: "a", PID: 999, RequestID: "who-asked", Epoch: 1})
	acts := Pending(h.s, "web")
	if len(acts) != 1 || acts[0].Kind != StopService || acts[0].RequestID != "who-asked" || acts[0].CauseID != st.ID {
		t.Fatalf("pending: %+v", acts)
	}
	h.add(agentSource("webvm"), "web", "", events.ProcessExited{Guest: "webvm", Service: "a", PID: 999, RequestID: "who-asked", Epoch: 1, Reason: "stopped"})
	if len(Pending(h.s, "web")) != 0 || len(h.settle()) != 0 {
		t.Error("the stray's exit led to something")
	}
}

func TestDuplicateResults(t *testing.T) {
	h := newHarness(t, cfgYAML("", "restart: 1"))
	h.start()
	in := h.inst()
	// guest.started and process.started appended twice (a retried append
	// under a new id) start nothing twice.
	gs := h.lastOf(events.TypeGuestStarted)
	h.add(gs.Source, "web", gs.CauseID, gs.Data)
	ps := h.lastOf(events.TypeProcessStarted)
	h.add(ps.Source, "web", ps.CauseID, ps.Data)
	if len(Pending(h.s, "web")) != 0 || len(in.Strays) != 0 || in.Guest.Starts != 1 {
		t.Errorf("duplicates changed things: %+v", in)
	}
	// A guest.stopped appended twice for the same stop is one stop.
	h.add("/vmguard/nodes/node1/host", "web", "", events.GuestLost{Guest: "webvm", Node: me, Epoch: 1})
	acts := Pending(h.s, "web")
	ev := acts[0].GuestStopped("lost")
	h.append(ev)
	h.append(ev)
	if g := h.inst().Guest; g.Phase != GuestStarting || g.Restarts != 1 || h.inst().Failure != nil {
		t.Errorf("after a repeated guest.stopped: %+v failure %+v", g, h.inst().Failure)
	}
}

func TestPackageFailedWaitsForEverything(t *testing.T) {
	h := newHarness(t, cfgYAML("", ""))
	h.start()
	h.exit("a", 3)
	h.decide("web") // service.failed
	if _, ok := Decide(h.s, "web"); ok {
		t.Fatal("decided with b running")
	}
	acts := Pending(h.s, "web")
	if len(acts) != 1 || acts[0].Kind != StopService || acts[0].Service.Name != "b" {
		t.Fatalf("pending: %+v", acts)
	}
	h.perform(acts[0])
	if _, ok := Decide(h.s, "web"); ok {
		t.Fatal("decided with the guest up")
	}
	h.perform(Pending(h.s, "web")[0])
	d, ok := Decide(h.s, "web")
	if !ok || d.Type() != events.TypePackageFailed {
		t.Fatalf("after everything stopped: %+v", d)
	}
}

func TestConfigChangeAppliesToRestartLimits(t *testing.T) {
	h := newHarness(t, cfgYAML("restart: 1", ""))
	h.start()
	h.exit("a", 1)
	h.settle()
	h.config(cfgYAML("restart: 3", ""))
	h.exit("a", 1)
	eq(t, "after raising the limit", h.settle(), []string{"service.restarting", "process.started"})
	if d := h.lastOf(events.TypeServiceRestarting).Data.(events.ServiceRestarting); d.Attempt != 2 || d.RestartsLeft != 1 {
		t.Errorf("restarting: %+v", d)
	}
}

// TestAffected: a package event affects its package; an event about a node
// or the cluster affects only the packages that concern this node (an
// instance here, or a placement here not yet released), kept up to date
// as placements come and go, and the same in a State rebuilt from its JSON.
func TestAffected(t *testing.T) {
	h := newHarness(t, cfgYAML("", ""))
	h.add("/vmguard/failover", "db", "", events.PackagePlaced{Node: "node2", Epoch: 1, Reason: "x"})
	if got := Affected(h.s, h.last()); !slices.Equal(got, []string{"db"}) {
		t.Errorf("package event: %v", got)
	}
	n := h.add("/vmguard/failover", "node2", "", events.NodeLost{Reason: "x"})
	if got := Affected(h.s, n); len(got) != 0 {
		t.Errorf("node event, nothing placed here: %v", got)
	}
	h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: me, Epoch: 1, Reason: "x"})
	h.add("/vmguard/failover", "db", "", events.PackagePlaced{Node: me, Epoch: 2, Reason: "x"})
	n = h.add("/vmguard/failover", "node3", "", events.NodeLost{Reason: "x"})
	if got := Affected(h.s, n); !slices.Equal(got, []string{"db", "web"}) {
		t.Errorf("node event, db and web placed here: %v", got)
	}
	h.add("/vmguard/failover", "db", "", events.PackagePlaced{Node: "node3", Epoch: 3, Reason: "x"})
	n = h.add("/vmguard/failover", "node2", "", events.NodeJoined{Version: "x"})
	if got := Affected(h.s, n); !slices.Equal(got, []string{"db", "web"}) {
		t.Errorf("node event, db moved away but its placement here not released yet: %v", got)
	}
	b, err := json.Marshal(h.s)
	if err != nil {
		t.Fatal(err)
	}
	var back State
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if got := back.LocalNames(); !slices.Equal(got, []string{"db", "web"}) {
		t.Errorf("state from JSON: %v", got)
	}
	// This node lost: every placement on it is released.
	n = h.add("/vmguard/failover", me, "", events.NodeLost{Reason: "x"})
	if got := Affected(h.s, n); len(got) != 0 {
		t.Errorf("node event after this node's loss released its placements: %v", got)
	}
}

func TestApplyIgnoresSeqZeroAndOld(t *testing.T) {
	s := NewState(me)
	e := events.Event{ID: "x", Source: "/t", Subject: "web", Time: t0, Data: events.PackagePlaced{Node: me, Epoch: 1, Reason: "x"}}
	if s.Apply(e) {
		t.Error("applied an event with Seq 0")
	}
	e.Seq = 5
	if !s.Apply(e) || s.Apply(e) {
		t.Error("seq 5 not applied once")
	}
	e.Seq, e.Data = 4, events.PackagePlaced{Node: me, Epoch: 2, Reason: "x"}
	if s.Apply(e) || s.Package("web").Current.Epoch != 1 {
		t.Error("an older seq about the same package was applied")
	}
	// Another package's and a node's event at a lower seq still apply.
	e.Subject = "db"
	if !s.Apply(e) {
		t.Error("another package's lower seq was refused")
	}
	n := events.Event{ID: "n", Source: "/t", Subject: "node2", Time: t0, Seq: 3, Data: events.NodeJoined{}}
	if !s.Apply(n) || s.Apply(n) {
		t.Error("node event")
	}
}

// Reasons built from outside text — an exit reason at its own limit, a
// service.failed reason wrapped by package.failed, an operator's halt
// reason — are cut to the schemas' limit where the core builds them (the
// harness fails on any event the log would refuse).
func TestDecideCutsReasons(t *testing.T) {
	long := strings.Repeat("é", events.MaxReason) // at the limit, 2 bytes a character
	t.Run("exit reason wrapped twice", func(t *testing.T) {
		h := newHarness(t, cfgYAML("", ""))
		h.start()
		h.exitWith("a", events.ProcessExited{ExitCode: 1, Reason: long})
		got := h.settle()
		eq(t, "after the exit", got, []string{"service.failed", "process.exited", "guest.stopped", "package.failed"})
		for _, typ := range []string{events.TypeServiceFailed, events.TypePackageFailed} {
			e := h.lastOf(typ)
			var r string
			switch d := e.Data.(type) {
			case events.ServiceFailed:
				r = d.Reason
			case events.PackageFailed:
				r = d.Reason
			}
			if !strings.Contains(r, "…(cut ") || !strings.HasSuffix(r, "restarts used up (restart: none)") {
				t.Errorf("%s reason does not keep its end or say it was cut: …%q", typ, r[max(0, len(r)-80):])
			}
		}
	})
	t.Run("operator halt reason", func(t *testing.T) {
		h := newHarness(t, cfgYAML("", ""))
		h.start()
		in := h.inst()
		h.add("/vmguard/cli/alice", "web", "", events.PackageHalting{Node: me, Epoch: in.Epoch, Reason: long, By: "alice"})
		h.settle()
		if r := h.lastOf(events.TypePackageHalted).Data.(events.PackageHalted).Reason; r != long {
			t.Errorf("a reason within the limit was changed: %d characters", len([]rune(r)))
		}
	})
}

// A run recorded as unreported (Action.Unreported) is an exit like any
// other: the restart policy decides, and a late process.started of that
// run is a stray to stop.
func TestUnreportedRunIsAnExit(t *testing.T) {
	h := newHarness(t, cfgYAML("restart: 1", ""))
	h.holdRuns = true
	h.place(me, "auto_run")
	h.settle()
	var run Action
	for _, a := range Pending(h.s, "web") {
		if a.Kind == RunService && a.Service.Name == "a" {
			run = a
		}
	}
	if run.Kind != RunService {
		t.Fatalf("no run of a pending: %+v", Pending(h.s, "web"))
	}
	h.append(run.Unreported(77))
	d, ok := Decide(h.s, "web")
	if !ok || d.Type() != events.TypeServiceRestarting || d.CauseID != h.last().ID {
		t.Fatalf("after the unreported run: %+v %v", d, ok)
	}
	h.decide("web")
	h.add(agentSource("webvm"), "web", run.CauseID, events.ProcessStarted{Guest: "webvm", Service: "a", PID: 77, RequestID: run.RequestID, Epoch: run.Epoch})
	var stray bool
	for _, a := range Pending(h.s, "web") {
		if a.Kind == StopService && a.RequestID == run.RequestID {
			stray = true
		}
	}
	if !stray {
		t.Fatalf("the late process.started is not stopped: %+v", Pending(h.s, "web"))
	}
}
