package failover

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/events/eventstest"
)

// scaleCluster is `vmguard bench scale`'s configuration: pkgs packages
// over nodes nodes, each listing 3 consecutive nodes.
func scaleCluster(nodes, pkgs int) *config.Cluster {
	c := &config.Cluster{Cluster: "scale", NodeTimeout: config.Duration(20 * time.Second), GuestTimeout: config.Duration(10 * time.Second)}
	for i := range nodes {
		c.Nodes = append(c.Nodes, fmt.Sprintf("n%04d", i))
	}
	for i := range pkgs {
		c.Packages = append(c.Packages, testPkg(fmt.Sprintf("p%05d", i), c.Nodes[i%nodes], c.Nodes[(i+1)%nodes], c.Nodes[(i+2)%nodes]))
	}
	return c
}

// controllerColdStart runs the controller's per-event work without I/O
// over a cold start of c: every event applied, then decided on (Decide, and
// Linked for each placement as the runner's guard does); each placement is
// fed back with the host manager's starting and started. It returns the
// events applied.
func controllerColdStart(tb testing.TB, c *config.Cluster) int {
	cfg, err := json.Marshal(c)
	if err != nil {
		tb.Fatal(err)
	}
	s := &State{}
	var seq uint64
	var queue []events.Event
	add := func(subject string, data events.Payload) {
		seq++
		queue = append(queue, events.Event{ID: fmt.Sprintf("e%d", seq), Source: eventstest.SourceOf(data, subject), Subject: subject,
			Time: t0.Add(time.Duration(seq) * time.Millisecond), Data: data, Seq: seq})
	}
	add("", events.ConfigApplied{Config: cfg, Hash: "h"})
	for _, n := range c.Nodes {
		add(n, events.NodeJoined{})
	}
	n := 0
	for len(queue) > 0 {
		e := queue[0]
		queue = queue[1:]
		s.Apply(e)
		n++
		for _, d := range Decide(s, e) {
			_ = s.Linked(d.Subject)
			add(d.Subject, d.Data)
			if pl, ok := d.Data.(events.PackagePlaced); ok {
				add(d.Subject, events.PackageStarting{Node: pl.Node, Epoch: pl.Epoch})
				add(d.Subject, events.PackageStarted{Node: pl.Node, Epoch: pl.Epoch})
			}
		}
	}
	for _, cp := range c.Packages {
		if p := s.Packages[cp.Name]; p == nil || p.Phase != PhaseRunning {
			tb.Fatalf("package %s not running after the cold start", cp.Name)
		}
	}
	return n
}

// BenchmarkControllerColdStart measures the controller's CPU per event of a
// cold start at 20 nodes / 2,000 packages (bench scale's shape): it must
// not grow with the package count (issue 12).
func BenchmarkControllerColdStart(b *testing.B) {
	for _, size := range []struct{ nodes, pkgs int }{{20, 2000}, {100, 10000}} {
		b.Run(fmt.Sprintf("%dx%d", size.nodes, size.pkgs), func(b *testing.B) {
			c := scaleCluster(size.nodes, size.pkgs)
			var n int
			for range b.N {
				n = controllerColdStart(b, c)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
		})
	}
}

// BenchmarkReconcileScale measures the leader's periodic Reconcile (every
// DefaultReconcileInterval) at 100 nodes / 10,000 packages, all running:
// the one pass over every package that stays.
func BenchmarkReconcileScale(b *testing.B) {
	c := scaleCluster(100, 10000)
	cfg, err := json.Marshal(c)
	if err != nil {
		b.Fatal(err)
	}
	s := &State{}
	var seq uint64
	apply := func(subject string, data events.Payload) {
		seq++
		s.Apply(events.Event{ID: fmt.Sprintf("e%d", seq), Source: eventstest.SourceOf(data, subject), Subject: subject, Seq: seq, Data: data})
	}
	apply("", events.ConfigApplied{Config: cfg, Hash: "h"})
	for _, n := range c.Nodes {
		apply(n, events.NodeJoined{})
	}
	for _, cp := range c.Packages {
		apply(cp.Name, events.PackagePlaced{Node: cp.Nodes[0], Epoch: 1, Reason: ReasonAutoRun})
		apply(cp.Name, events.PackageStarted{Node: cp.Nodes[0], Epoch: 1})
	}
	b.ResetTimer()
	for range b.N {
		if len(Reconcile(s)) != 0 {
			b.Fatal("something due")
		}
	}
}
