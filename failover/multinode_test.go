package failover

import (
	"testing"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// monPkg is a multi-node package on every node.
func monPkg() config.Package {
	p := testPkg("mon", "node1", "node2", "node3")
	p.Type = config.TypeMultiNode
	return p
}

// monOnAll writes a cluster of pkgs (mon among them), joins node1, node2
// and node3 and places and starts mon on each, epochs 1, 2, 3.
func monOnAll(l *logb, pkgs ...config.Package) {
	l.config(testCluster(pkgs...))
	l.join("node1", "node2", "node3")
	for i, n := range []string{"node1", "node2", "node3"} {
		l.run("mon", n, uint64(i+1))
	}
}

// TestDecideMultiNode: a multi-node package is placed on every eligible
// node, each under its own epoch; a node lost loses its instance only (no
// failover), placed again when the node joins; an instance failed stays
// failed on its node until a reset; a halted node's instance halts; a
// failover package that needs it on its node goes where it runs.
func TestDecideMultiNode(t *testing.T) {
	mon := monPkg()
	web := testPkg("web", "node1", "node2", "node3")
	web.Dependencies = []config.Dependency{{Name: "mon", Condition: config.DependUp, Location: config.SameNode}}
	tests := []struct {
		name  string
		build func(l *logb)
		want  string
		note  string // a substring of State.Note(mon), if set
	}{
		{"every node, one epoch each", func(l *logb) {
			l.join("node1", "node2", "node3")
			l.config(testCluster(mon))
		}, "mon->node1 epoch=1 reason=auto_run cause=e4; mon->node2 epoch=2 reason=auto_run cause=e4; mon->node3 epoch=3 reason=auto_run cause=e4", ""},
		{"a node joins: an instance there", func(l *logb) {
			l.config(testCluster(mon))
			l.join("node1", "node2")
			l.run("mon", "node1", 1)
			l.run("mon", "node2", 2)
			l.join("node3")
		}, "mon->node3 epoch=3 reason=auto_run cause=e10", ""},
		{"a node lost: no failover", func(l *logb) {
			monOnAll(l, mon)
			l.lost("node2")
		}, "", "node2: waiting for the node"},
		{"the lost node joins again: placed there again", func(l *logb) {
			monOnAll(l, mon)
			l.lost("node2")
			l.join("node2")
		}, "mon->node2 epoch=4 reason=auto_run cause=e15", ""},
		{"an instance failed: not there again", func(l *logb) {
			monOnAll(l, mon)
			l.failed("mon", "node1", 1)
		}, "", "node1: failed there"},
		{"reset: placed there again", func(l *logb) {
			monOnAll(l, mon)
			l.failed("mon", "node1", 1)
			l.add("mon", events.PackageReset{By: "op"}, "")
		}, "mon->node1 epoch=4 reason=auto_run cause=e15", ""},
		{"a node halted: its instance halts", func(l *logb) {
			monOnAll(l, mon)
			l.add("node3", events.NodeHalted{By: "op", Reason: "maintenance"}, "")
		}, "package.halting mon node=node3 epoch=3 reason=node_halted cause=e14", ""},
		{"a failover package that needs it on its node", func(l *logb) {
			monOnAll(l, mon, web)
			l.failed("mon", "node1", 1)
		}, "web->node2 epoch=1 reason=auto_run cause=e14", ""},
		{"its instance under the dependent fails: the dependent halts", func(l *logb) {
			monOnAll(l, mon, web)
			l.run("web", "node1", 1)
			l.failed("mon", "node1", 1)
		}, `package.halting web node=node1 epoch=1 reason="dependency: dependency mon up same_node: mon runs on node2, node3 only" cause=e17`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, s, _ := decideCase(t, tt.build, tt.want, "mon", tt.note)
			// Reconcile agrees (each caused by what made it due), and a replay twice gives the same state.
			if b, w := noCause(brief(Reconcile(s))), noCause(tt.want); b != w {
				t.Errorf("Reconcile:\n got %s\nwant %s", b, w)
			}
			twice := Fold(append(append([]events.Event{}, l.evs...), l.evs...))
			if !equalStates(twice, s) {
				t.Error("a replay of the log twice folds another state")
			}
		})
	}
}

// TestMultiNodeState: each instance has its own phase and per-node restart
// counters; the package shows the most alive phase.
func TestMultiNodeState(t *testing.T) {
	l := newLog(t)
	monOnAll(l, monPkg())
	l.add("mon", events.ServiceRestarting{Service: "app", Node: "node1", Epoch: 1, Attempt: 1}, "")
	l.add("mon", events.ServiceRestarting{Service: "app", Node: "node1", Epoch: 1, Attempt: 2}, "")
	l.add("mon", events.ServiceRestarting{Service: "app", Node: "node3", Epoch: 3, Attempt: 1}, "")
	l.failed("mon", "node2", 2)
	s := l.state()
	p := s.Package("mon")
	for node, want := range map[string]int{"node1": 2, "node2": 0, "node3": 1} {
		in := p.Instances[node]
		if got := in.Services["app"]; (got == nil && want != 0) || (got != nil && got.Restarts != want) {
			t.Errorf("%s restarts %+v, want %d", node, got, want)
		}
	}
	if p.Phase != PhaseRunning || p.Epoch != 3 || p.Node != "" || p.Instances["node2"].Phase != PhaseFailed || !p.FailedOn("node2") {
		t.Errorf("package %+v, node2 %+v", p, p.Instances["node2"])
	}
	if !s.RunningOn("mon", "node1") || s.RunningOn("mon", "node2") {
		t.Error("RunningOn")
	}
	if c := s.Clone(); !equalStates(c, s) {
		t.Error("Clone differs")
	}
}

// TestMultiNodeCommands: pkg halt halts every instance (no node, epoch 0)
// and turns auto_run off; pkg halt -n halts one instance and turns the
// package's switching off there; pkg run -n turns it on again and places
// there; pkg move is refused.
func TestMultiNodeCommands(t *testing.T) {
	base := func() *logb {
		l := newLog(t)
		monOnAll(l, monPkg())
		return l
	}
	do := func(l *logb, cmd Command) []events.Event {
		t.Helper()
		cmd.By = "op"
		evs, err := l.state().Command(cmd)
		if err != nil {
			t.Fatalf("%s: %v", cmd.Op, err)
		}
		l.applyAll(evs)
		return evs
	}
	l := base()
	if b := brief(do(l, Command{Op: OpHalt, Package: "mon"})); b != "package.halting mon reason=operator_halt by=op" {
		t.Errorf("halt: %s", b)
	}
	s := l.state()
	for n, in := range s.Package("mon").Instances {
		if in.Phase != PhaseHalting {
			t.Errorf("%s: %s", n, in.Phase)
		}
	}
	if s.AutoRunEnabled("mon") || len(Reconcile(s)) != 0 {
		t.Errorf("after halt: auto_run %v, due %s", s.AutoRunEnabled("mon"), brief(Reconcile(s)))
	}

	l = base()
	if b := brief(do(l, Command{Op: OpHalt, Package: "mon", Node: "node2"})); b != "package.halting mon node=node2 epoch=2 reason=operator_halt by=op" {
		t.Errorf("halt -n: %s", b)
	}
	l.add("mon", events.PackageHalted{Node: "node2", Epoch: 2, Reason: "operator_halt"}, "")
	s = l.state()
	if !s.AutoRunEnabled("mon") || s.Package("mon").SwitchingEnabled("node2") || s.Package("mon").Instances["node1"].Phase != PhaseRunning {
		t.Errorf("after halt -n: %+v", s.Package("mon"))
	}
	if due := Reconcile(s); len(due) != 0 {
		t.Errorf("placed again after halt -n: %s", brief(due))
	}
	if b := brief(do(l, Command{Op: OpRun, Package: "mon", Node: "node2"})); b != "package.switching_changed mon node=node2 enabled=true by=op; mon->node2 epoch=4 reason=operator_run by=op cause=" {
		t.Errorf("run -n: %s", b)
	}
	if _, err := l.state().Command(Command{Op: OpMove, Package: "mon", Node: "node1", By: "op"}); err == nil {
		t.Error("move accepted")
	}
	if _, err := l.state().Command(Command{Op: OpRun, Package: "mon", Node: "node1", By: "op"}); err == nil {
		t.Error("run on a node where it runs accepted")
	}
}

// TestExplainInstances: each instance of a multi-node package has its own
// chain of causes, from its node's placement or failure; a failover
// package has none.
func TestExplainInstances(t *testing.T) {
	l := newLog(t)
	l.config(testCluster(monPkg(), testPkg("web", "node1")))
	l.join("node1", "node2")
	p1 := l.run("mon", "node1", 1)
	l.run("mon", "node2", 2)
	f := l.add("mon", events.PackageFailed{Node: "node2", Epoch: 2, Reason: "service_failed"}, p1.ID)
	chains := ExplainInstances(l.evs, "mon")
	if len(chains) != 2 || chains["node2"][0].ID != f.ID || chains["node1"][0].Type() != events.TypePackagePlaced {
		t.Fatalf("chains: %v", chains)
	}
	if ExplainInstances(l.evs, "web") != nil {
		t.Error("a failover package has instance chains")
	}
}
