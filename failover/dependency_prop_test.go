package failover

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// genDepConfig draws a valid configuration of propPkgs with dependencies
// between them: for each pair none, an up dependency of the later on the
// earlier (so no cycle), or a mutual exclusion; priorities unique or none,
// at least one on each side of an exclusion.
func genDepConfig(t *rapid.T) *config.Cluster {
	c := &config.Cluster{Cluster: "prop", Nodes: propNodes,
		NodeTimeout: config.Duration(5 * time.Second), GuestTimeout: config.Duration(5 * time.Second)}
	prios := rapid.Permutation([]int{10, 20, 30}).Draw(t, "prios")
	for i, name := range propPkgs {
		nodes := rapid.SliceOfNDistinct(rapid.SampledFrom(propNodes), 1, 3, rapid.ID[string]).Draw(t, name+".nodes")
		p := testPkg(name, nodes...)
		p.Guest.StartTimeout = config.Duration(30 * time.Second)
		p.Services[0].HaltTimeout = config.Duration(10 * time.Second)
		p.FailbackPolicy = rapid.SampledFrom([]string{config.FailbackManual, config.FailbackAutomatic}).Draw(t, name+".failback")
		if rapid.Bool().Draw(t, name+".prio") {
			p.Priority = prios[i]
		}
		c.Packages = append(c.Packages, p)
	}
	for j := range c.Packages {
		for i := range j {
			a, b := &c.Packages[j], &c.Packages[i]
			switch rapid.IntRange(0, 5).Draw(t, fmt.Sprintf("dep%d%d", j, i)) {
			case 1, 2:
				loc := rapid.SampledFrom([]string{config.SameNode, config.AnyNode, config.DifferentNode}).Draw(t, "uploc")
				a.Dependencies = append(a.Dependencies, config.Dependency{Name: b.Name, Condition: config.DependUp, Location: loc})
			case 3, 4:
				loc := rapid.SampledFrom([]string{config.SameNode, config.AllNodes}).Draw(t, "downloc")
				a.Dependencies = append(a.Dependencies, config.Dependency{Name: b.Name, Condition: config.DependDown, Location: loc})
				b.Dependencies = append(b.Dependencies, config.Dependency{Name: a.Name, Condition: config.DependDown, Location: loc})
				if a.Priority == 0 && b.Priority == 0 {
					a.Priority = prios[j]
				}
			}
		}
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("drew an invalid config: %v", err)
	}
	return c
}

// TestPropExclusion: whatever hosts and nodes do (within the protocol),
// the controller's decisions never let two packages that exclude each other
// occupy one node (same_node) or the cluster (all_nodes) at once, never
// place a package where an up dependency does not hold, and a running
// package never stays running beside a higher-priority package it excludes
// after the controller has answered.
func TestPropExclusion(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := genDepConfig(t)
		var seq uint64
		s := &State{}
		add := func(subject string, data events.Payload) events.Event {
			seq++
			e := events.Event{ID: fmt.Sprintf("e%d", seq), Source: "/prop", Subject: subject,
				Time: t0.Add(time.Duration(seq) * time.Second), Data: data, Seq: seq}
			s.Apply(e)
			return e
		}
		// occupied lists the nodes a package occupies: its current
		// placement's while it owns it, and the older ones not yet left.
		occupied := func(name string) []string {
			p := s.Packages[name]
			if p == nil {
				return nil
			}
			var out []string
			if p.Phase.Owned() {
				out = append(out, p.Node)
			}
			for _, in := range p.Leaving {
				out = append(out, in.Node)
			}
			return out
		}
		check := func() {
			for _, cp := range c.Packages {
				for _, d := range cp.Dependencies {
					if d.Condition != config.DependDown {
						continue
					}
					for _, n := range occupied(cp.Name) {
						for _, m := range occupied(d.Name) {
							if d.Where() == config.AllNodes || n == m {
								t.Fatalf("#%d: %s (on %s) and %s (on %s) exclude each other (%s) and both occupy a node",
									s.Seq, cp.Name, n, d.Name, m, d.Where())
							}
						}
					}
				}
			}
		}
		// decide applies evs, then answers each event with Decide and
		// applies the answer whole before deciding anything else, as the
		// runner does for linked packages (linkedInFlight: a decision about
		// a package waits while one about a package linked to it is on its
		// way back).
		decide := func(evs []events.Event) {
			var queue []events.Event
			apply := func(evs []events.Event) {
				for _, d := range evs {
					if pl, ok := d.Data.(events.PackagePlaced); ok {
						cp, _ := c.Package(d.Subject)
						if why := s.dependencyUnmet(cp, pl.Node); why != "" {
							t.Fatalf("#%d: %s placed on %s though %s", s.Seq, d.Subject, pl.Node, why)
						}
					}
					queue = append(queue, add(d.Subject, d.Data))
					check()
				}
			}
			apply(evs)
			for len(queue) > 0 {
				e := queue[0]
				queue = queue[1:]
				apply(Decide(s, e))
			}
		}
		cfg, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		decide([]events.Event{{Subject: "", Data: events.ConfigApplied{Config: cfg, Hash: "h"}}})
		for range rapid.IntRange(0, 80).Draw(t, "steps") {
			pkg := rapid.SampledFrom(propPkgs).Draw(t, "pkg")
			node := rapid.SampledFrom(propNodes).Draw(t, "node")
			p := s.Package(pkg)
			var ev events.Event
			switch k := rapid.IntRange(0, 9).Draw(t, "kind"); {
			case k < 5 && p != nil && len(p.Leaving) > 0 && rapid.Bool().Draw(t, "leave"):
				// The old node halts a replaced placement.
				in := p.Leaving[0]
				ev = events.Event{Subject: pkg, Data: events.PackageHalted{Node: in.Node, Epoch: in.Epoch, Reason: "replaced"}}
			case k < 5 && p != nil:
				// The package's host moves it on, as the protocol says.
				switch p.Phase {
				case PhasePlaced:
					ev = events.Event{Subject: pkg, Data: events.PackageStarting{Node: p.Node, Epoch: p.Epoch}}
				case PhaseStarting:
					ev = events.Event{Subject: pkg, Data: events.PackageStarted{Node: p.Node, Epoch: p.Epoch}}
				case PhaseRunning:
					ev = events.Event{Subject: pkg, Data: rapid.SampledFrom([]events.Payload{
						events.ServiceFailed{Service: "app", Node: p.Node, Epoch: p.Epoch},
						events.PackageFailed{Node: p.Node, Epoch: p.Epoch, Reason: "service_failed"},
						events.PackageReset{By: "op"},
					}).Draw(t, "running")}
				case PhaseFailing:
					ev = events.Event{Subject: pkg, Data: events.PackageFailed{Node: p.Node, Epoch: p.Epoch, Reason: "service_failed"}}
				case PhaseHalting:
					ev = events.Event{Subject: pkg, Data: events.PackageHalted{Node: p.Node, Epoch: p.Epoch, Reason: "x"}}
				default:
					ev = events.Event{Subject: pkg, Data: events.PackageReset{By: "op"}}
				}
			case k < 7:
				ev = events.Event{Subject: node, Data: events.NodeJoined{}}
			case k < 8:
				ev = events.Event{Subject: node, Data: rapid.SampledFrom([]events.Payload{events.NodeLost{Reason: "x"}, events.NodeHalted{By: "op"},
					events.NodeDrained{By: "op"}, events.NodeResumed{By: "op"}}).Draw(t, "nodeev")}
			case k < 9:
				decide(ReconcileAt(s, s.Time.Add(time.Duration(rapid.IntRange(0, 600).Draw(t, "later"))*time.Second)))
				continue
			default:
				ev = events.Event{Subject: node, Data: events.NodeJoined{}}
			}
			decide([]events.Event{ev})
		}
		// Once the controller has answered, no running package stays beside
		// a higher-priority one it excludes.
		for _, e := range Reconcile(s) {
			if d, ok := e.Data.(events.PackagePlaced); ok {
				cp, _ := c.Package(e.Subject)
				if why := s.dependencyUnmet(cp, d.Node); why != "" {
					t.Fatalf("reconcile places %s on %s though %s", e.Subject, d.Node, why)
				}
			}
		}
	})
}
