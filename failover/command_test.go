package failover

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

func TestCommand(t *testing.T) {
	// web: nodes 1,2,3, running on node1; db: node2,node1 never placed
	// (auto_run off); node3 down; mq failed on node1 and node2.
	base := func(l *logb) {
		db := testPkg("db", "node2", "node1")
		db.AutoRun = boolp(false)
		l.config(testCluster(testPkg("web", "node1", "node2", "node3"), db, testPkg("mq", "node1", "node2")))
		l.join("node1", "node2")
		l.run("web", "node1", 1)
		l.run("mq", "node1", 1)
		l.failed("mq", "node1", 1)
		l.place("mq", "node2", 2, ReasonFailover, "node1")
		l.start("mq", "node2", 2)
		l.failed("mq", "node2", 2)
	}
	tests := []struct {
		name  string
		extra func(l *logb)
		cmd   Command
		want  string // brief of the events, or the error's text after "command refused: "
		err   bool
	}{
		// node drain, run, freeze, thaw
		{name: "drain", cmd: Command{Op: OpNodeDrain, Node: "node1", Reason: "firmware", By: "ann"},
			want: "node.drained node1 reason=firmware by=ann"},
		{name: "drain twice", extra: func(l *logb) { l.add("node1", events.NodeDrained{By: "bob"}, "") },
			cmd: Command{Op: OpNodeDrain, Node: "node1", By: "ann"}, want: "node node1 is already in maintenance (drained by bob)", err: true},
		{name: "run ends a drain", extra: func(l *logb) { l.add("node1", events.NodeDrained{By: "bob"}, "") },
			cmd: Command{Op: OpNodeRun, Node: "node1", By: "ann"}, want: "node.resumed node1 reason=operator_run by=ann"},
		{name: "run ends a drain and an operator halt", extra: func(l *logb) {
			l.add("node1", events.NodeDrained{By: "bob"}, "")
			l.add("node1", events.NodeHalted{By: "bob"}, "")
		}, cmd: Command{Op: OpNodeRun, Node: "node1", By: "ann"},
			want: "node.resumed node1 reason=operator_run by=ann; node.joined node1 by=ann reason=operator_run"},
		{name: "run a node lost while an operator held it halted", extra: func(l *logb) {
			l.add("node1", events.NodeHalted{By: "bob"}, "")
			l.add("node1", events.NodeLost{Reason: "lease expired"}, "")
		}, cmd: Command{Op: OpNodeRun, Node: "node1", By: "ann"},
			want: "node.joined node1 by=ann reason=operator_run"},
		{name: "run a node lost while running", extra: func(l *logb) {
			l.add("node1", events.NodeLost{Reason: "lease expired"}, "")
		}, cmd: Command{Op: OpNodeRun, Node: "node1", By: "ann"},
			want: "node node1 is down (STATE failed) and was not halted by an operator", err: true},
		{name: "run a running node", cmd: Command{Op: OpNodeRun, Node: "node1", By: "ann"}, want: "node node1 is already running", err: true},
		{name: "move onto a drained node", extra: func(l *logb) { l.add("node2", events.NodeDrained{By: "bob"}, "") },
			cmd:  Command{Op: OpMove, Package: "web", Node: "node2", By: "ann"},
			want: "move web: node node2 is in maintenance (drained by bob); end it with `vmguard node run node2`", err: true},
		{name: "freeze", cmd: Command{Op: OpNodeFreeze, Node: "node1", For: 10 * time.Minute, Now: t0, Reason: "upgrade", By: "ann"},
			want: "node.frozen node1 until=2026-01-02T03:14:05Z reason=upgrade by=ann"},
		{name: "freeze without --for lasts DefaultFreeze", cmd: Command{Op: OpNodeFreeze, Node: "node1", Now: t0, By: "ann"},
			want: "node.frozen node1 until=2026-01-02T04:04:05Z reason=freeze by=ann"},
		{name: "freeze a down node", cmd: Command{Op: OpNodeFreeze, Node: "node3", Now: t0, By: "ann"},
			want: "node node3 is not up (STATE unknown): there is nothing to freeze", err: true},
		{name: "freeze twice", extra: func(l *logb) { l.add("node1", events.NodeFrozen{Until: t0, By: "bob"}, "") },
			cmd: Command{Op: OpNodeFreeze, Node: "node1", Now: t0, By: "ann"}, want: "node node1 is already frozen", err: true},
		{name: "drain a frozen node", extra: func(l *logb) { l.add("node1", events.NodeFrozen{Until: t0, By: "bob"}, "") },
			cmd: Command{Op: OpNodeDrain, Node: "node1", By: "ann"}, want: "node node1 is frozen; thaw it first", err: true},
		{name: "halt a package on a frozen node", extra: func(l *logb) { l.add("node1", events.NodeFrozen{Until: t0, By: "bob"}, "") },
			cmd: Command{Op: OpHalt, Package: "web", By: "ann"}, want: "halt web: its node node1 is frozen; thaw it first", err: true},
		{name: "move onto a frozen node", extra: func(l *logb) { l.add("node2", events.NodeFrozen{Until: t0, By: "bob"}, "") },
			cmd: Command{Op: OpMove, Package: "web", Node: "node2", By: "ann"}, want: "move web: node node2 is frozen (by bob)", err: true},
		{name: "thaw", extra: func(l *logb) { l.add("node1", events.NodeFrozen{Until: t0, By: "bob"}, "") },
			cmd: Command{Op: OpNodeThaw, Node: "node1", By: "ann"}, want: "node.thawed node1 reason=operator_thaw by=ann"},
		{name: "thaw a node not frozen", cmd: Command{Op: OpNodeThaw, Node: "node1", By: "ann"}, want: "node node1 is not frozen", err: true},
		// pkg run
		{name: "run on the policy's node", cmd: Command{Op: OpRun, Package: "db", By: "ann"},
			want: "db->node2 epoch=1 reason=operator_run by=ann cause="},
		{name: "run -n with a reason", cmd: Command{Op: OpRun, Package: "db", Node: "node1", Reason: "db1 is faster", By: "ann"},
			want: "db->node1 epoch=1 reason=operator_run: db1 is faster by=ann cause="},
		{name: "run unknown package", cmd: Command{Op: OpRun, Package: "nope", By: "ann"},
			want: `unknown package "nope" (configured: web, db, mq)`, err: true},
		{name: "run on a node not in its list", cmd: Command{Op: OpRun, Package: "db", Node: "node3", By: "ann"},
			want: "node node3 is not one of package db's nodes (node2, node1)", err: true},
		{name: "run already running", cmd: Command{Op: OpRun, Package: "web", Node: "node2", By: "ann"},
			want: "package web is already running on node node1", err: true},
		{name: "run already starting", extra: func(l *logb) { l.place("db", "node2", 1, ReasonOperatorRun, "") },
			cmd:  Command{Op: OpRun, Package: "db", By: "ann"},
			want: "package db is already starting on node node2", err: true},
		{name: "run on a down node", cmd: Command{Op: OpRun, Package: "web", Node: "node3", By: "ann"},
			extra: func(l *logb) {
				l.add("web", events.PackageHalting{Node: "node1", Epoch: 1, Reason: "x", By: "ann"}, "")
				l.add("web", events.PackageHalted{Node: "node1", Epoch: 1, Reason: "x"}, "")
			},
			want: "run web: node node3 is down (unknown)", err: true},
		{name: "run on a node it failed on", cmd: Command{Op: OpRun, Package: "mq", Node: "node1", By: "ann"},
			want: "run mq: package mq failed on node node1; clear that with `vmguard pkg reset mq`", err: true},
		{name: "run with no eligible node", cmd: Command{Op: OpRun, Package: "mq", By: "ann"},
			want: "run mq: no eligible node among node1, node2", err: true},
		{name: "run a failed package after reset", extra: func(l *logb) { l.add("mq", events.PackageReset{By: "ann"}, "") },
			cmd:  Command{Op: OpRun, Package: "mq", By: "ann"},
			want: "mq->node1 epoch=3 reason=operator_run prev=node2 by=ann cause="},
		{name: "run on a node with switching disabled", extra: func(l *logb) {
			l.add("db", events.PackageSwitchingChanged{Node: "node2", Enabled: false, By: "ann"}, "")
		}, cmd: Command{Op: OpRun, Package: "db", Node: "node2", By: "ann"},
			want: "run db: node switching of package db on node node2 is disabled", err: true},

		// pkg halt
		{name: "halt", cmd: Command{Op: OpHalt, Package: "web", Reason: "patching", By: "ann"},
			want: "package.halting web node=node1 epoch=1 reason=patching by=ann"},
		{name: "halt without reason", cmd: Command{Op: OpHalt, Package: "web", By: "ann"},
			want: "package.halting web node=node1 epoch=1 reason=operator_halt by=ann"},
		{name: "halt a package that is not running", cmd: Command{Op: OpHalt, Package: "db", By: "ann"},
			want: "package db is not running (STATUS down, STATE halted)", err: true},
		{name: "halt a failed package", cmd: Command{Op: OpHalt, Package: "mq", By: "ann"},
			want: "package mq is not running (STATUS down, STATE failed)", err: true},
		{name: "halt unknown", cmd: Command{Op: OpHalt, Package: "nope", By: "ann"},
			want: `unknown package "nope"`, err: true},

		// pkg enable / disable
		{name: "enable", cmd: Command{Op: OpEnable, Package: "db", By: "ann"},
			want: "package.switching_changed db enabled=true by=ann"},
		{name: "disable -n", cmd: Command{Op: OpDisable, Package: "web", Node: "node2", Reason: "flaky nic", By: "ann"},
			want: `package.switching_changed web node=node2 enabled=false reason="flaky nic" by=ann`},
		{name: "enable -n node not in list", cmd: Command{Op: OpEnable, Package: "db", Node: "node3", By: "ann"},
			want: "node node3 is not one of package db's nodes", err: true},
		{name: "disable unknown", cmd: Command{Op: OpDisable, Package: "nope", By: "ann"},
			want: `unknown package "nope"`, err: true},

		// pkg move
		{name: "move", cmd: Command{Op: OpMove, Package: "web", Node: "node2", By: "ann"},
			want: "web->node2 epoch=2 reason=operator_move prev=node1 by=ann cause="},
		{name: "move a guest that can migrate", extra: func(l *logb) {
			web := testPkg("web", "node1", "node2", "node3")
			web.Guest.Migrate = true
			db := testPkg("db", "node2", "node1")
			db.AutoRun = boolp(false)
			l.config(testCluster(web, db, testPkg("mq", "node1", "node2")))
		}, cmd: Command{Op: OpMove, Package: "web", Node: "node2", By: "ann"},
			want: "web->node2 epoch=2 reason=operator_move prev=node1 by=ann migrate cause="},
		{name: "move without -n", cmd: Command{Op: OpMove, Package: "web", By: "ann"},
			want: "move web: name the node to move it to with -n", err: true},
		{name: "move to the same node", cmd: Command{Op: OpMove, Package: "web", Node: "node1", By: "ann"},
			want: "move web: package is already on node node1", err: true},
		{name: "move a package that is not running", cmd: Command{Op: OpMove, Package: "db", Node: "node1", By: "ann"},
			want: "move db: package is not running (STATUS down, STATE halted); use `vmguard pkg run db -n node1`", err: true},
		{name: "move to a down node", cmd: Command{Op: OpMove, Package: "web", Node: "node3", By: "ann"},
			want: "move web: node node3 is down (unknown)", err: true},
		{name: "move to a node not in its list", cmd: Command{Op: OpMove, Package: "db", Node: "node3", By: "ann"},
			want: "node node3 is not one of package db's nodes", err: true},
		{name: "move to a node with switching disabled", extra: func(l *logb) {
			l.add("web", events.PackageSwitchingChanged{Node: "node2", Enabled: false, By: "ann"}, "")
		}, cmd: Command{Op: OpMove, Package: "web", Node: "node2", By: "ann"},
			want: "move web: node switching of package web on node node2 is disabled", err: true},

		// pkg reset
		{name: "reset", cmd: Command{Op: OpReset, Package: "mq", Reason: "fixed config", By: "ann"},
			want: `package.reset mq reason="fixed config" by=ann`},
		{name: "reset -s", cmd: Command{Op: OpReset, Package: "web", Service: "app", By: "ann"},
			want: "package.reset web service=app by=ann"},
		{name: "reset unknown service", cmd: Command{Op: OpReset, Package: "web", Service: "nope", By: "ann"},
			want: `reset web: unknown service "nope"`, err: true},
		{name: "reset -n", cmd: Command{Op: OpReset, Package: "web", Node: "node1", By: "ann"},
			want: "reset web: -n does not apply", err: true},

		// node halt / run
		{name: "node halt", cmd: Command{Op: OpNodeHalt, Node: "node1", Reason: "kernel update", By: "ann"},
			want: `node.halted node1 reason="kernel update" by=ann`},
		{name: "node halt of a down node", cmd: Command{Op: OpNodeHalt, Node: "node3", By: "ann"},
			want: "node node3 is not up (STATE unknown)", err: true},
		{name: "node halt unknown", cmd: Command{Op: OpNodeHalt, Node: "node9", By: "ann"},
			want: `unknown node "node9" (configured: node1, node2, node3)`, err: true},
		{name: "node run after node halt", extra: func(l *logb) { l.add("node1", events.NodeHalted{Reason: "x", By: "bob"}, "") },
			cmd: Command{Op: OpNodeRun, Node: "node1", By: "ann"}, want: "node.joined node1 by=ann reason=operator_run"},
		{name: "node run of a running node", cmd: Command{Op: OpNodeRun, Node: "node1", By: "ann"},
			want: "node node1 is already running", err: true},
		{name: "node run of a lost node", extra: func(l *logb) { l.lost("node2") },
			cmd:  Command{Op: OpNodeRun, Node: "node2", By: "ann"},
			want: "node node2 is down (STATE failed) and was not halted by an operator: start its host manager (`vmguard host --node node2`), which joins it", err: true},
		{name: "node run of a node fenced for a fail-fast", extra: func(l *logb) { l.add("node2", events.NodeFenced{Reason: "fail_fast", Hold: true}, "") },
			cmd: Command{Op: OpNodeRun, Node: "node2", By: "ann"}, want: "node.joined node2 by=ann reason=operator_run"},
		{name: "node run of a node fenced without hold", extra: func(l *logb) { l.add("node2", events.NodeFenced{Reason: "lease"}, "") },
			cmd:  Command{Op: OpNodeRun, Node: "node2", By: "ann"},
			want: "node node2 is down (STATE failed) and was not halted by an operator", err: true},
		{name: "node run of a node never joined", cmd: Command{Op: OpNodeRun, Node: "node3", By: "ann"},
			want: "node node3 is down (STATE unknown)", err: true},

		// general
		{name: "who asks is required", cmd: Command{Op: OpRun, Package: "db"},
			want: "run: who asks (by) is missing", err: true},
		{name: "unknown op", cmd: Command{Op: "explode", Package: "db", By: "ann"},
			want: `unknown command "explode"`, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLog(t)
			base(l)
			if tt.extra != nil {
				tt.extra(l)
			}
			s := l.state()
			before := s.Clone()
			evs, err := s.Command(tt.cmd)
			if tt.err {
				if err == nil {
					t.Fatalf("Command = %s, want error %q", brief(evs), tt.want)
				}
				if !errors.Is(err, ErrRefused) {
					t.Errorf("error %v does not wrap ErrRefused", err)
				}
				if !strings.Contains(err.Error(), tt.want) {
					t.Errorf("error:\n got %v\nwant it to contain %q", err, tt.want)
				}
				if evs != nil {
					t.Errorf("refused command returned events %s", brief(evs))
				}
				return
			}
			if err != nil {
				t.Fatalf("Command: %v", err)
			}
			if got := brief(evs); got != tt.want {
				t.Errorf("\n got %s\nwant %s", got, tt.want)
			}
			for _, e := range evs {
				if e.Source != CLISource("ann") || e.ID != "" || !e.Time.IsZero() {
					t.Errorf("event %+v: want Source %s, no ID, no Time", e, CLISource("ann"))
				}
			}
			if !equalStates(s, before) {
				t.Error("Command changed the state")
			}
		})
	}
}

func TestCommandNoConfig(t *testing.T) {
	_, err := (&State{}).Command(Command{Op: OpRun, Package: "web", By: "ann"})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "vmguard apply") {
		t.Errorf("err = %v", err)
	}
}

// TestCommandThenDecide follows operator commands through the controller.
func TestCommandThenDecide(t *testing.T) {
	l := newLog(t)
	l.config(testCluster(testPkg("web", "node1", "node2")))
	l.join("node1", "node2")
	l.applyAll(Reconcile(l.state()))
	l.start("web", "node1", 1)

	do := func(cmd Command) {
		t.Helper()
		evs, err := l.state().Command(cmd)
		if err != nil {
			t.Fatalf("%s: %v", cmd.Op, err)
		}
		l.applyAll(evs)
	}
	// node halt -> the controller moves web to node2.
	do(Command{Op: OpNodeHalt, Node: "node1", By: "ann"})
	got := Decide(l.state(), l.last())
	if b := brief(got); b != "web->node2 epoch=2 reason=node_halted prev=node1 cause="+l.last().ID {
		t.Fatalf("after node halt: %s", b)
	}
	l.applyAll(got)
	l.add("web", events.PackageHalted{Node: "node1", Epoch: 1, Reason: "moved"}, "")
	l.start("web", "node2", 2)
	// node run -> node1 up again; manual failback: nothing moves.
	do(Command{Op: OpNodeRun, Node: "node1", By: "ann"})
	if d := Decide(l.state(), l.last()); len(d) != 0 {
		t.Fatalf("after node run: %s", brief(d))
	}
	// pkg halt -> halted and stays down.
	do(Command{Op: OpHalt, Package: "web", By: "ann"})
	l.add("web", events.PackageHalted{Node: "node2", Epoch: 2, Reason: "operator_halt"}, "")
	if d := Reconcile(l.state()); len(d) != 0 {
		t.Fatalf("after halt: %s", brief(d))
	}
	// pkg run -n node1, then pkg enable: running, nothing more due.
	do(Command{Op: OpRun, Package: "web", Node: "node1", By: "ann"})
	l.start("web", "node1", 3)
	do(Command{Op: OpEnable, Package: "web", By: "ann"})
	if d := Reconcile(l.state()); len(d) != 0 {
		t.Fatalf("after run and enable: %s", brief(d))
	}
	p := l.state().Package("web")
	if p.Node != "node1" || p.Phase != PhaseRunning || !l.state().AutoRunEnabled("web") {
		t.Errorf("web = %+v", p)
	}
}
