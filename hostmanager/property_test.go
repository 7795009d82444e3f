package hostmanager

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/vmguard/vmguard/events"
)

// randomLog drives the harness with random operations (exits, guest losses,
// halts, moves, resets, placements, the passing of time, runner crashes)
// and returns the log. The harness checks the safety rules on every event
// it appends: no package.halted or package.failed while anything of the
// instance runs, no start beside an unreleased placement, no run asked
// again once started, no run into a guest that is down, never two
// processes of one service at once.
func randomLog(t *rapid.T) []events.Event {
	svc := rapid.SampledFrom([]string{"", "restart: 1", "restart: 3", "restart: unlimited"}).Draw(t, "restart")
	if rapid.Bool().Draw(t, "window") {
		svc += "\nrestart_window: 5s"
	}
	if rapid.Bool().Draw(t, "backoff") {
		svc += "\nbackoff: {delay: 1s, factor: 2, max: 4s}"
	}
	guest := rapid.SampledFrom([]string{"", "restart: 1", "restart: 2"}).Draw(t, "guest restart")
	h := newHarness(t, cfgYAML(svc, guest))
	h.place(me, "auto_run")
	steps := rapid.IntRange(1, 30).Draw(t, "steps")
	for range steps {
		p := h.s.Package("web")
		in := p.Inst
		switch op := rapid.IntRange(0, 11).Draw(t, "op"); op {
		case 0, 1, 2: // a service exits by itself
			if in == nil {
				continue
			}
			var running []string
			for key := range h.running[in.Config.Guest.Name] {
				running = append(running, key)
			}
			if len(running) == 0 {
				continue
			}
			slices.Sort(running)
			key := rapid.SampledFrom(running).Draw(t, "exiting")
			name := key[:1]
			code := rapid.IntRange(0, 2).Draw(t, "code")
			h.exit(name, code)
		case 3: // time passes
			h.advance(time.Duration(rapid.IntRange(0, 8000).Draw(t, "ms")) * time.Millisecond)
		case 4: // the guest monitor reports the guest lost
			if in == nil || in.Guest.Phase != GuestUp {
				continue
			}
			delete(h.running, in.Config.Guest.Name)
			h.guestUp[in.Config.Guest.Name] = false
			h.add(HostSource(me), "web", "", events.GuestLost{Guest: in.Config.Guest.Name, Node: me, Epoch: in.Epoch})
		case 5: // operator halt of the current placement
			if p.Current.Epoch == 0 {
				continue
			}
			h.add("/vmguard/cli/op", "web", "", events.PackageHalting{Node: p.Current.Node, Epoch: p.Current.Epoch, Reason: "op", By: "op"})
		case 6: // moved to node2
			h.add("/vmguard/failover", "web", "", events.PackagePlaced{Node: "node2", Epoch: p.Current.Epoch + 1, Reason: "operator_move"})
		case 7: // node2 releases its placement, or is lost
			if p.Current.Node != "node2" || p.Current.Released {
				continue
			}
			if rapid.Bool().Draw(t, "node lost") {
				h.add("/vmguard/failover", "node2", "", events.NodeLost{Reason: "lease expired"})
			} else {
				h.add("/vmguard/nodes/node2/host", "web", "", events.PackageHalted{Node: "node2", Epoch: p.Current.Epoch, Reason: "op"})
			}
		case 8: // placed (again) on this node
			h.place(me, "operator_run")
		case 9: // reset
			svc := rapid.SampledFrom([]string{"", "a", "b"}).Draw(t, "reset")
			h.add("/vmguard/cli/op", "web", "", events.PackageReset{Service: svc})
		case 10: // the runner is killed and starts again
			h.crash()
		case 11: // hold or release runs (a slow agent)
			h.holdRuns = rapid.Bool().Draw(t, "hold runs")
		}
		h.settle()
	}
	h.holdRuns = false
	h.advance(time.Minute)
	h.settle()
	return h.log
}

// TestPropertyDuplicateChangesNothing: re-applying any earlier event, at any
// point, leaves the state as the plain fold.
func TestPropertyDuplicateChangesNothing(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		log := randomLog(t)
		want := fold(log)
		s := NewState(me)
		for i, e := range log {
			s.Apply(e)
			if i > 0 && rapid.Bool().Draw(t, "dup") {
				j := rapid.IntRange(0, i).Draw(t, "which")
				if s.Apply(log[j]) {
					t.Fatalf("duplicate of event %d applied", log[j].Seq)
				}
			}
		}
		if !reflect.DeepEqual(s, want) {
			t.Fatalf("duplicates changed the state")
		}
	})
}

// TestPropertyPrefixThenRest: folding a prefix, then the rest (or a
// redelivery that overlaps the prefix), equals folding the whole log; and a
// fresh fold of any prefix decides and asks for the same as the live state
// did there.
func TestPropertyPrefixThenRest(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		log := randomLog(t)
		want := fold(log)
		k := rapid.IntRange(0, len(log)).Draw(t, "cut")
		from := rapid.IntRange(0, k).Draw(t, "redeliver from")
		s := fold(log[:k])
		for _, e := range log[from:] {
			s.Apply(e)
		}
		if !reflect.DeepEqual(s, want) {
			t.Fatalf("prefix %d then rest from %d differs from the whole", k, from)
		}
		// After the whole log every decision was made and every action done.
		for _, pkg := range want.PackageNames() {
			if d, ok := Decide(want, pkg); ok {
				t.Fatalf("undecided at the end: %s %s", d.Type(), d.Summary())
			}
			for _, a := range Pending(want, pkg) {
				t.Fatalf("action left at the end: %+v", a)
			}
		}
	})
}
