package invariant

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

// t0 is the time of the first event of every hand-made log.
var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// logb builds a log by hand: each add gets the next sequence and a time
// 100 ms after the previous event, unless at moves the clock.
type logb struct {
	evs []events.Event
	now time.Time
}

func newLog() *logb { return &logb{now: t0} }

// at sets the clock to t0+d for the next events.
func (l *logb) at(d time.Duration) *logb { l.now = t0.Add(d); return l }

func (l *logb) add(subject, cause string, d events.Payload) events.Event {
	l.now = l.now.Add(100 * time.Millisecond)
	e := events.Event{ID: fmt.Sprintf("id%d", len(l.evs)+1), Source: "/t", Subject: subject, CauseID: cause, Data: d, Seq: uint64(len(l.evs) + 1), Time: l.now}
	l.evs = append(l.evs, e)
	return e
}

// startWeb begins a log: the config, n1 and n2 joined, web placed on node
// (epoch 1, caused by n1's join) and starting there.
func (l *logb) startWeb(node string) (placed, starting events.Event) {
	l.add("", "", events.ConfigApplied{Config: json.RawMessage(testConfig), Hash: "h"})
	j1 := l.add("n1", "", events.NodeJoined{})
	l.add("n2", "", events.NodeJoined{})
	placed = l.add("web", j1.ID, events.PackagePlaced{Node: node, Epoch: 1, Reason: "auto_run"})
	starting = l.add("web", placed.ID, events.PackageStarting{Node: node, Epoch: 1})
	return placed, starting
}

// autoRun adds pkg's placement on node by auto_run (epoch 1, no cause) and
// its package.starting there.
func (l *logb) autoRun(pkg, node string) {
	p := l.add(pkg, "", events.PackagePlaced{Node: node, Epoch: 1, Reason: "auto_run"})
	l.add(pkg, p.ID, events.PackageStarting{Node: node, Epoch: 1})
}

// checkOn returns what Check reports, a line a violation, for the log that
// build writes after config (a cluster config as JSON) and the joins of n1
// and n2.
func checkOn(config string, build func(l *logb)) string {
	l := newLog()
	l.add("", "", events.ConfigApplied{Config: json.RawMessage(config), Hash: "h"})
	l.add("n1", "", events.NodeJoined{})
	l.add("n2", "", events.NodeJoined{})
	build(l)
	return strings.Join(Check(l.evs), "\n")
}

// wantCheck fails t unless got, checkOn's report, is empty where want is,
// else holds want.
func wantCheck(t *testing.T, got, want string) {
	t.Helper()
	if want == "" && got != "" || want != "" && !strings.Contains(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

const testConfig = `{"cluster":"t","node_timeout":"3s","guest_timeout":"3s","nodes":["n1","n2"],
 "packages":[{"name":"web","nodes":["n1","n2"],
   "guest":{"name":"g","driver":"process","restart":"none","start_timeout":"5s"},
   "services":[{"name":"s","cmd":["x"],"restart":"2","halt_timeout":"1s"},
               {"name":"w","cmd":["x"],"restart":"1","restart_window":"10s","halt_timeout":"2s"}]}]}`

// clean returns a log that keeps every promise: a config, a start on n1, two
// restarts, a failure, a failover to n2, the loss of n2, a placement back on
// n1, an operator halt. Each violation test breaks one step of it.
type cleanLog struct {
	*logb
	placed1, starting1, guest1, started1, failed1, placed2, starting2, guest2, lost2, placed3 events.Event
	// fenceExit is the index of the exit of n2's process when n2 fences.
	fenceExit int
}

func clean() *cleanLog {
	l := &cleanLog{logb: newLog()}
	l.placed1, l.starting1 = l.startWeb("n1")
	l.guest1 = l.add("web", l.starting1.ID, events.GuestStarted{Guest: "g", Node: "n1", Epoch: 1})
	ps := l.add("web", l.guest1.ID, events.ProcessStarted{Guest: "g", Service: "s", PID: 10, RequestID: l.guest1.ID + "/s", Epoch: 1})
	l.started1 = l.add("web", ps.ID, events.PackageStarted{Node: "n1", Epoch: 1})
	cause := l.guest1.ID + "/s"
	pid := 10
	for i := 1; i <= 2; i++ {
		x := l.add("web", cause, events.ProcessExited{Guest: "g", Service: "s", PID: pid, ExitCode: 1, RequestID: cause, Epoch: 1})
		r := l.add("web", x.ID, events.ServiceRestarting{Service: "s", Node: "n1", Epoch: 1, Attempt: i, RestartsLeft: 2 - i})
		pid++
		l.add("web", r.ID, events.ProcessStarted{Guest: "g", Service: "s", PID: pid, RequestID: r.ID, Epoch: 1})
		cause = r.ID
	}
	x := l.add("web", cause, events.ProcessExited{Guest: "g", Service: "s", PID: pid, ExitCode: 1, RequestID: cause, Epoch: 1})
	sf := l.add("web", x.ID, events.ServiceFailed{Service: "s", Node: "n1", Epoch: 1, Restarts: 2, Reason: "restarts used up"})
	gs := l.add("web", sf.ID, events.GuestStopped{Guest: "g", Node: "n1", Epoch: 1, Reason: "service s failed"})
	l.failed1 = l.add("web", gs.ID, events.PackageFailed{Node: "n1", Epoch: 1, Reason: "service s failed", Service: "s"})
	l.placed2 = l.add("web", l.failed1.ID, events.PackagePlaced{Node: "n2", Epoch: 2, Reason: "failover", PreviousNode: "n1"})
	l.starting2 = l.add("web", l.placed2.ID, events.PackageStarting{Node: "n2", Epoch: 2})
	l.guest2 = l.add("web", l.starting2.ID, events.GuestStarted{Guest: "g", Node: "n2", Epoch: 2})
	ps2 := l.add("web", l.guest2.ID, events.ProcessStarted{Guest: "g", Service: "s", PID: 20, RequestID: l.guest2.ID + "/s", Epoch: 2})
	l.add("web", ps2.ID, events.PackageStarted{Node: "n2", Epoch: 2})
	l.add("web", l.guest2.ID+"/s", events.ProcessExited{Guest: "g", Service: "s", PID: 20, ExitCode: -1, Signal: "SIGTERM", RequestID: l.guest2.ID + "/s", Epoch: 2, Reason: "fenced"})
	l.fenceExit = len(l.evs) - 1
	l.lost2 = l.add("n2", "", events.NodeLost{Reason: "lease expired"})
	l.placed3 = l.add("web", l.lost2.ID, events.PackagePlaced{Node: "n1", Epoch: 3, Reason: "node_lost", PreviousNode: "n2"})
	return l
}

// finish ends the clean log: web starts on n1 under epoch 3 and an operator
// halts it.
func (l *cleanLog) finish() {
	st := l.add("web", l.placed3.ID, events.PackageStarting{Node: "n1", Epoch: 3})
	g := l.add("web", st.ID, events.GuestStarted{Guest: "g", Node: "n1", Epoch: 3})
	ps := l.add("web", g.ID, events.ProcessStarted{Guest: "g", Service: "s", PID: 30, RequestID: g.ID + "/s", Epoch: 3})
	l.add("web", ps.ID, events.PackageStarted{Node: "n1", Epoch: 3})
	h := l.add("web", "", events.PackageHalting{Node: "n1", Epoch: 3, Reason: "maintenance", By: "op"})
	l.add("web", g.ID+"/s", events.ProcessExited{Guest: "g", Service: "s", PID: 30, ExitCode: -1, Signal: "SIGTERM", RequestID: g.ID + "/s", Epoch: 3, Reason: "stopped"})
	gs := l.add("web", h.ID, events.GuestStopped{Guest: "g", Node: "n1", Epoch: 3, Reason: "maintenance"})
	l.add("web", gs.ID, events.PackageHalted{Node: "n1", Epoch: 3, Reason: "maintenance"})
}

func TestCleanLogPasses(t *testing.T) {
	l := clean()
	l.finish()
	r := Verify(l.evs, Options{})
	if !r.OK() {
		t.Fatalf("clean log reported:\n%s", strings.Join(Check(l.evs), "\n"))
	}
	if len(r.Open) != 0 {
		t.Errorf("open actions in a finished log: %+v", r.Open)
	}
	for _, rule := range []Rule{RuleOneEpoch, RuleReleasedFirst, RuleCause, RuleRestartPolicy, RuleLiveNode} {
		if r.Checked[rule] == 0 {
			t.Errorf("rule %s looked at no event of the clean log", rule)
		}
	}
	if r.FirstSeq != 1 || r.LastSeq != uint64(len(l.evs)) || r.Events != len(l.evs) {
		t.Errorf("report covers %d..%d (%d events), want 1..%d", r.FirstSeq, r.LastSeq, r.Events, len(l.evs))
	}
}

// TestViolations breaks the clean log one way per case and wants exactly
// that violation, at that sequence.
func TestViolations(t *testing.T) {
	cases := []struct {
		name string
		// doctor changes the log and returns the sequence to be reported.
		doctor func(l *cleanLog) uint64
		rule   Rule
		want   string
	}{
		{"two live epochs", func(l *cleanLog) uint64 {
			// After n2's loss its guest still reports a process of epoch 2
			// starting (the fence did not stop it), and it never exits
			// when epoch 3 starts one on n1.
			l.add("web", l.guest2.ID, events.ProcessStarted{Guest: "g", Service: "s", PID: 21, RequestID: l.guest2.ID + "/s", Epoch: 2})
			st := l.add("web", l.placed3.ID, events.PackageStarting{Node: "n1", Epoch: 3})
			g := l.add("web", st.ID, events.GuestStarted{Guest: "g", Node: "n1", Epoch: 3})
			return l.add("web", g.ID, events.ProcessStarted{Guest: "g", Service: "s", PID: 30, RequestID: g.ID + "/s", Epoch: 3}).Seq
		}, RuleOneEpoch, "two placements at once"},
		{"two live epochs, a host manager of n2 recording its lease take", func(l *cleanLog) uint64 {
			// node.lease_taken changes nothing: not a join, so n2 stays
			// lost, and its late start still makes two live epochs.
			l.add("n2", "", events.NodeLeaseTaken{Holder: "h2"})
			l.add("web", l.guest2.ID, events.ProcessStarted{Guest: "g", Service: "s", PID: 21, RequestID: l.guest2.ID + "/s", Epoch: 2})
			st := l.add("web", l.placed3.ID, events.PackageStarting{Node: "n1", Epoch: 3})
			g := l.add("web", st.ID, events.GuestStarted{Guest: "g", Node: "n1", Epoch: 3})
			return l.add("web", g.ID, events.ProcessStarted{Guest: "g", Service: "s", PID: 30, RequestID: g.ID + "/s", Epoch: 3}).Seq
		}, RuleOneEpoch, "two placements at once"},
		{"start before release", func(l *cleanLog) uint64 {
			// Placed on n1 by an operator while epoch 2 on n2 still runs,
			// without a loss: epoch 3 must not start.
			l.evs = l.evs[:len(l.evs)-2]
			p := l.add("web", "", events.PackagePlaced{Node: "n1", Epoch: 3, Reason: "operator_move", By: "op"})
			return l.add("web", p.ID, events.PackageStarting{Node: "n1", Epoch: 3}).Seq
		}, RuleReleasedFirst, "epoch 3 starts while epoch 2 on n2"},
		{"guest started before release", func(l *cleanLog) uint64 {
			l.evs = l.evs[:len(l.evs)-2]
			p := l.add("web", "", events.PackagePlaced{Node: "n1", Epoch: 3, Reason: "operator_move", By: "op"})
			return l.add("web", p.ID, events.GuestStarted{Guest: "g", Node: "n1", Epoch: 3}).Seq
		}, RuleReleasedFirst, "is not released"},
		{"cause missing", func(l *cleanLog) uint64 {
			return l.add("web", "nope", events.PackageStarting{Node: "n1", Epoch: 3}).Seq
		}, RuleCause, "cause nope is not in the log"},
		{"no cause", func(l *cleanLog) uint64 {
			return l.add("web", "", events.ServiceRestarting{Service: "s", Node: "n1", Epoch: 3, Attempt: 1}).Seq
		}, RuleCause, "names no cause"},
		{"cause after", func(l *cleanLog) uint64 {
			e := l.add("web", "id999", events.PackageStarting{Node: "n1", Epoch: 3})
			l.evs[len(l.evs)-1].ID = "id999"
			return e.Seq
		}, RuleCause, "comes after it"},
		{"restart caused by a placement", func(l *cleanLog) uint64 {
			return l.add("web", l.placed3.ID, events.ServiceRestarting{Service: "s", Node: "n1", Epoch: 3, Attempt: 1}).Seq
		}, RuleCause, "not by an exit of that service"},
		{"failover before the release", func(l *cleanLog) uint64 {
			// Epoch 3 on n1 runs, nothing failed: no failover is due.
			return l.add("web", l.placed3.ID, events.PackagePlaced{Node: "n1", Epoch: 4, Reason: "failover"}).Seq
		}, RuleCause, "failover placement while epoch 3 on n1 (placed at seq 26) is neither failed, halted nor lost"},
		{"a third restart of restart: 2", func(l *cleanLog) uint64 {
			// Epoch 1's service s had its two restarts; one more exit is
			// restarted again instead of failing.
			l.evs = l.evs[:14] // up to the second restart's process.started
			last := l.evs[len(l.evs)-1].Data.(events.ProcessStarted)
			x := l.add("web", last.RequestID, events.ProcessExited{Guest: "g", Service: "s", PID: last.PID, RequestID: last.RequestID, Epoch: 1})
			return l.add("web", x.ID, events.ServiceRestarting{Service: "s", Node: "n1", Epoch: 1, Attempt: 3}).Seq
		}, RuleRestartPolicy, "after 2 restarts; restart: 2 allows no more"},
		{"restart window", func(l *cleanLog) uint64 {
			st := l.add("web", l.placed3.ID, events.PackageStarting{Node: "n1", Epoch: 3})
			g := l.add("web", st.ID, events.GuestStarted{Guest: "g", Node: "n1", Epoch: 3})
			l.add("web", g.ID, events.ProcessStarted{Guest: "g", Service: "w", PID: 30, RequestID: g.ID + "/w", Epoch: 3})
			x := l.add("web", g.ID+"/w", events.ProcessExited{Guest: "g", Service: "w", PID: 30, RequestID: g.ID + "/w", Epoch: 3})
			r := l.add("web", x.ID, events.ServiceRestarting{Service: "w", Node: "n1", Epoch: 3, Attempt: 1})
			l.add("web", r.ID, events.ProcessStarted{Guest: "g", Service: "w", PID: 31, RequestID: r.ID, Epoch: 3})
			x2 := l.add("web", r.ID, events.ProcessExited{Guest: "g", Service: "w", PID: 31, RequestID: r.ID, Epoch: 3})
			return l.add("web", x2.ID, events.ServiceRestarting{Service: "w", Node: "n1", Epoch: 3, Attempt: 2}).Seq
		}, RuleRestartPolicy, "within restart_window 10s"},
		{"started on a lost node (a placement there is void)", func(l *cleanLog) uint64 {
			l.evs = l.evs[:len(l.evs)-1]
			p := l.add("web", l.lost2.ID, events.PackagePlaced{Node: "n2", Epoch: 3, Reason: "node_lost"})
			return l.add("web", p.ID, events.PackageStarting{Node: "n2", Epoch: 3}).Seq
		}, RuleLiveNode, "acts on node n2, node.lost at seq"},
		{"a void placement started once its node joined again", func(l *cleanLog) uint64 {
			l.evs = l.evs[:len(l.evs)-1]
			p := l.add("web", l.lost2.ID, events.PackagePlaced{Node: "n2", Epoch: 3, Reason: "node_lost"})
			l.add("n2", "", events.NodeJoined{})
			return l.add("web", p.ID, events.PackageStarting{Node: "n2", Epoch: 3}).Seq
		}, RuleLiveNode, "acts on epoch 3 on n2, released by node.lost"},
		{"restart on a lost node's placement", func(l *cleanLog) uint64 {
			return l.add("web", l.evs[l.fenceExit].ID, events.ServiceRestarting{Service: "s", Node: "n2", Epoch: 2, Attempt: 1}).Seq
		}, RuleLiveNode, "acts on node n2"},
		{"restart on a lost node that rejoined", func(l *cleanLog) uint64 {
			l.add("n2", "", events.NodeJoined{})
			return l.add("web", l.evs[l.fenceExit].ID, events.ServiceRestarting{Service: "s", Node: "n2", Epoch: 2, Attempt: 1}).Seq
		}, RuleLiveNode, "released by node.lost"},
		{"placed on a drained node", func(l *cleanLog) uint64 {
			l.evs = l.evs[:len(l.evs)-1]
			l.add("n1", "", events.NodeDrained{By: "op"})
			return l.add("web", l.lost2.ID, events.PackagePlaced{Node: "n1", Epoch: 3, Reason: "node_lost"}).Seq
		}, RuleMaintenance, "placed on node n1, drained at seq"},
		{"placed on a frozen node", func(l *cleanLog) uint64 {
			l.evs = l.evs[:len(l.evs)-1]
			l.add("n1", "", events.NodeFrozen{Until: t0.Add(time.Hour), By: "op"})
			return l.add("web", l.lost2.ID, events.PackagePlaced{Node: "n1", Epoch: 3, Reason: "node_lost"}).Seq
		}, RuleMaintenance, "placed on node n1, frozen at seq"},
		{"moved away from a frozen node", func(l *cleanLog) uint64 {
			l.finish()
			l.evs = l.evs[:len(l.evs)-4] // epoch 3 runs on n1
			l.add("n1", "", events.NodeFrozen{Until: t0.Add(time.Hour), By: "op"})
			l.add("n2", "", events.NodeJoined{})
			return l.add("web", "", events.PackagePlaced{Node: "n2", Epoch: 4, Reason: "operator_move", By: "op"}).Seq
		}, RuleMaintenance, "moved away from node n1 (epoch 3, not released), frozen at seq"},
		{"lost while frozen", func(l *cleanLog) uint64 {
			l.add("n1", "", events.NodeFrozen{Until: t0.Add(time.Hour), By: "op"})
			return l.add("n1", "", events.NodeLost{Reason: "lease expired"}).Seq
		}, RuleMaintenance, "node n1 recorded lost while frozen"},
		{"restart on a frozen node", func(l *cleanLog) uint64 {
			l.finish()
			l.evs = l.evs[:len(l.evs)-4] // epoch 3 runs on n1
			l.add("n1", "", events.NodeFrozen{Until: t0.Add(time.Hour), By: "op"})
			g := l.evs[len(l.evs)-4] // epoch 3's guest.started
			x := l.at(time.Minute).add("web", g.ID+"/s", events.ProcessExited{Guest: "g", Service: "s", PID: 30, ExitCode: 1, RequestID: g.ID + "/s", Epoch: 3})
			return l.add("web", x.ID, events.ServiceRestarting{Service: "s", Node: "n1", Epoch: 3, Attempt: 1, RestartsLeft: 1}).Seq
		}, RuleMaintenance, "decided on node n1, frozen at seq"},
		{"starting never ends", func(l *cleanLog) uint64 {
			st := l.add("web", l.placed3.ID, events.PackageStarting{Node: "n1", Epoch: 3})
			l.at(time.Hour).add("n1", "", events.NodeJoined{})
			return st.Seq
		}, RuleBound, "package.starting on n1 (epoch 3) did not end within its bound of 15s"},
		{"halting ends late", func(l *cleanLog) uint64 {
			l.finish()
			// halting is the 5th event of finish; move its end 30 s later.
			n := len(l.evs)
			for i := n - 3; i < n; i++ {
				l.evs[i].Time = l.evs[i].Time.Add(30 * time.Second)
			}
			return l.evs[n-4].Seq
		}, RuleBound, "package.halting on n1 (epoch 3) did not end within its bound of 13s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := clean()
			seq := tc.doctor(l)
			r := Verify(l.evs, Options{})
			var found bool
			for _, v := range r.Violations {
				if v.Seq == seq && v.Rule == tc.rule && strings.Contains(v.Message, tc.want) {
					found = true
				}
			}
			if !found {
				t.Errorf("want a %s violation at seq %d saying %q; got:\n%s", tc.rule, seq, tc.want, strings.Join(Check(l.evs), "\n"))
			}
			if len(r.Violations) != 1 {
				t.Errorf("want exactly one violation, got %d:\n%s", len(r.Violations), strings.Join(Check(l.evs), "\n"))
			}
		})
	}
}

func TestOpenAtTheEndIsNotAViolation(t *testing.T) {
	l := clean()
	st := l.add("web", l.placed3.ID, events.PackageStarting{Node: "n1", Epoch: 3})
	r := Verify(l.evs, Options{})
	if !r.OK() {
		t.Fatalf("reported: %v", Check(l.evs))
	}
	if len(r.Open) != 1 || r.Open[0].Seq != st.Seq || r.Open[0].Type != "package.starting" {
		t.Fatalf("open = %+v, want the starting at seq %d", r.Open, st.Seq)
	}
}

func TestNodeLossEndsStartingAndReleases(t *testing.T) {
	l := clean()
	st := l.add("web", l.placed3.ID, events.PackageStarting{Node: "n1", Epoch: 3})
	lost := l.add("n1", "", events.NodeLost{Reason: "lease expired"})
	l.at(time.Hour)
	l.add("n1", "", events.NodeJoined{})
	p := l.add("web", lost.ID, events.PackagePlaced{Node: "n1", Epoch: 4, Reason: "node_lost"})
	l.add("web", p.ID, events.PackageStarting{Node: "n1", Epoch: 4})
	_ = st
	if probs := Check(l.evs); len(probs) != 0 {
		t.Fatalf("reported: %v", probs)
	}
}

func TestUnaskedProcessIsANote(t *testing.T) {
	l := clean()
	// A guest claims a process of epoch 9 that nobody asked for.
	forged := l.add("web", "", events.ProcessStarted{Guest: "g", Service: "s", PID: 99, RequestID: "made-up", Epoch: 9})
	r := Verify(l.evs, Options{})
	if !r.OK() {
		t.Fatalf("a guest's claim counted as a violation: %v", Check(l.evs))
	}
	if len(r.Notes) != 1 || r.Notes[0].Seq != forged.Seq {
		t.Fatalf("notes = %+v, want one at seq %d", r.Notes, forged.Seq)
	}
}

func TestFromHidesEarlierProblems(t *testing.T) {
	l := clean()
	bad := l.add("web", "nope", events.PackageStarting{Node: "n1", Epoch: 3})
	if r := Verify(l.evs, Options{From: bad.Seq + 1}); !r.OK() {
		t.Errorf("a problem before --from reported: %+v", r.Violations)
	}
	if r := Verify(l.evs, Options{From: bad.Seq}); r.OK() {
		t.Errorf("a problem at --from not reported")
	}
}

func TestVerifyTwiceSameReport(t *testing.T) {
	l := clean()
	l.add("web", "nope", events.PackageStarting{Node: "n1", Epoch: 3})
	a, b := Check(l.evs), Check(l.evs)
	if strings.Join(a, "\n") != strings.Join(b, "\n") {
		t.Fatalf("two runs differ:\n%v\n%v", a, b)
	}
}

// TestDeferredFailoverNamesTheJoin: a failover that waited for a node to
// join names the join (its trigger) as its cause, which is allowed.
func TestDeferredFailoverNamesTheJoin(t *testing.T) {
	l := clean()
	l.add("web", l.placed3.ID, events.PackageFailed{Node: "n1", Epoch: 3, Reason: "guest did not start"})
	j := l.add("n2", "", events.NodeJoined{})
	l.add("web", j.ID, events.PackagePlaced{Node: "n2", Epoch: 4, Reason: "failover"})
	r := Verify(l.evs, Options{})
	for _, v := range r.Violations {
		if v.Rule == RuleCause {
			t.Errorf("a failover caused by a join reported: %s", v)
		}
	}
}

// TestNodeLostPlacementWhileAnOlderHalts: a failback moved the package
// (epoch 2 on n1) while epoch 1 on n2 halts; n1 is lost before epoch 2
// starts, and the controller places epoch 3 at once. Epoch 2, the one it
// replaces, is released; epoch 1 is not, and epoch 3's node waits for it
// (found by the simulator, sim seed 12).
func TestNodeLostPlacementWhileAnOlderHalts(t *testing.T) {
	l := newLog()
	p1, st := l.startWeb("n2")
	l.add("web", st.ID, events.PackageStarted{Node: "n2", Epoch: 1})
	l.add("web", p1.CauseID /* n1's join */, events.PackagePlaced{Node: "n1", Epoch: 2, Reason: "failback"})
	lost := l.add("n1", "", events.NodeLost{Reason: "lease_expired"})
	pl := l.add("web", lost.ID, events.PackagePlaced{Node: "n2", Epoch: 3, Reason: "node_lost"})
	r := Verify(l.evs, Options{})
	if !r.OK() {
		t.Errorf("violations: %v", r.Violations)
	}
	// Epoch 3 starting before epoch 1 is released is still caught.
	l.add("web", pl.ID, events.PackageStarting{Node: "n2", Epoch: 3})
	r = Verify(l.evs, Options{})
	if len(r.Violations) != 1 || r.Violations[0].Rule != RuleReleasedFirst {
		t.Errorf("want one released_first violation, got %v", r.Violations)
	}
}

// TestLeaseTakenIsAccepted: node.lease_taken (a host manager recording its
// lease take) anywhere in a clean log keeps it clean.
func TestLeaseTakenIsAccepted(t *testing.T) {
	l := clean()
	var evs []events.Event
	for _, e := range l.evs {
		evs = append(evs, e)
		if _, ok := e.Data.(events.NodeJoined); ok {
			evs = append(evs, events.Event{ID: e.ID + "-taken", Source: "/t", Subject: e.Subject, Time: e.Time, Data: events.NodeLeaseTaken{Holder: "h"}})
		}
	}
	for i := range evs {
		evs[i].Seq = uint64(i + 1)
	}
	if r := Verify(evs, Options{}); !r.OK() {
		t.Errorf("violations: %v", r.Violations)
	}
}

// TestPackageCheckedIsIgnored: the controller's marker of a placement on a
// linked package (package.checked, docs/design-notes.md §7), written
// between any two events about the package, neither breaks a rule nor adds
// a note.
func TestPackageCheckedIsIgnored(t *testing.T) {
	l := clean()
	var evs []events.Event
	for _, e := range l.evs {
		if e.Subject == "web" {
			evs = append(evs, events.Event{ID: e.ID + "-checked", Source: events.ControllerSource, Subject: "web", Time: e.Time,
				CauseID: e.CauseID, Data: events.PackageChecked{For: "db", Seq: 1}})
		}
		evs = append(evs, e)
	}
	for i := range evs {
		evs[i].Seq = uint64(i + 1)
	}
	want := Verify(l.evs, Options{})
	if r := Verify(evs, Options{}); !r.OK() || len(r.Notes) != len(want.Notes) {
		t.Errorf("violations: %v; notes %v, want %v", r.Violations, r.Notes, want.Notes)
	}
}

// TestPlacedOnLostNodeIsVoid (sim finding place_on_lost_node): a
// placement stored after its node's loss is void, a note and not a
// violation: it counts as released at once, so the placement that replaces
// it need not wait, and anything started under it is a violation (above).
func TestPlacedOnLostNodeIsVoid(t *testing.T) {
	l := clean()
	l.evs = l.evs[:len(l.evs)-1]
	void := l.add("web", l.lost2.ID, events.PackagePlaced{Node: "n2", Epoch: 3, Reason: "node_lost"})
	l.add("n2", "", events.NodeJoined{})
	l.placed3 = l.add("web", void.ID, events.PackagePlaced{Node: "n1", Epoch: 4, Reason: "node_lost", PreviousNode: "n2"})
	st := l.add("web", l.placed3.ID, events.PackageStarting{Node: "n1", Epoch: 4})
	l.add("web", st.ID, events.GuestStarted{Guest: "g", Node: "n1", Epoch: 4})
	r := Verify(l.evs, Options{})
	if !r.OK() {
		t.Errorf("violations: %v", r.Violations)
	}
	found := false
	for _, n := range r.Notes {
		found = found || n.Seq == void.Seq && strings.Contains(n.Message, "void")
	}
	if !found {
		t.Errorf("no note on the void placement at seq %d: %v", void.Seq, r.Notes)
	}
}

// TestLateStartAfterLossIsANote: n2's agent was cut off with a
// process.started in its spool; it arrives after n2's loss released epoch 2
// and epoch 3 runs on n1: a late report, not a second live epoch.
func TestLateStartAfterLossIsANote(t *testing.T) {
	l := clean()
	st := l.add("web", l.placed3.ID, events.PackageStarting{Node: "n1", Epoch: 3})
	g := l.add("web", st.ID, events.GuestStarted{Guest: "g", Node: "n1", Epoch: 3})
	l.add("web", g.ID, events.ProcessStarted{Guest: "g", Service: "s", PID: 30, RequestID: g.ID + "/s", Epoch: 3})
	l.add("web", l.guest2.ID, events.ProcessStarted{Guest: "g", Service: "w", PID: 22, RequestID: l.guest2.ID + "/w", Epoch: 2})
	l.evs[len(l.evs)-1].Time = l.guest2.Time.Add(time.Millisecond) // seen by the agent before the loss
	r := Verify(l.evs, Options{})
	if !r.OK() || len(r.Notes) == 0 || !strings.Contains(r.Notes[len(r.Notes)-1].Message, "late report") {
		t.Errorf("violations %v, notes %v", r.Violations, r.Notes)
	}
}

// TestLateStartAfterGuestStopIsANote: a restart's process.started, seen by
// the agent before the host forced the guest off, reaches the log after
// guest.stopped and package.failed; the failover's start on n2 is not a
// second live epoch. One stamped after the stop still counts.
func TestLateStartAfterGuestStopIsANote(t *testing.T) {
	for _, late := range []bool{true, false} {
		l := newLog()
		_, st1 := l.startWeb("n1")
		g1 := l.add("web", st1.ID, events.GuestStarted{Guest: "g", Node: "n1", Epoch: 1})
		l.add("web", g1.ID, events.ProcessStarted{Guest: "g", Service: "s", PID: 10, RequestID: g1.ID + "/s", Epoch: 1})
		gs := l.add("web", "", events.GuestStopped{Guest: "g", Node: "n1", Epoch: 1, Reason: "forced off"})
		f := l.add("web", gs.ID, events.PackageFailed{Node: "n1", Epoch: 1, Reason: "guest stopped"})
		p2 := l.add("web", f.ID, events.PackagePlaced{Node: "n2", Epoch: 2, Reason: "failover", PreviousNode: "n1"})
		st2 := l.add("web", p2.ID, events.PackageStarting{Node: "n2", Epoch: 2})
		g2 := l.add("web", st2.ID, events.GuestStarted{Guest: "g", Node: "n2", Epoch: 2})
		l.add("web", g2.ID, events.ProcessStarted{Guest: "g", Service: "s", PID: 20, RequestID: g2.ID + "/s", Epoch: 2})
		l.add("web", g1.ID, events.ProcessStarted{Guest: "g", Service: "w", PID: 11, RequestID: g1.ID + "/w", Epoch: 1})
		at := gs.Time.Add(time.Millisecond)
		if late {
			at = gs.Time.Add(-time.Millisecond)
		}
		l.evs[len(l.evs)-1].Time = at
		r := Verify(l.evs, Options{})
		if late && (!r.OK() || len(r.Notes) == 0 || !strings.Contains(r.Notes[len(r.Notes)-1].Message, "late report")) {
			t.Errorf("late: violations %v, notes %v", r.Violations, r.Notes)
		}
		if !late && (len(r.Violations) != 1 || r.Violations[0].Rule != RuleOneEpoch) {
			t.Errorf("a start stamped after the guest stop, while epoch 2 runs: %v, want one one_epoch violation", r.Violations)
		}
	}
}

// TestResetStartsCountersAgain: `pkg reset` clears the restart counters,
// windowed ones too, so a restart after it is within policy.
func TestResetStartsCountersAgain(t *testing.T) {
	l := clean()
	l.evs = l.evs[:14] // up to the second restart's process.started of s
	last := l.evs[len(l.evs)-1].Data.(events.ProcessStarted)
	l.add("web", "", events.PackageReset{By: "op"})
	x := l.add("web", last.RequestID, events.ProcessExited{Guest: "g", Service: "s", PID: last.PID, RequestID: last.RequestID, Epoch: 1})
	l.add("web", x.ID, events.ServiceRestarting{Service: "s", Node: "n1", Epoch: 1, Attempt: 1})
	if r := Verify(l.evs, Options{}); !r.OK() {
		t.Errorf("restart after a reset: %v", r.Violations)
	}
}

// TestCheckerMatchesVerify: adding a log's events one at a time reports
// what Verify reports for the whole log.
func TestCheckerMatchesVerify(t *testing.T) {
	l := clean()
	l.add("web", l.placed3.ID, events.PackagePlaced{Node: "n1", Epoch: 4, Reason: "failover"})
	l.add("web", "", events.ServiceRestarting{Service: "s", Node: "n1", Epoch: 3, Attempt: 1})
	want := Verify(l.evs, Options{})
	k := NewChecker(Options{})
	var got []Violation
	for _, e := range l.evs {
		got = append(got, k.Add(e)...)
	}
	if len(want.Violations) != 2 || fmt.Sprint(got) != fmt.Sprint(want.Violations) || fmt.Sprint(k.Report()) != fmt.Sprint(want) {
		t.Errorf("checker: %v\nverify: %v", got, want.Violations)
	}
}

func TestDrainRunFreezeThawPass(t *testing.T) {
	l := clean()
	l.finish()
	l.add("n2", "", events.NodeJoined{})
	d := l.add("n2", "", events.NodeDrained{By: "op"})
	l.add("n2", "", events.NodeResumed{By: "op"})
	l.add("web", d.ID, events.PackagePlaced{Node: "n2", Epoch: 4, Reason: "auto_run"})
	l.add("n1", "", events.NodeFrozen{Until: t0.Add(time.Hour), By: "op"})
	th := l.add("n1", "", events.NodeThawed{Reason: "expired"})
	l.add("n1", th.ID, events.NodeLost{Reason: "lease expired"})
	if v := Check(l.evs); len(v) != 0 {
		t.Errorf("want no violation:\n%s", strings.Join(v, "\n"))
	}
}

// TestExclusion: a package that excludes another starts only where that
// other holds no placement that is not released (same_node), or where it
// holds none at all (all_nodes).
func TestExclusion(t *testing.T) {
	cfg := func(loc string) string {
		return `{"cluster":"t","node_timeout":"3s","guest_timeout":"3s","nodes":["n1","n2"],"packages":[
 {"name":"hi","nodes":["n1","n2"],"priority":10,"dependencies":[{"name":"lo","condition":"down","location":"` + loc + `"}],
  "guest":{"name":"hg","driver":"process","restart":"none","start_timeout":"5s"},"services":[{"name":"s","cmd":["x"],"restart":"none","halt_timeout":"1s"}]},
 {"name":"lo","nodes":["n1","n2"],"dependencies":[{"name":"hi","condition":"down","location":"` + loc + `"}],
  "guest":{"name":"lg","driver":"process","restart":"none","start_timeout":"5s"},"services":[{"name":"s","cmd":["x"],"restart":"none","halt_timeout":"1s"}]}]}`
	}
	for _, tc := range []struct {
		name, loc string
		build     func(l *logb)
		want      string
	}{
		{"after the other halted: fine", "same_node", func(l *logb) {
			l.autoRun("lo", "n1")
			l.add("lo", "", events.PackageHalting{Node: "n1", Epoch: 1, Reason: "displaced: by hi"})
			l.add("lo", "", events.PackageHalted{Node: "n1", Epoch: 1, Reason: "displaced"})
			l.autoRun("hi", "n1")
		}, ""},
		{"other node, same_node: fine", "same_node", func(l *logb) {
			l.autoRun("lo", "n2")
			l.autoRun("hi", "n1")
		}, ""},
		{"while the other halts there", "same_node", func(l *logb) {
			l.autoRun("lo", "n1")
			l.add("lo", "", events.PackageHalting{Node: "n1", Epoch: 1, Reason: "displaced: by hi"})
			l.autoRun("hi", "n1")
		}, "starts on n1 while lo, which it excludes (same_node), holds epoch 1 on n1 (placed at seq 4) [exclusion]"},
		{"other node, all_nodes", "all_nodes", func(l *logb) {
			l.autoRun("lo", "n2")
			l.autoRun("hi", "n1")
		}, "starts on n1 while lo, which it excludes (all_nodes), holds epoch 1 on n2 (placed at seq 4) [exclusion]"},
		{"the other's node lost: released", "all_nodes", func(l *logb) {
			l.autoRun("lo", "n2")
			l.add("n2", "", events.NodeLost{Reason: "lease expired"})
			l.autoRun("hi", "n1")
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantCheck(t, checkOn(cfg(tc.loc), tc.build), tc.want)
		})
	}
}
