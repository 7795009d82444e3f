package failover

import (
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

func TestDecide(t *testing.T) {
	web := testPkg("web", "node1", "node2", "node3")
	minPkg := func(name string, nodes ...string) config.Package {
		p := testPkg(name, nodes...)
		p.FailoverPolicy = config.MinPackageNode
		return p
	}
	failback := func(p config.Package) config.Package {
		p.FailbackPolicy = config.FailbackAutomatic
		return p
	}
	// webOn writes web's config, joins nodes and runs web on node1 at
	// epoch 1 (config, joins, placed, guest and service up).
	webOn := func(l *logb, nodes ...string) {
		l.config(testCluster(web))
		l.join(nodes...)
		l.run("web", "node1", 1)
	}
	// opHalt is an operator's halt of web on node1 (epoch 1), halted.
	opHalt := func(l *logb) {
		l.add("web", events.PackageHalting{Node: "node1", Epoch: 1, Reason: "maint", By: "op"}, "")
		l.add("web", events.PackageHalted{Node: "node1", Epoch: 1, Reason: "maint"}, "")
	}
	// failedOnTwo: web runs on a and fails, is placed on b (failover,
	// epoch 2), starts and fails there too.
	failedOnTwo := func(l *logb, a, b string) {
		l.run("web", a, 1)
		l.failed("web", a, 1)
		l.place("web", b, 2, ReasonFailover, a)
		l.start("web", b, 2)
		l.failed("web", b, 2)
	}
	// onlyNode1Up: web may run on node1 and node2; only node1 joined, and
	// web runs there (epoch 1).
	onlyNode1Up := func(l *logb) {
		l.config(testCluster(testPkg("web", "node1", "node2")))
		l.join("node1")
		l.run("web", "node1", 1)
	}
	// haltNode1 is an operator's halt of node1.
	haltNode1 := func(l *logb) { l.add("node1", events.NodeHalted{Reason: "maint", By: "op"}, "") }
	// haltedWithNode1: web ran on node1 alone (onlyNode1Up), node1 was
	// halted, and web halted there (node_halted).
	haltedWithNode1 := func(l *logb) {
		onlyNode1Up(l)
		haltNode1(l)
		l.add("web", events.PackageHalting{Node: "node1", Epoch: 1, Reason: "node_halted"}, "")
		l.add("web", events.PackageHalted{Node: "node1", Epoch: 1, Reason: "node_halted"}, "")
	}
	// freeze freezes node1 for an hour.
	freeze := func(l *logb) { l.add("node1", events.NodeFrozen{Until: t0.Add(time.Hour), By: "op"}, "") }
	tests := []struct {
		name string
		// build writes the log; the trigger is its last event.
		build func(l *logb)
		want  string
		// note is a substring of State.Note(web) after the log, if set.
		note string
	}{
		{
			name:  "config before any node: nothing",
			build: func(l *logb) { l.config(testCluster(web)) },
			want:  "",
			note:  "waiting for an eligible node",
		},
		{
			name: "initial placement on the first node up, configured_node",
			build: func(l *logb) {
				l.config(testCluster(web))
				l.join("node2")
			},
			want: "web->node2 epoch=1 reason=auto_run cause=e2",
		},
		{
			name: "initial placement prefers list order",
			build: func(l *logb) {
				l.join("node3", "node1")
				l.config(testCluster(web))
			},
			want: "web->node1 epoch=1 reason=auto_run cause=e3",
		},
		{
			name: "auto_run off in config: no initial placement",
			build: func(l *logb) {
				p := testPkg("web", "node1")
				p.AutoRun = boolp(false)
				l.join("node1")
				l.config(testCluster(p))
			},
			want: "",
		},
		{
			name: "min_package_node spreads initial placements in one decision",
			build: func(l *logb) {
				l.join("node1", "node2", "node3")
				l.config(testCluster(minPkg("a", "node1", "node2", "node3"), minPkg("b", "node1", "node2", "node3"), minPkg("c", "node1", "node2", "node3"), minPkg("d", "node3", "node1")))
			},
			want: "a->node1 epoch=1 reason=auto_run cause=e4; b->node2 epoch=1 reason=auto_run cause=e4; c->node3 epoch=1 reason=auto_run cause=e4; d->node3 epoch=1 reason=auto_run cause=e4",
		},
		{
			name: "failover configured_node: next in list",
			build: func(l *logb) {
				webOn(l, "node1", "node2", "node3")
				l.failed("web", "node1", 1)
			},
			want: "web->node2 epoch=2 reason=failover prev=node1 cause=e8",
		},
		{
			name: "failover min_package_node: fewest packages, failed node skipped",
			build: func(l *logb) {
				l.config(testCluster(minPkg("web", "node1", "node2", "node3"), testPkg("x", "node2"), testPkg("y", "node3"), testPkg("z", "node3")))
				l.join("node1", "node2", "node3")
				l.run("web", "node1", 1)
				l.run("x", "node2", 1)
				l.run("y", "node3", 1)
				l.run("z", "node3", 1)
				l.failed("web", "node1", 1)
			},
			want: "web->node2 epoch=2 reason=failover prev=node1 cause=e17",
		},
		{
			name: "failover min_package_node: ties go by list order",
			build: func(l *logb) {
				l.config(testCluster(minPkg("web", "node1", "node3", "node2")))
				l.join("node1", "node2", "node3")
				l.run("web", "node1", 1)
				l.failed("web", "node1", 1)
			},
			want: "web->node3 epoch=2 reason=failover prev=node1 cause=e8",
		},
		{
			name: "failover skips a node with switching disabled for the package",
			build: func(l *logb) {
				webOn(l, "node1", "node2", "node3")
				l.add("web", events.PackageSwitchingChanged{Node: "node2", Enabled: false, By: "op"}, "")
				l.failed("web", "node1", 1)
			},
			want: "web->node3 epoch=2 reason=failover prev=node1 cause=e9",
		},
		{
			name: "failover skips a down node",
			build: func(l *logb) {
				webOn(l, "node1", "node2", "node3")
				l.lost("node2")
				l.failed("web", "node1", 1)
			},
			want: "web->node3 epoch=2 reason=failover prev=node1 cause=e9",
		},
		{
			name: "failover skips nodes it already failed on",
			build: func(l *logb) {
				l.config(testCluster(web))
				l.join("node1", "node2", "node3")
				failedOnTwo(l, "node2", "node1")
			},
			want: "web->node3 epoch=3 reason=failover prev=node1 cause=e12",
		},
		{
			name: "none left: failed on every node",
			build: func(l *logb) {
				l.config(testCluster(testPkg("web", "node1", "node2")))
				l.join("node1", "node2")
				failedOnTwo(l, "node1", "node2")
			},
			want: "",
			note: "failed on every node (node1, node2)",
		},
		{
			name: "max_relocate reached: no further relocation",
			build: func(l *logb) {
				p := testPkg("web", "node1", "node2", "node3")
				p.MaxRelocate = config.Limit{N: 1}
				l.config(testCluster(p))
				l.join("node1", "node2", "node3")
				failedOnTwo(l, "node1", "node2")
			},
			want: "",
			note: "max_relocate 1 reached",
		},
		{
			name: "max_relocate none: never relocates",
			build: func(l *logb) {
				p := testPkg("web", "node1", "node2")
				p.MaxRelocate = config.Limit{}
				l.config(testCluster(p))
				l.join("node1", "node2")
				l.run("web", "node1", 1)
				l.failed("web", "node1", 1)
			},
			want: "",
			note: "max_relocate none reached",
		},
		{
			name: "failed with the other nodes down: waits, then placed when one joins",
			build: func(l *logb) {
				onlyNode1Up(l)
				l.failed("web", "node1", 1)
				l.join("node2")
			},
			want: "web->node2 epoch=2 reason=failover prev=node1 cause=e7",
		},
		{
			name: "auto_run disabled by the operator: no failover",
			build: func(l *logb) {
				webOn(l, "node1", "node2")
				l.add("web", events.PackageSwitchingChanged{Enabled: false, By: "op"}, "")
				l.failed("web", "node1", 1)
			},
			want: "",
			note: "auto_run disabled",
		},
		{
			name: "failure of an older epoch changes nothing",
			build: func(l *logb) {
				webOn(l, "node1", "node2")
				l.place("web", "node2", 2, ReasonOperatorMove, "node1")
				l.start("web", "node2", 2)
				l.failed("web", "node1", 1)
			},
			want: "",
		},
		{
			name: "node lost: its packages go to the next node",
			build: func(l *logb) {
				l.config(testCluster(web, testPkg("db", "node2", "node1")))
				l.join("node1", "node2", "node3")
				l.run("web", "node1", 1)
				l.run("db", "node2", 1)
				l.lost("node1")
			},
			want: "web->node2 epoch=2 reason=node_lost prev=node1 cause=e11",
		},
		{
			name: "node lost while placed but not started yet",
			build: func(l *logb) {
				l.config(testCluster(web))
				l.join("node1", "node2")
				l.place("web", "node1", 1, ReasonAutoRun, "")
				l.lost("node1")
			},
			want: "web->node2 epoch=2 reason=node_lost prev=node1 cause=e5",
		},
		{
			// A controller that decided before it read node1's loss: the
			// placement lands on a lost node and is placed again at once.
			name: "placed on a node already lost: placed again",
			build: func(l *logb) {
				l.config(testCluster(web))
				l.join("node1", "node2")
				l.lost("node1")
				l.place("web", "node1", 1, ReasonAutoRun, "")
			},
			want: "web->node2 epoch=2 reason=node_lost prev=node1 cause=e5",
		},
		{
			name: "node fenced counts as lost",
			build: func(l *logb) {
				webOn(l, "node1", "node2")
				l.add("node1", events.NodeFenced{Reason: "lease lost"}, "")
			},
			want: "web->node2 epoch=2 reason=node_lost prev=node1 cause=e7",
		},
		{
			name: "node lost with no other node: waits, then node_lost placement on join",
			build: func(l *logb) {
				webOn(l, "node1")
				l.lost("node1")
				l.join("node3")
			},
			want: "web->node3 epoch=2 reason=node_lost prev=node1 cause=e7",
		},
		{
			name: "node lost while an operator was halting: halted, stays down",
			build: func(l *logb) {
				webOn(l, "node1", "node2")
				l.add("web", events.PackageHalting{Node: "node1", Epoch: 1, Reason: "maint", By: "op"}, "")
				l.lost("node1")
			},
			want: "",
		},
		{
			name: "node lost while failing: failed there, failover",
			build: func(l *logb) {
				webOn(l, "node1", "node2")
				l.add("web", events.ServiceFailed{Service: "app", Node: "node1", Epoch: 1, Restarts: 3, Reason: "restarts used up"}, "")
				l.lost("node1")
			},
			want: "web->node2 epoch=2 reason=failover prev=node1 cause=e8",
		},
		{
			name: "node halted by an operator: packages move",
			build: func(l *logb) {
				webOn(l, "node1", "node2")
				haltNode1(l)
			},
			want: "web->node2 epoch=2 reason=node_halted prev=node1 cause=e7",
		},
		{
			name: "node halted, no other node: halted where it is",
			build: func(l *logb) {
				onlyNode1Up(l)
				haltNode1(l)
			},
			want: "package.halting web node=node1 epoch=1 reason=node_halted cause=e6",
		},
		{
			name: "node halted, auto_run off: halted where it is",
			build: func(l *logb) {
				webOn(l, "node1", "node2")
				l.add("web", events.PackageSwitchingChanged{Enabled: false, By: "op"}, "")
				haltNode1(l)
			},
			want: "package.halting web node=node1 epoch=1 reason=node_halted cause=e8",
		},
		{
			name:  "node halted, package halted there: waits for a node",
			build: haltedWithNode1,
			want:  "",
			note:  "waiting for an eligible node (node1, node2)",
		},
		{
			name: "node halted, then run again: the package halted there comes back",
			build: func(l *logb) {
				haltedWithNode1(l)
				l.join("node1")
			},
			want: "web->node1 epoch=2 reason=auto_run prev=node1 cause=e9",
		},
		{
			name: "halted by its host with auto_run on: placed again",
			build: func(l *logb) {
				webOn(l, "node1", "node2")
				l.add("web", events.PackageHalted{Node: "node1", Epoch: 1, Reason: "host_stopped"}, "")
			},
			want: "web->node1 epoch=2 reason=auto_run prev=node1 cause=e7",
		},
		{
			name: "operator halt: stays halted (auto_run off)",
			build: func(l *logb) {
				webOn(l, "node1", "node2")
				opHalt(l)
			},
			want: "",
		},
		{
			name: "operator halt, then enable: placed again",
			build: func(l *logb) {
				webOn(l, "node1", "node2")
				opHalt(l)
				l.add("web", events.PackageSwitchingChanged{Enabled: true, By: "op"}, "")
			},
			want: "web->node1 epoch=2 reason=auto_run prev=node1 cause=e9",
		},
		{
			name: "reset of a package failed everywhere: placed again",
			build: func(l *logb) {
				l.config(testCluster(testPkg("web", "node1")))
				l.join("node1")
				l.run("web", "node1", 1)
				l.failed("web", "node1", 1)
				l.add("web", events.PackageReset{By: "op"}, "")
			},
			want: "web->node1 epoch=2 reason=auto_run prev=node1 cause=e7",
		},
		{
			name: "failback automatic: back to the higher node when it joins",
			build: func(l *logb) {
				l.config(testCluster(failback(testPkg("web", "node1", "node2"))))
				l.join("node2")
				l.run("web", "node2", 1)
				l.join("node1")
			},
			want: "web->node1 epoch=2 reason=failback prev=node2 cause=e6",
		},
		{
			name: "failback automatic goes to the node that came back, not a higher one up before",
			build: func(l *logb) {
				l.config(testCluster(failback(testPkg("web", "node1", "node2", "node3"))))
				l.join("node1", "node3")
				l.add("web", events.PackageSwitchingChanged{Node: "node1", Enabled: false, By: "op"}, "")
				l.run("web", "node3", 1)
				l.join("node2")
			},
			want: "web->node2 epoch=2 reason=failback prev=node3 cause=e8",
		},
		{
			name: "failback manual: stays",
			build: func(l *logb) {
				l.config(testCluster(testPkg("web", "node1", "node2")))
				l.join("node2")
				l.run("web", "node2", 1)
				l.join("node1")
			},
			want: "",
		},
		{
			name: "failback automatic does not undo an operator move",
			build: func(l *logb) {
				l.config(testCluster(failback(testPkg("web", "node1", "node2"))))
				l.join("node1", "node2")
				l.run("web", "node1", 1)
				l.place("web", "node2", 2, ReasonOperatorMove, "node1")
				l.start("web", "node2", 2)
			},
			want: "",
		},
		{
			name: "failback automatic skips a node it failed on",
			build: func(l *logb) {
				l.config(testCluster(failback(testPkg("web", "node1", "node2"))))
				l.join("node1", "node2")
				l.run("web", "node1", 1)
				l.failed("web", "node1", 1)
				l.place("web", "node2", 2, ReasonFailover, "node1")
				l.start("web", "node2", 2)
				l.lost("node1")
				l.join("node1")
			},
			want: "",
		},
		{
			name: "failback waits until the package runs",
			build: func(l *logb) {
				l.config(testCluster(failback(testPkg("web", "node1", "node2"))))
				l.join("node2")
				l.place("web", "node2", 1, ReasonAutoRun, "")
				l.join("node1")
			},
			want: "",
		},
		{
			name: "failback needs auto_run",
			build: func(l *logb) {
				l.config(testCluster(failback(testPkg("web", "node1", "node2"))))
				l.join("node2")
				l.run("web", "node2", 1)
				l.add("web", events.PackageSwitchingChanged{Enabled: false, By: "op"}, "")
				l.join("node1")
			},
			want: "",
		},
		{
			name: "a trigger about another package decides nothing for this one",
			build: func(l *logb) {
				l.config(testCluster(web, testPkg("db", "node1")))
				l.add("db", events.PackageReset{By: "op"}, "")
				l.join("node1")
				l.add("db", events.PackageReset{By: "op"}, "")
			},
			want: "db->node1 epoch=1 reason=auto_run cause=e4",
		},
		{
			name: "drain moves a running package to the next eligible node",
			build: func(l *logb) {
				webOn(l, "node1", "node2", "node3")
				l.add("node1", events.NodeDrained{Reason: "firmware", By: "op"}, "")
			},
			want: "web->node2 epoch=2 reason=node_drained prev=node1 cause=e8",
		},
		{
			name: "drain moves a running package whose guest can migrate live",
			build: func(l *logb) {
				mig := testPkg("web", "node1", "node2", "node3")
				mig.Guest.Migrate = true
				l.config(testCluster(mig))
				l.join("node1", "node2", "node3")
				l.run("web", "node1", 1)
				l.add("node1", events.NodeDrained{Reason: "firmware", By: "op"}, "")
			},
			want: "web->node2 epoch=2 reason=node_drained prev=node1 migrate cause=e8",
		},
		{
			name: "drain with nowhere to go halts the package where it is",
			build: func(l *logb) {
				l.config(testCluster(testPkg("web", "node1")))
				l.join("node1")
				l.run("web", "node1", 1)
				l.add("node1", events.NodeDrained{By: "op"}, "")
			},
			want: "package.halting web node=node1 epoch=1 reason=node_drained cause=e6",
		},
		{
			name: "a drained node takes no placement, even after it joins again",
			build: func(l *logb) {
				l.config(testCluster(testPkg("web", "node1", "node2")))
				l.add("node1", events.NodeDrained{By: "op"}, "")
				l.join("node1")
			},
			want: "",
			note: "waiting for an eligible node",
		},
		{
			name: "node run ends the drain: a waiting package is placed there",
			build: func(l *logb) {
				l.config(testCluster(testPkg("web", "node1")))
				l.join("node1")
				l.add("node1", events.NodeDrained{By: "op"}, "")
				l.add("node1", events.NodeResumed{By: "op"}, "")
			},
			want: "web->node1 epoch=1 reason=auto_run cause=e4",
		},
		{
			name: "failback automatic returns after the drain ends",
			build: func(l *logb) {
				l.config(testCluster(failback(testPkg("web", "node1", "node2"))))
				l.join("node1", "node2")
				l.add("node1", events.NodeDrained{By: "op"}, "")
				l.run("web", "node2", 1)
				l.add("node1", events.NodeResumed{By: "op"}, "")
			},
			want: "web->node1 epoch=2 reason=failback prev=node2 cause=e8",
		},
		{
			// package.failed is written only once the package is down
			// there (one its node wrote before it read the freeze): it
			// no longer occupies the frozen node.
			name: "frozen node: a package already down there may fail over",
			build: func(l *logb) {
				webOn(l, "node1", "node2", "node3")
				freeze(l)
				l.failed("web", "node1", 1)
			},
			want: "web->node2 epoch=2 reason=failover prev=node1 cause=e9",
		},
		{
			name: "frozen node: a service failure there moves nothing",
			build: func(l *logb) {
				webOn(l, "node1", "node2", "node3")
				freeze(l)
				l.add("web", events.ServiceFailed{Service: "httpd", Node: "node1", Epoch: 1, Reason: "x"}, "")
			},
			want: "",
		},
		{
			name: "frozen node: an operator halt of it moves nothing",
			build: func(l *logb) {
				webOn(l, "node1", "node2", "node3")
				freeze(l)
				l.add("node1", events.NodeHalted{By: "op"}, "")
			},
			want: "",
			note: "node node1 is frozen",
		},
		{
			name: "frozen node takes no new placement",
			build: func(l *logb) {
				l.config(testCluster(testPkg("web", "node1", "node2")))
				l.join("node1", "node2")
				freeze(l)
				l.add("node2", events.NodeJoined{}, "")
			},
			want: "web->node2 epoch=1 reason=auto_run cause=e5",
		},
		{
			name: "thaw: what the freeze held is decided",
			build: func(l *logb) {
				webOn(l, "node1", "node2", "node3")
				freeze(l)
				l.add("node1", events.NodeDrained{By: "op"}, "")
				l.add("node1", events.NodeThawed{By: "op"}, "")
			},
			want: "web->node2 epoch=2 reason=node_drained prev=node1 cause=e10",
		},
		{
			name: "an unrelated node's event decides nothing",
			build: func(l *logb) {
				l.config(testCluster(testPkg("web", "node1")))
				l.join("node2")
			},
			want: "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, s, got := decideCase(t, tt.build, tt.want, "web", tt.note)
			for _, e := range got {
				if e.ID != "" || !e.Time.IsZero() || e.Source != Source {
					t.Errorf("decision %+v: want no ID, no Time, Source %s", e, Source)
				}
			}
			// Applying the decisions leaves nothing due for their packages.
			l.applyAll(got)
			s = l.state()
			for _, e := range Reconcile(s) {
				for _, g := range got {
					if g.Subject == e.Subject {
						t.Errorf("after applying %s, Reconcile still wants %s", brief(got), brief([]events.Event{e}))
					}
				}
			}
		})
	}
}

func TestReconcile(t *testing.T) {
	l := newLog(t)
	l.config(testCluster(testPkg("web", "node1", "node2"), testPkg("db", "node2"), testPkg("idle", "node3")))
	l.join("node1")             // e2
	l.run("web", "node1", 1)    // e3..e5
	l.failed("web", "node1", 1) // e6
	l.join("node2")             // e7
	s := l.state()
	got := brief(Reconcile(s))
	want := "web->node2 epoch=2 reason=failover prev=node1 cause=e7; db->node2 epoch=1 reason=auto_run cause=e7"
	if got != want {
		t.Errorf("Reconcile:\n got %s\nwant %s", got, want)
	}
	// Decide on the failure alone (node2 not yet up) decided nothing.
	if d := Decide(FoldUntil(l.evs, 6), l.evs[5]); len(d) != 0 {
		t.Errorf("Decide before node2 joined = %s, want nothing", brief(d))
	}
	// No config, nothing due.
	if d := Reconcile(&State{}); d != nil {
		t.Errorf("Reconcile(empty) = %s", brief(d))
	}
}

func TestEligible(t *testing.T) {
	l := newLog(t)
	l.config(testCluster(testPkg("web", "node1", "node2", "node3")))
	l.join("node1", "node2")
	l.add("web", events.PackageSwitchingChanged{Node: "node2", Enabled: false, By: "op"}, "")
	s := l.state()
	for node, want := range map[string]string{
		"node1": "",
		"node2": "switching",
		"node3": "down",
		"node4": "not one of",
	} {
		err := s.Eligible("web", node)
		if (err == nil) != (want == "") || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("Eligible(web, %s) = %v, want %q", node, err, want)
		}
	}
	if err := s.Eligible("nope", "node1"); err == nil {
		t.Error("Eligible(nope) = nil, want an error")
	}
}

func TestReasonCode(t *testing.T) {
	for in, want := range map[string]string{
		"failover":                 "failover",
		"operator_move: kernel up": "operator_move",
		"":                         "",
	} {
		if got := ReasonCode(in); got != want {
			t.Errorf("ReasonCode(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestExpired(t *testing.T) {
	l := newLog(t)
	l.config(testCluster(testPkg("web", "node1", "node2")))
	l.join("node1", "node2")
	until := t0.Add(time.Hour)
	l.add("node1", events.NodeFrozen{Until: until, By: "op"}, "") // e4
	l.add("node2", events.NodeFrozen{Until: until.Add(time.Hour), By: "op"}, "")
	s := l.state()
	if got := Expired(s, until.Add(-time.Millisecond)); len(got) != 0 {
		t.Errorf("Expired before the end = %s, want nothing", brief(got))
	}
	got := Expired(s, until)
	if b := brief(got); b != "node.thawed node1 reason=expired cause=e4" {
		t.Errorf("Expired at the end = %s", b)
	}
	l.applyAll(got)
	if got := Expired(l.state(), until); len(got) != 0 {
		t.Errorf("Expired after the thaw = %s, want nothing", brief(got))
	}
}

func TestMayDeclareLost(t *testing.T) {
	ttl := 5 * time.Second
	until := t0.Add(time.Hour)
	l := newLog(t)
	l.join("node1")
	if !l.state().Node("node1").MayDeclareLost(t0, ttl, time.Time{}) {
		t.Error("a joined node that was never frozen: want lost allowed")
	}
	l.add("node1", events.NodeFrozen{Until: until, By: "op"}, "")
	if l.state().Node("node1").MayDeclareLost(until.Add(time.Hour), ttl, until) {
		t.Error("frozen (even past its end, not yet thawed): want lost held")
	}
	thawed := l.add("node1", events.NodeThawed{By: "op"}, "") // thawed early
	n := l.state().Node("node1")
	if n.MayDeclareLost(until.Add(ttl-time.Millisecond), ttl, time.Time{}) {
		t.Error("thawed early, no unfrozen renewal seen: the guard may be disarmed until the freeze's end: want lost held until end + ttl")
	}
	if n.MayDeclareLost(thawed.Time.Add(time.Second), ttl, thawed.Time) {
		t.Error("thawed early, the last unfrozen renewal seen is not after the thaw: want lost held")
	}
	if !n.MayDeclareLost(thawed.Time.Add(time.Second), ttl, thawed.Time.Add(time.Millisecond)) {
		t.Error("thawed early, an unfrozen renewal seen after the thaw (guard re-armed): want lost allowed")
	}
	if !n.MayDeclareLost(until.Add(ttl), ttl, time.Time{}) {
		t.Error("thawed, end + ttl passed: want lost allowed")
	}
	if (*NodeState)(nil).MayDeclareLost(t0, ttl, time.Time{}) != true {
		t.Error("nil node: want true")
	}
}
