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

// benchLog returns a log of about n events over 3 nodes and pkgs packages,
// shaped like a long-running cluster: mostly process exits, restarts and
// starts, a failover now and then.
func benchLog(n, pkgs int) []events.Event {
	var evs []events.Event
	genBenchLog(n, pkgs, func(e events.Event) { evs = append(evs, e) })
	return evs
}

// genBenchLog hands the events of benchLog(n, pkgs) to emit one by one, so
// that a log of millions of events need not be held in memory.
func genBenchLog(n, pkgs int, emit func(events.Event)) {
	c := &config.Cluster{Cluster: "bench", Nodes: []string{"node1", "node2", "node3"}}
	for i := range pkgs {
		c.Packages = append(c.Packages, testPkg(fmt.Sprintf("p%d", i), "node1", "node2", "node3"))
	}
	cfg, _ := json.Marshal(c)
	var seq uint64
	add := func(subject string, data events.Payload) {
		seq++
		emit(events.Event{ID: fmt.Sprintf("e%d", seq), Source: eventstest.SourceOf(data, subject), Subject: subject,
			Time: t0.Add(time.Duration(seq) * time.Millisecond), Data: data, Seq: seq})
	}
	add("", events.ConfigApplied{Config: cfg, Hash: "h"})
	for _, node := range c.Nodes {
		add(node, events.NodeJoined{})
	}
	epoch := make([]uint64, pkgs)
	node := make([]string, pkgs)
	for i := range pkgs {
		epoch[i], node[i] = 1, "node1"
		name := fmt.Sprintf("p%d", i)
		add(name, events.PackagePlaced{Node: "node1", Epoch: 1, Reason: ReasonAutoRun})
		add(name, events.PackageStarted{Node: "node1", Epoch: 1})
	}
	for i := 0; int(seq) < n; i++ {
		k := i % pkgs
		name := fmt.Sprintf("p%d", k)
		ep := epoch[k]
		add(name, events.ProcessExited{Guest: name + "vm", Service: "app", PID: 1, RequestID: "r", Epoch: ep})
		add(name, events.ServiceRestarting{Service: "app", Node: node[k], Epoch: ep, Attempt: 1 + i%3})
		add(name, events.ProcessStarted{Guest: name + "vm", Service: "app", PID: 2, RequestID: "r", Epoch: ep})
		if i%97 == 0 {
			add(name, events.PackageFailed{Node: node[k], Epoch: ep, Reason: "service_failed"})
			add(name, events.PackageReset{By: "op"})
			epoch[k]++
			node[k] = c.Nodes[int(epoch[k])%3]
			add(name, events.PackagePlaced{Node: node[k], Epoch: epoch[k], Reason: ReasonFailover})
			add(name, events.PackageStarted{Node: node[k], Epoch: epoch[k]})
		}
	}
}

// BenchmarkFold measures the controller's cold start without I/O: folding
// a 1,000,000-event log (100 packages). Decoding the events is the log's
// cost, measured in events/.
func BenchmarkFold(b *testing.B) {
	evs := benchLog(1_000_000, 100)
	b.ResetTimer()
	for range b.N {
		Fold(evs)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(evs)), "ns/event")
}

// BenchmarkDecide measures one decision on a failure with 1,000 packages.
func BenchmarkDecide(b *testing.B) {
	evs := benchLog(10_000, 1000)
	s := Fold(evs)
	p := s.Package("p7")
	trigger := events.Event{ID: "f", Subject: "p7", Seq: s.Seq + 1, Data: events.PackageFailed{Node: p.Node, Epoch: p.Epoch, Reason: "x"}}
	s.Apply(trigger)
	b.ResetTimer()
	for range b.N {
		if len(Decide(s, trigger)) != 1 {
			b.Fatal("no decision")
		}
	}
}

// BenchmarkReconcile measures Reconcile with 1,000 packages, none due.
func BenchmarkReconcile(b *testing.B) {
	s := Fold(benchLog(10_000, 1000))
	b.ResetTimer()
	for range b.N {
		Reconcile(s)
	}
}

// BenchmarkStatus measures building and rendering `status -v` for 1,000
// packages.
func BenchmarkStatus(b *testing.B) {
	s := Fold(benchLog(10_000, 1000))
	b.ResetTimer()
	for range b.N {
		if err := BuildView(s).WriteText(discard{}, true); err != nil {
			b.Fatal(err)
		}
	}
}
