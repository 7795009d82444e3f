package failover

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/invariant"
)

// webTyped returns web on node1 and node2, multi_node if multi.
func webTyped(multi bool) config.Package {
	p := testPkg("web", "node1", "node2")
	if multi {
		p.Type = config.TypeMultiNode
		p.FailoverPolicy, p.FailbackPolicy, p.MaxRelocate = "", "", config.Limit{}
	}
	return p
}

// TestTypeChanges lists the packages a configuration would change the
// type of while they occupy a node, by their placements.
func TestTypeChanges(t *testing.T) {
	l := newLog(t)
	l.config(testCluster(webTyped(true), testPkg("db", "node1", "node2")))
	l.join("node1", "node2")
	l.run("web", "node1", 1)
	l.place("web", "node2", 2, ReasonAutoRun, "")
	l.run("db", "node1", 1)
	l.place("db", "node2", 2, ReasonOperatorMove, "node1") // node1's still leaving
	s := l.state()
	db := testPkg("db", "node1", "node2")
	db.Type = config.TypeMultiNode
	got := s.TypeChanges(testCluster(webTyped(false), db))
	want := []TypeChange{
		{Package: "web", From: config.TypeMultiNode, To: config.TypeFailover, Nodes: []string{"node1", "node2"}},
		{Package: "db", From: config.TypeFailover, To: config.TypeMultiNode, Nodes: []string{"node1", "node2"}},
	}
	if !slices.EqualFunc(got, want, func(a, b TypeChange) bool {
		return a.Package == b.Package && a.From == b.From && a.To == b.To && slices.Equal(a.Nodes, b.Nodes)
	}) {
		t.Errorf("TypeChanges:\n got %+v\nwant %+v", got, want)
	}
	if got := s.TypeChanges(testCluster(webTyped(true), testPkg("db", "node1", "node2"))); len(got) != 0 {
		t.Errorf("same types: %+v", got)
	}
}

// runThenChange returns a log where web runs on node1 as multi_node (if
// multi) or failover, then a config gives it the other type.
func runThenChange(t *testing.T, multi bool) *logb {
	l := newLog(t)
	l.config(testCluster(webTyped(multi)))
	l.join("node1", "node2")
	l.run("web", "node1", 1)
	l.config(testCluster(webTyped(!multi)))
	return l
}

// changeType runs web on node1 as multi_node (if multi) or failover, applies
// a config with the other type, checks that the controller halts it
// (package_type_changed), appends that halt and returns the log and it.
func changeType(t *testing.T, multi bool) (*logb, events.Event) {
	t.Helper()
	l := runThenChange(t, multi)
	cfg := l.last()
	if b := brief(Decide(l.state(), cfg)); b != "package.halting web node=node1 epoch=1 reason=package_type_changed cause="+cfg.ID {
		t.Fatalf("after the change: %s", b)
	}
	return l, l.add("web", events.PackageHalting{Node: "node1", Epoch: 1, Reason: ReasonTypeChanged}, cfg.ID)
}

// TestTypeChangeMultiToFailover: web runs as multi_node on node1; a config
// makes it failover. The controller halts the instance (reason
// package_type_changed) and places nothing until it is released; then the
// failover placement. A node lost under that placement is handled: web is
// lost there and placed on the other node (session 8's finding: it stayed
// running on the lost node).
func TestTypeChangeMultiToFailover(t *testing.T) {
	l, h := changeType(t, true)
	s := l.state()
	if b := brief(Decide(s, h)); b != "" {
		t.Errorf("while the instance halts: %s", b)
	}
	if _, err := s.Command(Command{Op: OpRun, Package: "web", Node: "node2", By: "op"}); err == nil || !strings.Contains(err.Error(), "still runs as multi_node on node1") {
		t.Errorf("pkg run while it halts: %v", err)
	}
	done := l.add("web", events.PackageHalted{Node: "node1", Epoch: 1, Reason: ReasonTypeChanged}, h.ID)
	s = l.state()
	if p := s.Package("web"); p.Instances != nil || p.Phase != PhaseHalted {
		t.Errorf("after the instance's release: %+v", p)
	}
	due := Decide(s, done)
	if b := brief(due); b != "web->node1 epoch=2 reason=auto_run cause="+done.ID {
		t.Errorf("released: %s", b)
	}
	l.applyAll(due)
	l.start("web", "node1", 2)
	if v := invariant.Check(l.evs); len(v) > 0 {
		t.Errorf("verify: %v", v)
	}

	// An operator's halt of the former instance turns auto_run off.
	l = runThenChange(t, true)
	evs, err := l.state().Command(Command{Op: OpHalt, Package: "web", By: "op"})
	if err != nil {
		t.Fatalf("pkg halt: %v", err)
	}
	l.applyAll(evs)
	if s = l.state(); s.AutoRunEnabled("web") || s.Package("web").Instances["node1"].Phase != PhaseHalting {
		t.Errorf("after pkg halt: auto_run %v, %+v", s.AutoRunEnabled("web"), s.Package("web").Instances["node1"])
	}

	// Session 8's repro: the halted event comes before any controller
	// halts it, a failover placement on node2, node2 lost.
	l = runThenChange(t, true)
	l.add("web", events.PackageHalted{Node: "node1", Epoch: 1, Reason: "operator_halt"}, "")
	l.run("web", "node2", 2)
	lost := l.lost("node2")
	s = l.state()
	if p := s.Package("web"); p.Phase != PhaseLost || p.Node != "node2" || s.RunningOn("web", "node2") {
		t.Errorf("after node2 lost: %+v", p)
	}
	if b := brief(Decide(s, lost)); b != "web->node1 epoch=3 reason=node_lost prev=node2 cause="+lost.ID {
		t.Errorf("Decide(lost): %s", b)
	}

	// Written by hand: the failover placement while the instance still
	// runs. Each is folded as what it was placed as; a loss of either node
	// is seen; the controller halts the instance.
	l = runThenChange(t, true)
	cfg := l.last()
	l.run("web", "node2", 2)
	s = l.state()
	if p := s.Package("web"); p.Node != "node2" || p.Phase != PhaseRunning || p.Instances["node1"].Phase != PhaseRunning {
		t.Errorf("two kinds: %+v, node1 %+v", p, p.Instances["node1"])
	}
	if b := brief(Reconcile(s)); b != "package.halting web node=node1 epoch=1 reason=package_type_changed cause="+cfg.ID {
		t.Errorf("two kinds: due %s", b)
	}
	l.lost("node1")
	s = l.state()
	if p := s.Package("web"); p.Instances != nil || p.Node != "node2" || p.Phase != PhaseRunning {
		t.Errorf("node1 lost: %+v", p)
	}
	if b := brief(Reconcile(s)); b != "" {
		t.Errorf("node1 lost: due %s", b)
	}
	if twice := Fold(append(slices.Clone(l.evs), l.evs...)); !equalStates(twice, s) {
		t.Error("a replay of the log twice folds another state")
	}
}

// TestTypeChangeFailoverToMulti: web runs as failover on node1; a config
// makes it multi_node. The controller halts it (reason
// package_type_changed) before it places any instance; then one on each
// node.
func TestTypeChangeFailoverToMulti(t *testing.T) {
	l, h := changeType(t, false)
	s := l.state()
	if p := s.Package("web"); p.Phase != PhaseHalting || p.Node != "node1" {
		t.Errorf("halting: %+v", p)
	}
	if b := brief(Decide(s, h)); b != "" {
		t.Errorf("while it halts: %s", b)
	}
	if _, err := s.Command(Command{Op: OpRun, Package: "web", By: "op"}); err == nil || !strings.Contains(err.Error(), "still runs as failover on node1") {
		t.Errorf("pkg run while it halts: %v", err)
	}
	done := l.add("web", events.PackageHalted{Node: "node1", Epoch: 1, Reason: ReasonTypeChanged}, h.ID)
	s = l.state()
	due := Decide(s, done)
	if b := brief(due); b != "web->node1 epoch=2 reason=auto_run cause="+done.ID+"; web->node2 epoch=3 reason=auto_run cause="+done.ID {
		t.Errorf("released: %s", b)
	}
	l.applyAll(due)
	l.start("web", "node1", 2)
	l.start("web", "node2", 3)
	if v := invariant.Check(l.evs); len(v) > 0 {
		t.Errorf("verify: %v", v)
	}

	// Written by hand: an instance placed on node2 while the failover
	// placement runs on node1. The failover placement is leaving (node1's
	// host manager halts it; the controller asks once too); its halt
	// releases it; then an instance on node1.
	l = runThenChange(t, false)
	l.run("web", "node2", 2)
	s = l.state()
	if p := s.Package("web"); p.Phase != PhaseRunning || len(p.Leaving) != 1 || p.Leaving[0] != (Instance{Node: "node1", Epoch: 1}) || s.RunningOn("web", "node1") {
		t.Errorf("two kinds: %+v", p)
	}
	due = Reconcile(s)
	if b := brief(due); b != "package.halting web node=node1 epoch=1 reason=package_type_changed cause=e7" {
		t.Errorf("while the failover placement leaves: due %s", b)
	}
	l.applyAll(due)
	if b := brief(Reconcile(l.state())); b != "" {
		t.Errorf("halting asked: due %s", b)
	}
	l.add("web", events.PackageHalted{Node: "node1", Epoch: 1, Reason: "moved"}, "")
	s = l.state()
	if p := s.Package("web"); len(p.Leaving) != 0 {
		t.Errorf("released: %+v", p)
	}
	if b := brief(Reconcile(s)); b != "web->node1 epoch=3 reason=auto_run cause=e7" {
		t.Errorf("released: due %s", b)
	}
	l.lost("node2")
	if p := l.state().Package("web"); p.Instances["node2"].Phase != PhaseLost {
		t.Errorf("node2 lost: %+v", p.Instances["node2"])
	}
}

// TestPropTypeChange: through logs where configurations flip web and db
// between failover and multi_node while they run, with the controller's
// decisions, operators' runs and halts, hosts that start, halt and release
// what is placed, and nodes lost and joining, no placement (a package's or
// an instance's) occupies a node the log has lost or fenced, the
// controller places nothing of one type while a placement of the other
// occupies a node, and no package ever occupies nodes as both types.
func TestPropTypeChange(tt *testing.T) {
	nodes := []string{"node1", "node2", "node3"}
	rapid.Check(tt, func(t *rapid.T) {
		l := newLog(tt)
		cfg := func() {
			var pkgs []config.Package
			for _, name := range []string{"web", "db"} {
				p := testPkg(name, nodes...)
				if rapid.Bool().Draw(t, name+".multi") {
					p.Type = config.TypeMultiNode
				}
				pkgs = append(pkgs, p)
			}
			l.config(testCluster(pkgs...))
		}
		cfg()
		l.join(nodes...)
		decide := func(evs []events.Event) {
			s := l.state()
			for _, e := range evs {
				if d, ok := e.Data.(events.PackagePlaced); ok {
					cp, _ := s.configured(e.Subject)
					if from, on := s.Packages[e.Subject].otherType(cp); len(on) > 0 {
						t.Fatalf("%s placed on %s while it runs as %s on %v", e.Subject, d.Node, from, on)
					}
				}
			}
			l.applyAll(evs)
		}
		decide(Reconcile(l.state()))
		for range rapid.IntRange(0, 60).Draw(t, "steps") {
			s := l.state()
			pkg := rapid.SampledFrom([]string{"web", "db"}).Draw(t, "pkg")
			node := rapid.SampledFrom(nodes).Draw(t, "node")
			switch rapid.IntRange(0, 9).Draw(t, "kind") {
			case 0:
				cfg()
			case 1:
				if s.Nodes[node].Up() {
					l.lost(node)
				} else {
					l.join(node)
				}
			case 2:
				cmd := Command{Op: rapid.SampledFrom([]Op{OpRun, OpHalt}).Draw(t, "op"), Package: pkg, By: "op"}
				if evs, err := s.Command(cmd); err == nil {
					decide(evs)
				}
			default:
				// A host moves one placement of pkg on.
				p := s.Packages[pkg]
				if p == nil {
					continue
				}
				var all []*PackageState
				if p.Node != "" {
					all = append(all, p)
				}
				for _, n := range slices.Sorted(maps.Keys(p.Instances)) {
					all = append(all, p.Instances[n])
				}
				var evs []events.Payload
				for _, in := range all {
					if !s.Nodes[in.Node].Up() && in.Phase.Owned() {
						continue
					}
					switch in.Phase {
					case PhasePlaced:
						evs = append(evs, events.PackageStarting{Node: in.Node, Epoch: in.Epoch})
					case PhaseStarting:
						evs = append(evs, events.PackageStarted{Node: in.Node, Epoch: in.Epoch})
					case PhaseHalting:
						evs = append(evs, events.PackageHalted{Node: in.Node, Epoch: in.Epoch, Reason: "x"})
					}
					for _, lv := range in.Leaving {
						evs = append(evs, events.PackageHalted{Node: lv.Node, Epoch: lv.Epoch, Reason: "moved"})
					}
				}
				if len(evs) == 0 {
					continue
				}
				l.add(pkg, rapid.SampledFrom(evs).Draw(t, "host"), "")
			}
			decide(Decide(l.state(), l.last()))
			s = l.state()
			for name, p := range s.Packages {
				if len(p.singleNodes()) > 0 && len(p.instanceNodes()) > 0 {
					t.Fatalf("%s runs as both types: failover on %v, multi_node on %v", name, p.singleNodes(), p.instanceNodes())
				}
				for _, n := range slices.Concat(p.singleNodes(), p.instanceNodes()) {
					if m := s.Nodes[n].Membership; m == MemberLost || m == MemberFenced {
						t.Fatalf("%s occupies node %s, %s", name, n, m)
					}
				}
			}
		}
	})
}
