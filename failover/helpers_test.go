package failover

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/events/eventstest"
)

// t0 is the fixed time of the test logs; event n is at t0 + n seconds.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// logb builds a test log: each event gets the next sequence, id "e<seq>"
// and a fixed time.
type logb struct {
	t   testing.TB
	evs []events.Event
}

func newLog(t testing.TB) *logb { return &logb{t: t} }

func (l *logb) add(subject string, data events.Payload, cause string) events.Event {
	seq := uint64(len(l.evs) + 1)
	e := events.Event{
		ID:      fmt.Sprintf("e%d", seq),
		Source:  eventstest.SourceOf(data, subject),
		Subject: subject,
		Time:    t0.Add(time.Duration(seq) * time.Second),
		CauseID: cause,
		Data:    data,
		Seq:     seq,
	}
	l.evs = append(l.evs, e)
	return e
}

// decideCase builds a log with build and checks that Decide on its last
// event answers want (brief's text) and, if note is set, that pkg's
// State.Note contains it; it returns the log, the state and the decisions.
func decideCase(t *testing.T, build func(l *logb), want, pkg, note string) (*logb, *State, []events.Event) {
	t.Helper()
	l := newLog(t)
	build(l)
	s := l.state()
	got := Decide(s, l.last())
	if b := brief(got); b != want {
		t.Errorf("Decide:\n got %s\nwant %s", b, want)
	}
	if note != "" {
		if n := s.Note(pkg); !strings.Contains(n, note) {
			t.Errorf("Note(%s) = %q, want it to contain %q", pkg, n, note)
		}
	}
	return l, s, got
}

// last returns the last event added.
func (l *logb) last() events.Event { return l.evs[len(l.evs)-1] }

// state folds the log so far.
func (l *logb) state() *State { return Fold(l.evs) }

func (l *logb) config(c *config.Cluster) events.Event {
	return l.add("", configApplied(l.t, c), "")
}

// configApplied records c, as `vmguard apply` does (hash "h").
func configApplied(t testing.TB, c *config.Cluster) events.ConfigApplied {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return events.ConfigApplied{Config: b, Hash: "h"}
}

func (l *logb) join(nodes ...string) events.Event {
	for _, n := range nodes {
		l.add(n, events.NodeJoined{}, "")
	}
	return l.last()
}

func (l *logb) lost(node string) events.Event {
	return l.add(node, events.NodeLost{Reason: "lease expired"}, "")
}

func (l *logb) place(pkg, node string, epoch uint64, reason, prev string) events.Event {
	return l.add(pkg, events.PackagePlaced{Node: node, Epoch: epoch, Reason: reason, PreviousNode: prev}, "")
}

// run places pkg on node under epoch and starts it there.
func (l *logb) run(pkg, node string, epoch uint64) events.Event {
	p := l.place(pkg, node, epoch, ReasonAutoRun, "")
	l.add(pkg, events.PackageStarting{Node: node, Epoch: epoch}, p.ID)
	return l.add(pkg, events.PackageStarted{Node: node, Epoch: epoch}, p.ID)
}

// start starts the current placement.
func (l *logb) start(pkg, node string, epoch uint64) events.Event {
	l.add(pkg, events.PackageStarting{Node: node, Epoch: epoch}, "")
	return l.add(pkg, events.PackageStarted{Node: node, Epoch: epoch}, "")
}

func (l *logb) failed(pkg, node string, epoch uint64) events.Event {
	return l.add(pkg, events.PackageFailed{Node: node, Epoch: epoch, Reason: "service_failed", Service: "app"}, "")
}

// applyAll applies decided events as if the runner appended them.
func (l *logb) applyAll(evs []events.Event) {
	for _, e := range evs {
		l.add(e.Subject, e.Data, e.CauseID)
	}
}

// equalStates reports whether two states are deeply equal, but for their
// indexes (index.go: built on first use, derived from the rest).
func equalStates(a, b *State) bool {
	aa, bb := *a, *b
	aa.cfgIx, aa.pkgIx, bb.cfgIx, bb.pkgIx = nil, nil, nil, nil
	return reflect.DeepEqual(&aa, &bb)
}

func boolp(b bool) *bool { return &b }

// testPkg returns a package on nodes with one service "app" (restart 3),
// configured_node, manual failback, unlimited relocations.
func testPkg(name string, nodes ...string) config.Package {
	return config.Package{
		Name:           name,
		Nodes:          nodes,
		FailoverPolicy: config.ConfiguredNode,
		FailbackPolicy: config.FailbackManual,
		MaxRelocate:    config.Unlimited,
		Guest:          config.Guest{Name: name + "vm", Driver: config.DriverProcess},
		Services:       []config.Service{{Name: "app", Cmd: []string{"app"}, Restart: config.Limit{N: 3}}},
	}
}

func testCluster(pkgs ...config.Package) *config.Cluster {
	return &config.Cluster{
		Cluster:      "demo",
		NodeTimeout:  config.Duration(5 * time.Second),
		GuestTimeout: config.Duration(5 * time.Second),
		Nodes:        []string{"node1", "node2", "node3"},
		Packages:     pkgs,
	}
}

// brief renders decided placements compactly for comparisons.
func brief(evs []events.Event) string {
	var parts []string
	for _, e := range evs {
		switch d := e.Data.(type) {
		case events.PlacementNoted:
			// Left out: every placement has one (TestPlacementGoesWithItsMarker).
		case events.PackagePlaced:
			s := fmt.Sprintf("%s->%s epoch=%d reason=%s", e.Subject, d.Node, d.Epoch, d.Reason)
			if d.PreviousNode != "" {
				s += " prev=" + d.PreviousNode
			}
			if d.By != "" {
				s += " by=" + d.By
			}
			if d.Migrate {
				s += " migrate"
			}
			parts = append(parts, s+" cause="+e.CauseID)
		default:
			s := fmt.Sprintf("%s %s %s", events.ShortType(e.Type()), e.Subject, e.Summary())
			if e.CauseID != "" {
				s += " cause=" + e.CauseID
			}
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, "; ")
}
