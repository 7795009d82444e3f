package failover

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// decideFullScan is Decide as it was before the indexes (issue 12): every
// configured package tested against the trigger, in priority order, by
// scans of the configuration.
func decideFullScan(s *State, trigger events.Event) []events.Event {
	if s.Config == nil {
		return nil
	}
	c := s.Config
	var about func(config.Package) bool
	sc, err := events.ScopeOf(trigger.Type())
	switch {
	case err != nil:
		return nil
	case sc == events.ScopeCluster:
		about = func(config.Package) bool { return true }
	case sc == events.ScopeNode:
		named := map[string]bool{}
		for _, p := range c.Packages {
			for _, d := range p.Dependencies {
				named[d.Name] = true
			}
		}
		about = func(cp config.Package) bool {
			p := s.Packages[cp.Name]
			return slices.Contains(cp.Nodes, trigger.Subject) || (p != nil && p.Node == trigger.Subject) ||
				len(cp.Dependencies) > 0 || named[cp.Name]
		}
	default:
		self, _ := c.Package(trigger.Subject)
		about = func(cp config.Package) bool {
			_, uses := cp.Dependency(trigger.Subject)
			_, used := self.Dependency(cp.Name)
			return cp.Name == trigger.Subject || uses || used
		}
	}
	order := make([]int, len(c.Packages))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		pa, pb := c.Packages[a].Priority, c.Packages[b].Priority
		switch {
		case pa == pb:
			return 0
		case pa == 0:
			return 1
		case pb == 0:
			return -1
		case pa < pb:
			return -1
		}
		return 1
	})
	var sel []int
	for _, i := range order {
		if about(c.Packages[i]) {
			sel = append(sel, i)
		}
	}
	var out []events.Event
	for _, pl := range s.due(sel, time.Time{}) {
		out = append(out, pl.event(trigger.ID))
	}
	return out
}

// checkIndexed fails unless Decide on s gives what the full scan gives for
// a trigger about every package, every node and the cluster, the state
// index's load is a fresh count, and Linked agrees with the scan of the
// configuration.
func checkIndexed(t *rapid.T, s *State, how string) {
	load := map[string]int{}
	for _, p := range s.Packages {
		if p.Phase.active() {
			load[p.Node]++
		}
	}
	if got := s.stateIndex().load; !maps.Equal(got, load) {
		t.Fatalf("%s: indexed load %v, counted %v", how, got, load)
	}
	fresh := (&State{Packages: s.Packages}).stateIndex()
	if !reflect.DeepEqual(s.stateIndex(), fresh) {
		t.Fatalf("%s: the index kept by Apply differs from one built afresh:\n%+v\n%+v", how, s.stateIndex(), fresh)
	}
	triggers := []events.Event{{ID: "c", Data: events.ConfigApplied{}}}
	for _, n := range propNodes {
		triggers = append(triggers, events.Event{ID: "n", Subject: n, Data: events.NodeJoined{}})
	}
	for _, p := range append(slices.Clone(propPkgs), "unknown") {
		triggers = append(triggers, events.Event{ID: "p", Subject: p, Data: events.PackageFailed{}})
		if s.Config != nil {
			if got, want := s.Linked(p), Linked(s.Config, p); !slices.Equal(got, want) {
				t.Fatalf("%s: Linked(%s) = %v, the scan %v", how, p, got, want)
			}
		}
	}
	for _, tr := range triggers {
		if got, want := brief(Decide(s, tr)), brief(decideFullScan(s, tr)); got != want {
			t.Fatalf("%s: Decide(%s %s):\n got %s\nwant %s", how, tr.Type(), tr.Subject, got, want)
		}
	}
}

// TestPropIndexedDecide: on any state the log can fold to (with or without
// dependencies and priorities), Decide with the indexes decides what a scan
// of every package decides, for any trigger; so do its Clone and its JSON
// round trip (a snapshot), which rebuild the indexes.
func TestPropIndexedDecide(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		gen := genConfig
		if rapid.Bool().Draw(t, "dependencies") {
			gen = genDepConfig
		}
		evs := genLogFor(t, gen)
		s := &State{}
		for i, e := range evs {
			s.Apply(e)
			if i%3 != 0 && i != len(evs)-1 {
				continue
			}
			checkIndexed(t, s, "state")
			checkIndexed(t, s.Clone(), "clone")
			b, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			var back State
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			checkIndexed(t, &back, "JSON round trip")
		}
	})
}

// TestControllerColdStartScale: the controller's per-event work at bench
// scale's shape (100 nodes, 10,000 packages) brings every package up
// from a cold start; without the indexes this took minutes.
func TestControllerColdStartScale(t *testing.T) {
	start := time.Now()
	n := controllerColdStart(t, scaleCluster(100, 10000))
	t.Logf("%d events in %v", n, time.Since(start))
}
