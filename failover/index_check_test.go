package failover

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// The pools TestPropIndexesAcrossChanges draws from: more names than any
// one configuration holds, so that configurations applied later add,
// remove and rename packages and nodes.
var (
	wideNodes = []string{"node1", "node2", "node3", "node4"}
	widePkgs  = []string{"web", "db", "mq", "cache", "api"}
)

// wideTriggers are events about the cluster, then each node of wideNodes
// and one no configuration names, then each package of widePkgs and one no
// configuration names.
var wideTriggers = func() []events.Event {
	out := []events.Event{{ID: "c", Data: events.ConfigApplied{}}}
	for _, n := range append(slices.Clone(wideNodes), "gone") {
		out = append(out, events.Event{ID: "n", Subject: n, Data: events.NodeLost{}})
	}
	for _, p := range append(slices.Clone(widePkgs), "unknown") {
		out = append(out, events.Event{ID: "p", Subject: p, Data: events.PackageFailed{}})
	}
	return out
}()

// genWideConfig draws a configuration over a part of widePkgs and
// wideNodes: failover and multi-node packages, priorities, dependencies of
// every kind (invalid combinations included: the fold takes any that
// decodes).
func genWideConfig(t *rapid.T) *config.Cluster {
	nodes := rapid.SliceOfNDistinct(rapid.SampledFrom(wideNodes), 1, len(wideNodes), rapid.ID[string]).Draw(t, "cfg.nodes")
	names := rapid.SliceOfNDistinct(rapid.SampledFrom(widePkgs), 0, len(widePkgs), rapid.ID[string]).Draw(t, "cfg.pkgs")
	c := &config.Cluster{Cluster: "prop", Nodes: nodes,
		NodeTimeout: config.Duration(5 * time.Second), GuestTimeout: config.Duration(5 * time.Second)}
	for _, name := range names {
		// A package may list a node the cluster no longer has.
		p := testPkg(name, rapid.SliceOfNDistinct(rapid.SampledFrom(wideNodes), 1, 3, rapid.ID[string]).Draw(t, name+".nodes")...)
		if rapid.Float64Range(0, 1).Draw(t, name+".multi") < 0.25 {
			p.Type = config.TypeMultiNode
		}
		p.FailoverPolicy = rapid.SampledFrom([]string{config.ConfiguredNode, config.MinPackageNode}).Draw(t, name+".failover")
		p.FailbackPolicy = rapid.SampledFrom([]string{config.FailbackManual, config.FailbackAutomatic}).Draw(t, name+".failback")
		p.AutoRun = boolp(rapid.Float64Range(0, 1).Draw(t, name+".autorun") < 0.85)
		p.Priority = rapid.SampledFrom([]int{0, 0, 10, 20, 30}).Draw(t, name+".prio")
		for _, other := range widePkgs {
			if other == name || rapid.IntRange(0, 4).Draw(t, name+".dep."+other) != 0 {
				continue
			}
			d := rapid.SampledFrom([]config.Dependency{
				{Name: other, Condition: config.DependUp, Location: config.SameNode},
				{Name: other, Condition: config.DependUp, Location: config.AnyNode},
				{Name: other, Condition: config.DependUp, Location: config.DifferentNode},
				{Name: other, Condition: config.DependDown, Location: config.SameNode},
				{Name: other, Condition: config.DependDown, Location: config.AllNodes},
			}).Draw(t, name+".deptype."+other)
			p.Dependencies = append(p.Dependencies, d)
		}
		c.Packages = append(c.Packages, p)
	}
	return c
}

// scanOrder is the order due decides c's packages in, by a sort of the
// whole configuration (as before the indexes).
func scanOrder(c *config.Cluster) []int {
	order := make([]int, len(c.Packages))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return priorityOrder(c.Packages[a], c.Packages[b]) })
	return order
}

// unindexed returns a deep copy of s without its indexes: what it decides
// is computed from indexes built afresh.
func unindexed(s *State) *State {
	c := s.Clone()
	c.cfgIx, c.pkgIx = nil, nil
	return c
}

// checkIndexesFresh fails unless s's indexes (those built) equal indexes
// built afresh from s, and Decide and ReconcileAt on s decide exactly what
// the full scan decides on ref (a state equal to s, without indexes) for a
// trigger about the cluster, every node and every package of the pools and
// beyond.
func checkIndexesFresh(t *rapid.T, s, ref *State, how string) {
	if s.pkgIx != nil {
		fresh := unindexed(s).stateIndex()
		if !reflect.DeepEqual(s.pkgIx, fresh) {
			t.Fatalf("%s: state index kept by Apply\n %+v\nbuilt afresh\n %+v", how, *s.pkgIx, *fresh)
		}
	}
	if s.cfgIx != nil && s.cfgIx.cfg == s.Config {
		if fresh := newConfigIndex(s.Config); !reflect.DeepEqual(s.cfgIx, fresh) {
			t.Fatalf("%s: configuration index differs from one built afresh", how)
		}
	}
	if s.Config != nil {
		for _, p := range wideTriggers[len(wideNodes)+2:] {
			if got, want := s.Linked(p.Subject), Linked(ref.Config, p.Subject); !slices.Equal(got, want) {
				t.Fatalf("%s: Linked(%s) = %v, the scan %v", how, p.Subject, got, want)
			}
		}
	}
	for _, tr := range wideTriggers {
		got, want := fmt.Sprintf("%+v", Decide(s, tr)), fmt.Sprintf("%+v", decideFullScan(unindexed(ref), tr))
		if got != want {
			t.Fatalf("%s: Decide(%s %s):\n got %s\nwant %s", how, tr.Type(), tr.Subject, got, want)
		}
	}
	now := s.Time.Add(time.Minute)
	got := fmt.Sprintf("%+v", ReconcileAt(s, now))
	var want []events.Event
	if r := unindexed(ref); r.Config != nil {
		for _, pl := range r.due(scanOrder(r.Config), now) {
			want = append(want, pl.event(pl.causeID))
		}
	}
	if w := fmt.Sprintf("%+v", want); got != w {
		t.Fatalf("%s: ReconcileAt:\n got %s\nwant %s", how, got, w)
	}
}

// snapshotRoundTrip is s as a snapshot restores it: taken as takeSnapshot
// takes it (the configuration apart, as its JSON), decoded as
// decodeSnapshot decodes it.
func snapshotRoundTrip(t *rapid.T, s *State) *State {
	st := *s
	st.Config = nil
	b, err := json.Marshal(&st)
	if err != nil {
		t.Fatal(err)
	}
	var back State
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if s.Config != nil {
		raw, err := json.Marshal(s.Config)
		if err != nil {
			t.Fatal(err)
		}
		if back.Config, err = config.FromJSON(raw); err != nil {
			t.Fatal(err)
		}
	}
	return &back
}

// TestPropIndexesAcrossChanges: through logs that re-apply configurations
// mid-way (packages and nodes added, removed, renamed, made multi-node,
// linked and unlinked), skip messages, lose, fence and halt nodes, and
// place multi-node instances, the indexes Apply keeps equal indexes built
// afresh after every event, and Decide and ReconcileAt decide what the full
// scan decides; so do the states continued from a Clone, a JSON round trip
// and a snapshot's round trip taken at any point, fed the same events
// after (and the original, whose index a clone must not share).
func TestPropIndexesAcrossChanges(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var seq uint64
		// states[0] decides; every state gets every event.
		states := []*State{{}}
		hows := []string{"state"}
		each := func(f func(*State)) {
			for _, s := range states {
				f(s)
			}
		}
		add := func(subject string, data events.Payload) events.Event {
			seq += uint64(rapid.IntRange(1, 2).Draw(t, "gap"))
			e := events.Event{ID: fmt.Sprintf("e%d", seq), Source: "/prop", Subject: subject,
				Time: t0.Add(time.Duration(seq) * time.Second), Data: data, Seq: seq}
			each(func(s *State) { s.Apply(e) })
			return e
		}
		decided := func(out []events.Event) {
			for _, d := range out {
				add(d.Subject, d.Data)
			}
		}
		applyConfig := func() {
			cfg, err := json.Marshal(genWideConfig(t))
			if err != nil {
				t.Fatal(err)
			}
			if rapid.Float64Range(0, 1).Draw(t, "cfg.bad") < 0.05 {
				cfg = []byte("{") // does not decode: the configuration in force stays
			}
			add("", events.ConfigApplied{Config: cfg, Hash: fmt.Sprintf("h%d", seq)})
		}
		applyConfig()
		steps := rapid.IntRange(0, 80).Draw(t, "steps")
		for i := range steps {
			s := states[0]
			pkg := rapid.SampledFrom(widePkgs).Draw(t, "pkg")
			node := rapid.SampledFrom(wideNodes).Draw(t, "node")
			p := s.Package(pkg)
			if p == nil {
				p = &PackageState{}
			}
			ep := rapid.SampledFrom([]uint64{p.Epoch, p.Epoch, max(p.Epoch, 1) - 1, p.Epoch + 1}).Draw(t, "epoch")
			var last events.Event
			switch rapid.IntRange(0, 19).Draw(t, "kind") {
			case 0, 1, 2, 3:
				// The host moves the package (or an instance) on.
				in := p
				if len(p.Instances) > 0 {
					in = p.Instances[rapid.SampledFrom(slices.Sorted(maps.Keys(p.Instances))).Draw(t, "inst")]
				}
				switch in.Phase {
				case PhasePlaced:
					last = add(pkg, events.PackageStarting{Node: in.Node, Epoch: in.Epoch})
				case PhaseStarting:
					last = add(pkg, events.PackageStarted{Node: in.Node, Epoch: in.Epoch})
				case PhaseRunning:
					last = add(pkg, rapid.SampledFrom([]events.Payload{
						events.ServiceFailed{Service: "app", Node: in.Node, Epoch: in.Epoch},
						events.PackageFailed{Node: in.Node, Epoch: in.Epoch, Reason: "service_failed"},
						events.PackageHalting{Node: in.Node, Epoch: in.Epoch, Reason: "x"},
					}).Draw(t, "running"))
				case PhaseFailing:
					last = add(pkg, events.PackageFailed{Node: in.Node, Epoch: in.Epoch, Reason: "service_failed"})
				case PhaseHalting:
					last = add(pkg, events.PackageHalted{Node: in.Node, Epoch: in.Epoch, Reason: "x"})
				default:
					last = add(node, events.NodeJoined{})
				}
			case 4, 5:
				last = add(node, events.NodeJoined{})
			case 6:
				last = add(node, events.NodeLost{Reason: "lease expired"})
			case 7:
				last = add(node, rapid.SampledFrom([]events.Payload{events.NodeFenced{Reason: "x"}, events.NodeHalted{By: "op"}, events.NodeHalted{},
					events.NodeDrained{By: "op"}, events.NodeResumed{By: "op"},
					events.NodeFrozen{Until: t0.Add(time.Hour), By: "op"}, events.NodeThawed{By: "op"}}).Draw(t, "nodedown"))
			case 8:
				decided(ReconcileAt(s, s.Time.Add(time.Duration(rapid.IntRange(0, 120).Draw(t, "later"))*time.Second)))
			case 9, 10, 11:
				last = add(pkg, rapid.SampledFrom([]events.Payload{
					events.PackageStarting{Node: node, Epoch: ep},
					events.PackageStarted{Node: node, Epoch: ep},
					events.PackageFailed{Node: node, Epoch: ep, Reason: "service_failed"},
					events.PackageHalted{Node: node, Epoch: ep, Reason: "x"},
					events.PackageHalting{Node: node, Epoch: ep, Reason: "x", By: "op"},
					events.PackageHalting{Reason: "x", By: "op"},
					events.PackagePlaced{Node: node, Epoch: p.Epoch + 1, Reason: ReasonOperatorMove, By: "op"},
					events.PackagePlaced{Node: node, Epoch: ep, Reason: ReasonFailover},
					events.PackageReset{By: "op"},
					events.PackageChecked{},
					events.PackageSwitchingChanged{Node: node, Enabled: rapid.Bool().Draw(t, "on"), By: "op"},
					events.ServiceFailed{Service: "app", Node: node, Epoch: ep},
					events.GuestLost{Guest: pkg + "vm", Node: node, Epoch: ep},
				}).Draw(t, "any"))
			case 12:
				applyConfig()
			case 13:
				seq++
				subject := events.PackageSubject(pkg, "package", "placed")
				if rapid.Bool().Draw(t, "skipnode") {
					subject = events.NodeSubject(node, "joined")
				}
				each(func(s *State) { s.Skip(seq, subject) })
			case 14:
				// Go on from a copy too, as a snapshot, a status reply or
				// a restart does.
				var c *State
				how := rapid.SampledFrom([]string{"clone", "JSON", "snapshot"}).Draw(t, "copy")
				switch how {
				case "clone":
					c = s.Clone()
				case "JSON":
					b, err := json.Marshal(s)
					if err != nil {
						t.Fatal(err)
					}
					c = &State{}
					if err := json.Unmarshal(b, c); err != nil {
						t.Fatal(err)
					}
				default:
					c = snapshotRoundTrip(t, s)
				}
				states = append(states, c)
				hows = append(hows, fmt.Sprintf("%s at step %d", how, i))
				if len(states) > 4 {
					states = slices.Delete(states, 1, 2)
					hows = slices.Delete(hows, 1, 2)
				}
			default:
				if out, err := s.Command(drawCommand(t, pkg, node, s.Time)); err == nil {
					decided(out)
				}
			}
			if last.Seq != 0 && rapid.Float64Range(0, 1).Draw(t, "decide") < 0.7 {
				decided(Decide(states[0], last))
			}
			for k, st := range states {
				checkIndexesFresh(t, st, states[0], hows[k])
			}
		}
	})
}
