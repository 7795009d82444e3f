package hostmanager

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"pgregory.net/rapid"

	"github.com/vmguard/vmguard/events"
)

// mixedLog is the scenario log of web (placed on node1 and moved, node2
// lost) with the life of another package, db, interleaved: placed on
// node2, started, moved to node3 when node2 is lost, then placed on this
// node (node1) near the end. Sequences are renumbered in the new order.
func mixedLog(t rapid.TB) []events.Event {
	web := scenario(t)
	var db []events.Event
	add := func(subject string, data events.Payload) {
		db = append(db, events.Event{Source: "/vmguard/failover", Subject: subject, Data: data})
	}
	add("db", events.PackagePlaced{Node: "node2", Epoch: 1, Reason: "auto_run"})
	add("db", events.PackageStarting{Node: "node2", Epoch: 1})
	add("db", events.GuestStarted{Guest: "dbvm", Node: "node2", Epoch: 1})
	add("db", events.ProcessStarted{Guest: "dbvm", Service: "a", RequestID: "r1", PID: 7, Epoch: 1})
	add("db", events.PackageStarted{Node: "node2", Epoch: 1})
	add("db", events.ProcessExited{Guest: "dbvm", Service: "a", RequestID: "r1", PID: 7, ExitCode: 1, Epoch: 1})
	add("db", events.PackagePlaced{Node: "node3", Epoch: 2, Reason: "failover", PreviousNode: "node2"})
	add("db", events.PackageStarting{Node: "node3", Epoch: 2})
	add("db", events.PackagePlaced{Node: me, Epoch: 3, Reason: "operator_move", PreviousNode: "node3"})
	add("db", events.PackageHalting{Node: "node3", Epoch: 2, Reason: "moved"})
	add("db", events.PackageHalted{Node: "node3", Epoch: 2, Reason: "moved"})
	var out []events.Event
	for i, e := range web {
		out = append(out, e)
		if i%4 == 3 && len(db) > 0 && i < len(web)-8 {
			out = append(out, db[0])
			db = db[1:]
		}
	}
	out = append(out, db...)
	for i := range out {
		out[i].Seq = uint64(i + 1)
		if out[i].ID == "" || out[i].Subject == "db" {
			out[i].ID = fmt.Sprintf("m%d", i+1)
		}
	}
	return out
}

// inMain reports whether the main read with concern set pkgs delivers e.
func inMain(e events.Event, pkgs map[string]bool) bool {
	sc, ok := scopeOf(e)
	return ok && (sc != events.ScopePackage || pkgs[e.Subject])
}

// inCatchUp reports whether a catch-up of pkg reads e.
func inCatchUp(e events.Event, pkg string) bool {
	switch e.Data.(type) {
	case events.NodeLost, events.NodeFenced, events.NodeJoined:
		return true
	}
	sc, ok := scopeOf(e)
	return ok && sc == events.ScopePackage && e.Subject == pkg
}

// TestCatchUpFoldsJoins: a placement on a node that was lost and joined
// again before it is not void; a catch-up must fold the join to see that
// (it reads node.*.joined), as the whole log's fold does.
func TestCatchUpFoldsJoins(t *testing.T) {
	var log []events.Event
	add := func(subject string, data events.Payload) {
		log = append(log, events.Event{ID: fmt.Sprintf("c%d", len(log)+1), Seq: uint64(len(log) + 1), Source: "/t", Subject: subject, Data: data})
	}
	add(me, events.NodeJoined{})
	add(me, events.NodeLost{Reason: "lease expired"})
	add(me, events.NodeJoined{})
	add("web", events.PackagePlaced{Node: me, Epoch: 1, Reason: "auto_run"})
	add("node2", events.NodeLost{Reason: "lease expired"})
	add("web", events.PackagePlaced{Node: "node2", Epoch: 2, Reason: "operator_move", PreviousNode: me})
	for k := 1; k <= len(log); k++ {
		c := newCatchUp(me, nil, log[k-1].Seq)
		for _, e := range log {
			if inCatchUp(e, "web") && !c.apply(e) {
				break
			}
		}
		got, want := pkgJSON(c.packages([]string{"web"})["web"]), pkgJSON(fold(log[:k]).pkg("web"))
		if got != want {
			t.Fatalf("caught up through seq %d:\n%s\nwant (whole log)\n%s", k, got, want)
		}
	}
	if c := fold(log).Packages["web"].Current; c.Epoch != 2 || !c.Released {
		t.Errorf("epoch 2 on the lost node2: %+v, want void", c)
	}
}

// TestConcernFoldIsTheFullFold checks the claim of concern.go: whatever
// the positions at which web and db join the main read's filter (each by
// a catch-up of its history below that position from its first placement
// on, installed in the state),
// and wherever the log is cut, the state of each of them, what it decides
// and the actions it asks for are those of a fold of the whole log. A
// restart is the case where both join at position 0.
func TestConcernFoldIsTheFullFold(t *testing.T) {
	log := mixedLog(t)
	rapid.Check(t, func(t *rapid.T) {
		k := rapid.IntRange(1, len(log)).Draw(t, "k")
		joins := map[string]int{
			"web": rapid.IntRange(0, k).Draw(t, "web joins at"),
			"db":  rapid.IntRange(0, k).Draw(t, "db joins at"),
		}
		st := NewState(me)
		concern := map[string]bool{}
		for i := 0; i <= k; i++ {
			for _, pkg := range []string{"db", "web"} {
				if joins[pkg] != i {
					continue
				}
				var through uint64
				if i > 0 {
					through = log[i-1].Seq
				}
				st.Install(catchUpOf(log, pkg, through, st))
				concern[pkg] = true
			}
			if i < k && inMain(log[i], concern) {
				st.Apply(log[i])
			}
		}
		full := fold(log[:k])
		for _, pkg := range []string{"db", "web"} {
			wp := full.Packages[pkg]
			if wp == nil {
				wp = &PackageState{Name: pkg}
			}
			got, want := pkgJSON(st.Packages[pkg]), pkgJSON(wp)
			if got != want {
				t.Fatalf("%s after %d events (joined at %d): state\n%s\nwant (whole log)\n%s", pkg, k, joins[pkg], got, want)
			}
			d1, ok1 := Decide(st, pkg)
			d2, ok2 := Decide(full, pkg)
			if ok1 != ok2 || !reflect.DeepEqual(d1, d2) {
				t.Fatalf("%s after %d events: decides %+v, whole log %+v", pkg, k, d1, d2)
			}
			if a1, a2 := Pending(st, pkg), Pending(full, pkg); !reflect.DeepEqual(a1, a2) {
				t.Fatalf("%s after %d events: actions %+v, whole log %+v", pkg, k, a1, a2)
			}
		}
	})
}

// catchUpOf folds pkg's history through seq through as the follower's
// catchUpPackages does: from pkg's first package.placed on, pkg's events
// (read by direct gets) and the node events the main read delivered to
// st's fold (downs) in stream order, those before the placement as a seed.
func catchUpOf(log []events.Event, pkg string, through uint64, st *State) *PackageState {
	c := newCatchUp(me, st.Config, through)
	from := uint64(0)
	f := &follower{}
	var few []caught
	for _, e := range log {
		if e.Seq > through {
			break
		}
		f.noteNode(e)
		if _, ok := e.Data.(events.PackagePlaced); ok && e.Subject == pkg && from == 0 {
			from = e.Seq
		}
		if sc, ok := scopeOf(e); from > 0 && ok && sc == events.ScopePackage && e.Subject == pkg {
			few = append(few, caught{seq: e.Seq, e: e})
		}
	}
	if from == 0 {
		return c.packages([]string{pkg})[pkg]
	}
	c.seed(f.downs, from)
	c.fold(few, f.downs, from)
	return c.packages([]string{pkg})[pkg]
}

func pkgJSON(p *PackageState) string {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		panic(err)
	}
	return string(b)
}

// TestConcernSubjects checks the filters: no two of the main read's
// overlap (JetStream refuses overlapping filter subjects), and what the
// index and the catch-up read.
func TestConcernSubjects(t *testing.T) {
	got := mainSubjects(map[string]bool{"web": true, "db": true})
	want := []string{"vmguard.events.cluster.>", "vmguard.events.node.>", "vmguard.events.pkg.db.>", "vmguard.events.pkg.web.>"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("main subjects %v, want %v", got, want)
	}
	if placedFilter != "vmguard.events.pkg.*.package.placed" {
		t.Errorf("index filter %q", placedFilter)
	}
	got = catchUpSubjects([]string{"web"})
	want = []string{"vmguard.events.node.*.lost", "vmguard.events.node.*.fenced", "vmguard.events.node.*.joined", "vmguard.events.pkg.web.>"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("catch-up subjects %v, want %v", got, want)
	}
	for _, c := range []struct {
		e    events.Event
		pkg  string
		here bool
	}{
		{events.Event{Subject: "web", Data: events.PackagePlaced{Node: me, Epoch: 1}}, "web", true},
		{events.Event{Subject: "web", Data: events.PackagePlaced{Node: "node2", Epoch: 1}}, "", false},
		{events.Event{Subject: "web", Data: events.PackageStarting{Node: me, Epoch: 1}}, "", false},
		{events.Event{Subject: "a.b", Data: events.PackagePlaced{Node: me, Epoch: 1}}, "", false},
	} {
		if pkg, ok := placedHere(c.e, me); pkg != c.pkg || ok != c.here {
			t.Errorf("placedHere(%v) = %q, %v", c.e.Data, pkg, ok)
		}
	}
}
