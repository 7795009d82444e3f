package failover

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

func depOn(p config.Package, name, cond, loc string) config.Package {
	p.Dependencies = append(p.Dependencies, config.Dependency{Name: name, Condition: cond, Location: loc})
	return p
}

// twoNodes writes c and joins node1 and node2.
func twoNodes(l *logb, c *config.Cluster) {
	l.config(c)
	l.join("node1", "node2")
}

// dbAppOn1 is twoNodes, then db and app run on node1 (epoch 1).
func dbAppOn1(l *logb, c *config.Cluster) {
	twoNodes(l, c)
	l.run("db", "node1", 1)
	l.run("app", "node1", 1)
}

func halted(l *logb, pkg, node string, epoch uint64) events.Event {
	return l.add(pkg, events.PackageHalted{Node: node, Epoch: epoch, Reason: "halted"}, "")
}

func halting(l *logb, pkg, node string, epoch uint64) events.Event {
	return l.add(pkg, events.PackageHalting{Node: node, Epoch: epoch, Reason: "x"}, "")
}

// TestDependencyDecide: placement honours up dependencies (same_node,
// any_node, different_node) and exclusions; a running package whose up
// dependency fails is halted, and follows it when it runs again; a
// higher-priority package displaces a lower one it excludes, never the other
// way; a node halt under a predecessor halts its successors first.
func TestDependencyDecide(t *testing.T) {
	app := depOn(testPkg("app", "node1", "node2", "node3"), "db", "up", "")
	db := testPkg("db", "node1", "node2", "node3")
	for _, tc := range []struct {
		name  string
		build func(l *logb)
		want  string
		note  string // the app's (or hi's) note, when set
	}{
		{"waits for db to run", func(l *logb) {
			twoNodes(l, testCluster(db, app))
		}, "db->node1 epoch=1 reason=auto_run cause=e3", "dependency db up same_node: db has not run"},
		{"db placed, not started: app waits", func(l *logb) {
			twoNodes(l, testCluster(db, app))
			l.place("db", "node1", 1, ReasonAutoRun, "")
		}, "", "dependency db up same_node: db is placed on node1"},
		{"db started: app placed beside it", func(l *logb) {
			twoNodes(l, testCluster(db, app))
			l.run("db", "node2", 1)
		}, "app->node2 epoch=1 reason=auto_run cause=e6", ""},
		{"db fails: app halted first", func(l *logb) {
			dbAppOn1(l, testCluster(db, app))
			l.add("db", events.ServiceFailed{Service: "app", Node: "node1", Epoch: 1, Reason: "exited"}, "")
		}, "package.halting app node=node1 epoch=1 reason=\"dependency: dependency db up same_node: db is halting on node1\" cause=e10", ""},
		{"db failed over: app waits down, follows once it runs", func(l *logb) {
			dbAppOn1(l, testCluster(db, app))
			halting(l, "app", "node1", 1)
			halted(l, "app", "node1", 1)
			l.failed("db", "node1", 1)
			l.place("db", "node2", 2, ReasonFailover, "node1")
			l.start("db", "node2", 2)
		}, "app->node2 epoch=2 reason=auto_run prev=node1 cause=e15", ""},
		{"any_node: app anywhere db runs", func(l *logb) {
			twoNodes(l, testCluster(db, depOn(testPkg("app", "node1", "node2"), "db", "up", "any_node")))
			l.run("db", "node2", 1)
		}, "app->node1 epoch=1 reason=auto_run cause=e6", ""},
		{"different_node: not beside db", func(l *logb) {
			twoNodes(l, testCluster(db, depOn(testPkg("app", "node1", "node2"), "db", "up", "different_node")))
			l.run("db", "node1", 1)
		}, "app->node2 epoch=1 reason=auto_run cause=e6", ""},
		{"node halt under db: app halts first, db waits", func(l *logb) {
			dbAppOn1(l, testCluster(db, app))
			l.add("node1", events.NodeHalted{By: "ann"}, "")
		}, "package.halting app node=node1 epoch=1 reason=\"predecessor: db, which it depends on, moves or halts first\" cause=e10", ""},
		{"node halt: app halting, db still waits", func(l *logb) {
			dbAppOn1(l, testCluster(db, app))
			l.add("node1", events.NodeHalted{By: "ann"}, "")
			halting(l, "app", "node1", 1)
		}, "", ""},
		{"node halt: app halted, db moves", func(l *logb) {
			dbAppOn1(l, testCluster(db, app))
			l.add("node1", events.NodeHalted{By: "ann"}, "")
			halting(l, "app", "node1", 1)
			halted(l, "app", "node1", 1)
		}, "db->node2 epoch=2 reason=node_halted prev=node1 cause=e12", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, s, _ := decideCase(t, tc.build, tc.want, "app", tc.note)
			if got, want := noCause(brief(Reconcile(s))), noCause(tc.want); got != want {
				t.Errorf("Reconcile = %q\n          want %q", got, want)
			}
		})
	}
}

// TestPriorityDisplace: a package that excludes another and outranks it
// takes the node the other holds (same_node) or runs at all (all_nodes): the
// other is halted, naming the package it makes room for, and placed again
// where it may; a lower-priority package never displaces a higher one.
func TestPriorityDisplace(t *testing.T) {
	excl := func(loc string, hiPrio, loPrio int) *config.Cluster {
		hi := depOn(testPkg("hi", "node1"), "lo", "down", loc)
		hi.Priority = hiPrio
		lo := depOn(testPkg("lo", "node1", "node2"), "hi", "down", loc)
		lo.Priority = loPrio
		return testCluster(lo, hi)
	}
	// loOn writes excl(loc, hiPrio, loPrio), joins node1 and node2 and
	// runs lo on node.
	loOn := func(l *logb, loc string, hiPrio, loPrio int, node string) {
		twoNodes(l, excl(loc, hiPrio, loPrio))
		l.run("lo", node, 1)
	}
	// askHi makes hi due: an operator resets it.
	askHi := func(l *logb) { l.add("hi", events.PackageReset{By: "ann"}, "") }
	for _, tc := range []struct {
		name  string
		build func(l *logb)
		want  string
		note  string
	}{
		{"same_node: lo halted for hi", func(l *logb) {
			loOn(l, "same_node", 10, 20, "node1")
			askHi(l)
		}, "package.halting lo node=node1 epoch=1 reason=\"displaced: by hi (priority 10 over 20), which needs node node1 (exclusion same_node)\" cause=e7", ""},
		{"same_node: lo halting, nothing more", func(l *logb) {
			loOn(l, "same_node", 10, 20, "node1")
			askHi(l)
			halting(l, "lo", "node1", 1)
		}, "", "dependency lo down same_node: lo is halting on node1"},
		{"same_node: lo halted: hi takes node1, lo goes to node2", func(l *logb) {
			loOn(l, "same_node", 10, 20, "node1")
			halting(l, "lo", "node1", 1)
			halted(l, "lo", "node1", 1)
		}, "hi->node1 epoch=1 reason=auto_run cause=e8; lo->node2 epoch=2 reason=auto_run prev=node1 cause=e8", ""},
		{"no priority on lo: hi still outranks it", func(l *logb) {
			loOn(l, "same_node", 10, 0, "node1")
			askHi(l)
		}, "package.halting lo node=node1 epoch=1 reason=\"displaced: by hi (priority 10 over no_priority), which needs node node1 (exclusion same_node)\" cause=e7", ""},
		{"all_nodes: lo on node2 halted too, and waits", func(l *logb) {
			loOn(l, "all_nodes", 10, 20, "node2")
			askHi(l)
		}, "package.halting lo node=node2 epoch=1 reason=\"displaced: by hi (priority 10 over 20), which needs node node1 (exclusion all_nodes)\" cause=e7", ""},
		{"lower priority never displaces", func(l *logb) {
			loOn(l, "same_node", 30, 20, "node1")
			askHi(l)
		}, "", "dependency lo down same_node: lo is running on node1"},
		{"both running on one node: the lower one halts", func(l *logb) {
			loOn(l, "same_node", 10, 20, "node1")
			l.run("hi", "node1", 1)
		}, "package.halting lo node=node1 epoch=1 reason=\"dependency: dependency hi down same_node: hi is running on node1\" cause=e9", ""},
	} {
		t.Run(tc.name, func(t *testing.T) { decideCase(t, tc.build, tc.want, "hi", tc.note) })
	}
}

// TestSuccessorHaltTimeout: a predecessor's move waits for its successor to
// halt at most successor_halt_timeout from the successor's package.halting
// (by the controller's clock); 0 does not wait.
func TestSuccessorHaltTimeout(t *testing.T) {
	build := func(wait time.Duration) (*logb, time.Time) {
		db := testPkg("db", "node1", "node2")
		w := config.Duration(wait)
		db.SuccessorHaltTimeout = &w
		l := newLog(t)
		dbAppOn1(l, testCluster(db, depOn(testPkg("app", "node1", "node2"), "db", "up", "")))
		l.add("node1", events.NodeHalted{By: "ann"}, "")
		return l, halting(l, "app", "node1", 1).Time
	}
	l, at := build(10 * time.Second)
	s := l.state()
	if got := brief(ReconcileAt(s, at.Add(9*time.Second))); got != "" {
		t.Errorf("before the timeout: %q, want nothing", got)
	}
	if got := brief(ReconcileAt(s, at.Add(10*time.Second))); got != "db->node2 epoch=2 reason=node_halted prev=node1 cause=e10" {
		t.Errorf("at the timeout: %q, want db moved", got)
	}
	l, _ = build(0)
	l.evs = l.evs[:len(l.evs)-1] // no halting: 0 moves at once
	if got := brief(Decide(l.state(), l.last())); !strings.Contains(got, "db->node2") || !strings.Contains(got, "package.halting app") {
		t.Errorf("successor_halt_timeout 0: %q, want db moved and app halted at once", got)
	}
}

// TestDependencyCommand: `pkg run` and `pkg move` refuse a node where the
// package's dependencies do not hold, saying which.
func TestDependencyCommand(t *testing.T) {
	l := newLog(t)
	twoNodes(l, testCluster(testPkg("db", "node1", "node2"), depOn(testPkg("app", "node1", "node2"), "db", "up", "")))
	l.run("db", "node1", 1)
	s := l.state()
	_, err := s.Command(Command{Op: OpRun, Package: "app", Node: "node2", By: "ann"})
	if err == nil || !strings.Contains(err.Error(), "node node2 does not meet package app's dependency db up same_node: db is running on node1") {
		t.Errorf("run on node2: %v", err)
	}
	if evs, err := s.Command(Command{Op: OpRun, Package: "app", By: "ann"}); err != nil || brief(evs) != "app->node1 epoch=1 reason=operator_run by=ann cause=" {
		t.Errorf("run: %q %v", brief(evs), err)
	}
}

// noCause drops the causes from brief's text: Decide names its trigger,
// Reconcile the event that made each decision due.
func noCause(s string) string { return causeRE.ReplaceAllString(s, "") }

var causeRE = regexp.MustCompile(` cause=e?[0-9]*`)

// TestHaltSuccessors: the first step of `pkg halt db` halts, by the
// operator, every running package that depends on db, directly or through
// another; Down tells when they are.
func TestHaltSuccessors(t *testing.T) {
	l := newLog(t)
	l.config(testCluster(
		testPkg("db", "node1", "node2"),
		depOn(testPkg("app", "node1", "node2"), "db", "up", ""),
		depOn(testPkg("web", "node1", "node2"), "app", "up", "any_node"),
		depOn(testPkg("idle", "node1", "node2"), "db", "up", "")))
	l.join("node1", "node2")
	l.run("db", "node1", 1)
	l.run("app", "node1", 1)
	l.run("web", "node2", 1)
	s := l.state()
	if got := s.ActiveSuccessors("db"); strings.Join(got, ",") != "app,web" {
		t.Errorf("ActiveSuccessors(db) = %v, want app and web (idle never ran)", got)
	}
	evs, err := s.Command(Command{Op: OpHaltSuccessors, Package: "db", Reason: "patch", By: "ann"})
	if want := `package.halting app node=node1 epoch=1 reason="predecessor: db, which it depends on, halts (patch)" by=ann; ` +
		`package.halting web node=node2 epoch=1 reason="predecessor: db, which it depends on, halts (patch)" by=ann`; err != nil || brief(evs) != want {
		t.Errorf("halt successors: %v\n got %q\nwant %q", err, brief(evs), want)
	}
	if s.Down([]string{"app", "web"}) {
		t.Error("Down before they halted")
	}
	l.applyAll(evs)
	halted(l, "app", "node1", 1)
	halted(l, "web", "node2", 1)
	if s = l.state(); !s.Down([]string{"app", "web"}) || s.AutoRunEnabled("app") {
		t.Errorf("after their halts: down %v, app auto_run %v: want down, auto_run off", s.Down([]string{"app", "web"}), s.AutoRunEnabled("app"))
	}
	if evs, err := s.Command(Command{Op: OpHaltSuccessors, Package: "db", By: "ann"}); err != nil || len(evs) != 0 {
		t.Errorf("with none running: %q %v, want nothing", brief(evs), err)
	}
}

// TestDependencyStatus: status -v shows a package's priority and each
// dependency, and whether it holds.
func TestDependencyStatus(t *testing.T) {
	app := depOn(testPkg("app", "node1", "node2"), "db", "up", "")
	app.Priority = 40
	app = depOn(app, "batch", "down", "all_nodes")
	batch := depOn(testPkg("batch", "node1", "node2"), "app", "down", "all_nodes")
	l := newLog(t)
	dbAppOn1(l, testCluster(testPkg("db", "node1", "node2"), app, batch))
	var b strings.Builder
	if err := BuildView(l.state()).WriteText(&b, true); err != nil {
		t.Fatal(err)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`Priority\s+40\n`),
		regexp.MustCompile(`DEPENDENCY\s+CONDITION\s+LOCATION\s+SATISFIED\n\s+db\s+up\s+same_node\s+yes\n\s+batch\s+down\s+all_nodes\s+yes\n`),
		regexp.MustCompile(`app\s+down\s+all_nodes\s+no\n`), // batch waits: app runs
	} {
		if !want.MatchString(b.String()) {
			t.Errorf("status -v lacks %s:\n%s", want, b.String())
		}
	}
}
