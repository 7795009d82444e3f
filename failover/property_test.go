package failover

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

var (
	propNodes = []string{"node1", "node2", "node3"}
	propPkgs  = []string{"web", "db", "mq"}
)

// genConfig draws a cluster configuration over propNodes and propPkgs.
func genConfig(t *rapid.T) *config.Cluster {
	c := &config.Cluster{Cluster: "prop", Nodes: propNodes}
	for _, name := range propPkgs {
		nodes := rapid.SliceOfNDistinct(rapid.SampledFrom(propNodes), 1, 3, rapid.ID[string]).Draw(t, name+".nodes")
		p := testPkg(name, nodes...)
		p.FailoverPolicy = rapid.SampledFrom([]string{config.ConfiguredNode, config.MinPackageNode}).Draw(t, name+".failover")
		p.FailbackPolicy = rapid.SampledFrom([]string{config.FailbackManual, config.FailbackAutomatic}).Draw(t, name+".failback")
		p.AutoRun = boolp(rapid.Float64Range(0, 1).Draw(t, name+".autorun") < 0.85)
		p.MaxRelocate = rapid.SampledFrom([]config.Limit{config.Unlimited, {N: 0}, {N: 1}, {N: 2}}).Draw(t, name+".maxrel")
		c.Packages = append(c.Packages, p)
	}
	return c
}

// genLog draws a log as the cluster could write it: the controller's own
// decisions and operator commands mixed with arbitrary host, agent and node
// events (also stale, duplicate-looking and out-of-order ones), with gaps in
// the sequence.
func genLog(t *rapid.T) []events.Event { return genLogFor(t, genConfig) }

// genLogFor is genLog with the configuration drawn by gen.
func genLogFor(t *rapid.T, gen func(*rapid.T) *config.Cluster) []events.Event {
	var evs []events.Event
	var seq uint64
	s := &State{} // the fold of evs, kept up to date
	add := func(subject string, data events.Payload, cause string) {
		seq += uint64(rapid.IntRange(1, 3).Draw(t, "gap"))
		evs = append(evs, events.Event{
			ID: fmt.Sprintf("e%d", seq), Source: "/prop", Subject: subject,
			Time: t0.Add(time.Duration(seq) * time.Millisecond), CauseID: cause, Data: data, Seq: seq,
		})
		s.Apply(evs[len(evs)-1])
	}
	decided := func(out []events.Event) {
		for _, d := range out {
			seq += uint64(rapid.IntRange(1, 3).Draw(t, "gap"))
			d.ID, d.Time, d.Seq = fmt.Sprintf("e%d", seq), t0.Add(time.Duration(seq)*time.Millisecond), seq
			evs = append(evs, d)
			s.Apply(d)
		}
	}
	cfg, err := json.Marshal(gen(t))
	if err != nil {
		t.Fatal(err)
	}
	add("", events.ConfigApplied{Config: cfg, Hash: "h"}, "")
	n := rapid.IntRange(0, 60).Draw(t, "steps")
	for range n {
		pkg := rapid.SampledFrom(propPkgs).Draw(t, "pkg")
		node := rapid.SampledFrom(propNodes).Draw(t, "node")
		p := s.Package(pkg)
		if p == nil {
			p = &PackageState{}
		}
		// Mostly the current epoch, sometimes an older or a future one.
		ep := rapid.SampledFrom([]uint64{p.Epoch, p.Epoch, p.Epoch, max(p.Epoch, 1) - 1, p.Epoch + 1}).Draw(t, "epoch")
		switch rapid.IntRange(0, 15).Draw(t, "kind") {
		case 0, 1, 2, 3:
			// The package's host moves it on, as the protocol says.
			switch p.Phase {
			case PhasePlaced:
				add(pkg, events.PackageStarting{Node: p.Node, Epoch: p.Epoch}, "")
			case PhaseStarting:
				add(pkg, events.PackageStarted{Node: p.Node, Epoch: p.Epoch}, "")
			case PhaseRunning:
				add(pkg, rapid.SampledFrom([]events.Payload{
					events.ServiceRestarting{Service: "app", Node: p.Node, Epoch: p.Epoch, Attempt: 1},
					events.ServiceFailed{Service: "app", Node: p.Node, Epoch: p.Epoch},
					events.PackageFailed{Node: p.Node, Epoch: p.Epoch, Reason: "service_failed"},
					events.PackageHalting{Node: p.Node, Epoch: p.Epoch, Reason: "x"},
				}).Draw(t, "running"), "")
			case PhaseFailing:
				add(pkg, events.PackageFailed{Node: p.Node, Epoch: p.Epoch, Reason: "service_failed"}, "")
			case PhaseHalting:
				add(pkg, events.PackageHalted{Node: p.Node, Epoch: p.Epoch, Reason: "x"}, "")
			default:
				add(node, events.NodeJoined{}, "")
			}
		case 4, 5:
			add(node, events.NodeJoined{}, "")
		case 6:
			add(node, events.NodeLost{Reason: "lease expired"}, "")
		case 7:
			add(node, rapid.SampledFrom([]events.Payload{events.NodeFenced{Reason: "x"}, events.NodeHalted{By: "op"}, events.NodeHalted{},
				events.NodeDrained{By: "op"}, events.NodeResumed{By: "op"},
				events.NodeFrozen{Until: t0.Add(time.Hour), By: "op"}, events.NodeThawed{By: "op"}}).Draw(t, "nodedown"), "")
		case 8:
			decided(Reconcile(s))
		case 9, 10, 11:
			// Anything, of any epoch, in any order.
			add(pkg, rapid.SampledFrom([]events.Payload{
				events.PackageStarting{Node: node, Epoch: ep},
				events.PackageStarted{Node: node, Epoch: ep},
				events.PackageFailed{Node: node, Epoch: ep, Reason: "service_failed"},
				events.PackageHalted{Node: node, Epoch: ep, Reason: "x"},
				events.PackageHalting{Node: node, Epoch: ep, Reason: "x", By: "op"},
				events.PackageHalting{Node: node, Epoch: ep, Reason: "x"},
				events.PackagePlaced{Node: node, Epoch: ep, Reason: ReasonOperatorMove, By: "op"},
				events.PackageReset{By: "op"},
				events.PackageSwitchingChanged{Node: node, Enabled: rapid.Bool().Draw(t, "on"), By: "op"},
				events.ServiceRestarting{Service: "app", Node: node, Epoch: ep, Attempt: rapid.IntRange(1, 5).Draw(t, "attempt")},
				events.ServiceFailed{Service: "app", Node: node, Epoch: ep},
				events.ProcessStarted{Guest: pkg + "vm", Service: "app", PID: 1, RequestID: "r", Epoch: ep},
				events.ProcessExited{Guest: pkg + "vm", Service: "app", PID: 1, RequestID: "r", Epoch: ep},
				events.GuestStarted{Guest: pkg + "vm", Node: node, Epoch: ep},
				events.GuestLost{Guest: pkg + "vm", Node: node, Epoch: ep},
				events.GuestStopped{Guest: pkg + "vm", Node: node, Epoch: ep},
			}).Draw(t, "any"), "")
		default:
			cmd := drawCommand(t, pkg, node, t0)
			if cmd.Op == OpNodeHalt || cmd.Op == OpNodeRun || cmd.Op == OpNodeDrain || cmd.Op == OpNodeFreeze || cmd.Op == OpNodeThaw {
				cmd.Node = node
			}
			out, err := s.Command(cmd)
			if (err == nil) == (out == nil) {
				t.Fatalf("Command(%+v) = %v, %v: want events or an error", cmd, out, err)
			}
			decided(out)
		}
		// Most of the time the controller answers the last event.
		if rapid.Float64Range(0, 1).Draw(t, "decide") < 0.7 {
			last := evs[len(evs)-1]
			decided(Decide(s, last))
		}
	}
	return evs
}

// TestPropDuplicateChangesNothing: an event seen again, right away or later,
// changes nothing.
func TestPropDuplicateChangesNothing(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		evs := genLog(t)
		i := rapid.IntRange(0, len(evs)-1).Draw(t, "dup")
		j := rapid.IntRange(i+1, len(evs)).Draw(t, "at")
		withDup := slices.Insert(slices.Clone(evs), j, evs[i])
		if !equalStates(Fold(withDup), Fold(evs)) {
			t.Fatalf("re-delivering seq %d at position %d changed the state", evs[i].Seq, j)
		}
	})
}

// TestPropPrefixThenRest: folding a prefix, then (on a clone) the rest,
// equals folding the whole log; FoldUntil of the prefix's last seq equals
// the prefix's fold.
func TestPropPrefixThenRest(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		evs := genLog(t)
		k := rapid.IntRange(0, len(evs)).Draw(t, "k")
		s := Fold(evs[:k])
		var at uint64
		if k > 0 {
			at = evs[k-1].Seq
		}
		if !equalStates(FoldUntil(evs, at), s) {
			t.Fatalf("FoldUntil(%d) differs from the fold of the first %d events", at, k)
		}
		c := s.Clone()
		for _, e := range evs[k:] {
			c.Apply(e)
		}
		if !equalStates(c, Fold(evs)) {
			t.Fatalf("prefix of %d then the rest differs from the whole", k)
		}
	})
}

// TestPropDecisions: every decision places a configured package with
// auto_run on onto an eligible node (never a drained or frozen one) under
// the next epoch, at most once per package, the same every time, and none
// is about a package on a frozen node; and once applied nothing more is due
// for it.
func TestPropDecisions(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		evs := genLog(t)
		s := Fold(evs)
		trigger := evs[rapid.IntRange(0, len(evs)-1).Draw(t, "trigger")]
		for _, out := range [][]events.Event{Reconcile(s), Decide(s, trigger)} {
			seen := map[string]bool{}
			for _, e := range out {
				p := s.Package(e.Subject)
				if p != nil && p.Phase.Owned() && s.Node(p.Node).Frozen() {
					t.Fatalf("decision %s about %s, which is on frozen %s", brief([]events.Event{e}), e.Subject, p.Node)
				}
				if h, ok := e.Data.(events.PackageHalting); ok {
					// Only a package on a node an operator halted or drained.
					if p == nil {
						t.Fatalf("halting %s, a package never placed", e.Subject)
					}
					halted := h.Reason == ReasonNodeHalted && s.Node(p.Node).Membership == MemberHalted
					drained := h.Reason == ReasonNodeDrained && s.Node(p.Node).Drained()
					if h.Node != p.Node || h.Epoch != p.Epoch || h.By != "" || !(halted || drained) ||
						!p.Phase.active() || seen[e.Subject] {
						t.Fatalf("halting %s: %+v, package %+v", e.Subject, h, p)
					}
					seen[e.Subject] = true
					continue
				}
				d, ok := e.Data.(events.PackagePlaced)
				if !ok {
					t.Fatalf("decision %s is neither a placement nor a halt", e.Type())
				}
				var epoch uint64
				var prev string
				if p != nil {
					epoch, prev = p.Epoch, p.Node
				}
				switch {
				case seen[e.Subject]:
					t.Fatalf("%s placed twice in one decision", e.Subject)
				case d.Epoch != epoch+1:
					t.Fatalf("%s placed with epoch %d, current %d", e.Subject, d.Epoch, epoch)
				case d.PreviousNode != prev:
					t.Fatalf("%s previous node %q, current %q", e.Subject, d.PreviousNode, prev)
				case !s.AutoRunEnabled(e.Subject):
					t.Fatalf("%s placed with auto_run off", e.Subject)
				case e.Source != Source || e.ID != "" || !e.Time.IsZero():
					t.Fatalf("decision %+v: want Source %s, no ID, no Time", e, Source)
				}
				if err := s.Eligible(e.Subject, d.Node); err != nil {
					t.Fatalf("%s placed on %s: %v", e.Subject, d.Node, err)
				}
				if code := ReasonCode(d.Reason); code == ReasonFailover || code == ReasonNodeLost {
					cp, _ := s.Config.Package(e.Subject)
					if d.Node != prev && !cp.MaxRelocate.Allows(p.Relocations) {
						t.Fatalf("%s relocated beyond max_relocate %s", e.Subject, cp.MaxRelocate)
					}
				}
				seen[e.Subject] = true
			}
		}
		if a, b := brief(Decide(s, trigger)), brief(Decide(s.Clone(), trigger)); a != b {
			t.Fatalf("Decide is not deterministic: %s vs %s", a, b)
		}
		// Apply what Reconcile decided: nothing is due for those packages.
		due := Reconcile(s)
		seq := s.Seq
		for _, e := range due {
			seq++
			e.ID, e.Seq = fmt.Sprintf("d%d", seq), seq
			s.Apply(e)
		}
		for _, e := range Reconcile(s) {
			if slices.ContainsFunc(due, func(d events.Event) bool { return d.Subject == e.Subject }) {
				t.Fatalf("after applying %s, still due: %s", brief(due), brief([]events.Event{e}))
			}
		}
	})
}

// TestPropViewAndExplain: building the view, rendering it and explaining
// every package works on any log (no panic, no error) and explains start
// at an event about the package.
func TestPropViewAndExplain(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		evs := genLog(t)
		v := BuildView(Fold(evs))
		if err := v.WriteText(discard{}, true); err != nil {
			t.Fatal(err)
		}
		if _, err := json.Marshal(v); err != nil {
			t.Fatal(err)
		}
		for _, pkg := range propPkgs {
			chain := Explain(evs, pkg)
			if len(chain) > len(evs) {
				t.Fatalf("chain of %d events from a log of %d", len(chain), len(evs))
			}
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// drawCommand draws an operator's command (any operation) on pkg, with
// node or no node, at now.
func drawCommand(t *rapid.T, pkg, node string, now time.Time) Command {
	return Command{
		Op: rapid.SampledFrom([]Op{OpRun, OpHalt, OpEnable, OpDisable, OpMove, OpReset, OpNodeHalt, OpNodeRun,
			OpNodeDrain, OpNodeFreeze, OpNodeThaw}).Draw(t, "op"),
		Package: pkg,
		Node:    rapid.SampledFrom([]string{"", node}).Draw(t, "cmdnode"),
		By:      "op",
		Now:     now,
	}
}
