package failover

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/vmguard/vmguard/events"
)

// exclusionCluster: hi (priority 10) and lo (priority 20) exclude each
// other on a node; lo prefers node2.
func exclusionCluster() (hi, lo string, env func(*testEnv)) {
	h := depOn(testPkg("hi", "node1", "node2"), "lo", "down", "same_node")
	h.Priority = 10
	l := depOn(testPkg("lo", "node2", "node1"), "hi", "down", "same_node")
	l.Priority = 20
	return "hi", "lo", func(e *testEnv) {
		e.config(testCluster(h, l))
		e.add("node1", events.NodeJoined{})
		e.add("node2", events.NodeJoined{})
	}
}

// decidingRunner is a Runner that leads, with the state folded from the
// log as it is now, appending to the real log: a controller about to append
// a decision, without its goroutines.
func decidingRunner(t *testing.T, env *testEnv) *Runner {
	t.Helper()
	r, err := NewRunner(Config{Log: env.log, Logger: testLogger(t, "ctl")})
	if err != nil {
		t.Fatal(err)
	}
	r.log, r.out = env.log, env.log
	for _, e := range env.all() {
		r.apply(e)
	}
	r.el.always()
	r.leader, r.ready = true, true
	return r
}

// TestStalePlacementRefused (docs/sim.md finding 12): a controller decides
// a placement of lo on node2 from a state where hi, which excludes it, is
// nowhere; before its append lands, another controller (the new leader)
// places hi on node2. The placement goes out in one atomic batch with a
// package.checked marker on hi guarded by hi's sequence as the deciding
// state saw it, so the real server refuses the whole batch: nothing about
// lo is stored. Without the other controller's write the same batch is
// stored, marker first.
func TestStalePlacementRefused(t *testing.T) {
	for _, stale := range []bool{false, true} {
		t.Run(fmt.Sprintf("stale=%v", stale), func(t *testing.T) {
			env := newEnv(t)
			hi, lo, setup := exclusionCluster()
			setup(env)
			r := decidingRunner(t, env)
			seen := r.state.PackageSeq(hi)
			if stale {
				env.add(hi, events.PackagePlaced{Node: "node2", Epoch: 1, Reason: ReasonAutoRun})
			}
			before := env.lastSeq()
			r.emit(env.ctx, []events.Event{{Source: Source, Subject: lo, CauseID: "c",
				Data: events.PackagePlaced{Node: "node2", Epoch: 1, Reason: ReasonAutoRun}}})
			added := env.all()[before:]
			st := r.Stats()
			if stale {
				if len(added) != 0 || st.Conflicts != 1 || st.Decisions != 0 {
					t.Fatalf("stale placement: stored %s, %d conflicts, %d decisions; want nothing stored, 1 conflict", brief(added), st.Conflicts, st.Decisions)
				}
				return
			}
			if len(added) != 3 || st.Decisions != 1 {
				t.Fatalf("stored %s (%d decisions), want lo's placement marker, hi's marker and lo's placement", brief(added), st.Decisions)
			}
			if d, ok := added[0].Data.(events.PlacementNoted); !ok || added[0].Subject != "node2" || d.Package != lo {
				t.Errorf("first stored %s %+v, want the placement's marker on node2", added[0].Type(), added[0].Data)
			}
			m, p := added[1], added[2]
			if d, ok := m.Data.(events.PackageChecked); !ok || m.Subject != hi || d != (events.PackageChecked{For: lo, Seq: seen}) || m.Source != Source || m.CauseID != "c" {
				t.Errorf("marker %+v %+v, want package.checked of %s for %s at seq %d, from the controller, caused as the placement", m, m.Data, hi, lo, seen)
			}
			if _, ok := p.Data.(events.PackagePlaced); !ok || p.Subject != lo || p.Seq != m.Seq+1 {
				t.Errorf("placement %+v, want lo's, right after the marker", p)
			}
			if r.pending["pkg."+hi] != m.Seq {
				t.Errorf("pending on hi: %d, want the marker's seq %d (a decision about hi waits for it)", r.pending["pkg."+hi], m.Seq)
			}
		})
	}
}

// TestPackageCheckedOnlyMovesSequence: the fold of a marker changes
// nothing but the package's sequence (and the state's), so a decision
// about that package is guarded past it; applied again it changes nothing.
func TestPackageCheckedOnlyMovesSequence(t *testing.T) {
	l := newLog(t)
	l.config(testCluster(testPkg("web", "node1", "node2"), testPkg("db", "node1", "node2")))
	l.join("node1", "node2")
	l.run("web", "node1", 1)
	without := l.state()
	m := l.add("web", events.PackageChecked{For: "db", Seq: 5}, "e6")
	with := l.state()
	if with.PackageSeq("web") != m.Seq || with.Seq != m.Seq {
		t.Fatalf("after the marker: web at %d, state at %d; want both %d", with.PackageSeq("web"), with.Seq, m.Seq)
	}
	if with.Apply(m) {
		t.Error("the marker applied twice changed the state")
	}
	with.Seq, with.Time, with.Packages["web"].LastSeq = without.Seq, without.Time, without.Packages["web"].LastSeq
	if !reflect.DeepEqual(with, without) {
		t.Errorf("the marker changed more than sequences:\n%+v\nwant\n%+v", with.Packages["web"], without.Packages["web"])
	}
	if got := Decide(l.state(), m); len(got) != 0 {
		t.Errorf("Decide on a marker: %s, want nothing", brief(got))
	}
}
