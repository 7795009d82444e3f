package failover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/lease"
)

// fakeLeases is a LeaseStore in memory: what any replica answers (held),
// what the leader answers (atLeader), reads that fail (failing).
type fakeLeases struct {
	closed   bool // open finds nothing to read
	held     map[string]lease.Value
	atLeader map[string]lease.Value
	failing  map[string]bool
	reads    []string
}

func (f *fakeLeases) Open(context.Context, time.Duration) (bool, error) { return !f.closed, nil }

func (f *fakeLeases) Get(_ context.Context, node string) ([]byte, bool, error) {
	f.reads = append(f.reads, node)
	if f.failing[node] {
		return nil, false, errors.New("timeout")
	}
	v, ok := f.held[node]
	if !ok {
		return nil, false, nil
	}
	return v.Encode(), true, nil
}

func (f *fakeLeases) GetAtLeader(_ context.Context, node string) (lease.Value, bool, error) {
	v, ok := f.atLeader[node]
	return v, ok, nil
}

// fakeProber is a StoreProber with a fixed verdict.
type fakeProber struct {
	verdict lease.Verdict
	ttl     time.Duration
}

func (p *fakeProber) Run(context.Context)                         {}
func (p *fakeProber) SetTTL(ttl time.Duration)                    { p.ttl = ttl }
func (p *fakeProber) Decide(time.Time) (lease.Verdict, time.Time) { return p.verdict, t0 }

type fixedClock time.Time

func (c fixedClock) Now() time.Time { return time.Time(c) }

// TestLivenessLost asks liveness, without a runner or a server, which
// nodes to declare lost: only a watched node whose lease is gone at the
// replica and at the leader, once the store has taken writes for a
// node_timeout, and never a frozen one; last_seen is the last renewal read.
func TestLivenessLost(t *testing.T) {
	renewed := t0.Add(time.Minute)
	now := t0.Add(time.Hour)
	l := newLog(t)
	l.config(testCluster(testPkg("web", "node1", "node2", "node3")))
	l.join("node1", "node2", "node3")
	l.add("node3", events.NodeFrozen{Until: now.Add(time.Hour)}, "")
	state := l.state()

	tests := []struct {
		name    string
		leases  fakeLeases
		verdict lease.Verdict
		want    string // the nodes declared lost
	}{
		{name: "all held", verdict: lease.Lost,
			leases: fakeLeases{held: map[string]lease.Value{"node1": {Renewed: renewed}, "node2": {Renewed: renewed}}}},
		{name: "node2 gone, store judged lost: lost", verdict: lease.Lost,
			leases: fakeLeases{held: map[string]lease.Value{"node1": {Renewed: renewed}}},
			want:   "[node2]"},
		{name: "node2 gone, store not seen writable", verdict: lease.Unknown,
			leases: fakeLeases{held: map[string]lease.Value{"node1": {Renewed: renewed}}}},
		{name: "node2 gone, store writable again for less than node_timeout", verdict: lease.Young,
			leases: fakeLeases{held: map[string]lease.Value{"node1": {Renewed: renewed}}}},
		{name: "node2 gone at a replica, held at the leader", verdict: lease.Lost,
			leases: fakeLeases{held: map[string]lease.Value{"node1": {Renewed: renewed}},
				atLeader: map[string]lease.Value{"node2": {Renewed: renewed}}}},
		{name: "node2's read fails", verdict: lease.Lost,
			leases: fakeLeases{held: map[string]lease.Value{"node1": {Renewed: renewed}}, failing: map[string]bool{"node2": true}}},
		{name: "no bucket yet", verdict: lease.Lost, leases: fakeLeases{closed: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &fakeProber{verdict: tt.verdict}
			lv := newLiveness(simLeases{&tt.leases}, p, func() time.Time { return now }, fixedClock(now), time.Second, slog.New(slog.DiscardHandler))
			lv.setTTL(state)
			if p.ttl != 5*time.Second {
				t.Errorf("prober ttl %s, want the config's node_timeout 5s", p.ttl)
			}
			lv.lastSeen["node2"] = renewed.Add(-time.Second) // read at an earlier check
			got := lv.lost(context.Background(), state)
			want := tt.want
			if want == "" {
				want = "[]"
			}
			if nodes := lostNodes(got); nodes != want {
				t.Errorf("lost %s, want %s", nodes, want)
			}
			for _, e := range got {
				d := e.Data.(events.NodeLost)
				if !d.LastSeen.Equal(renewed.Add(-time.Second)) || d.Reason != ReasonLeaseExpired || e.Source != Source {
					t.Errorf("%s: %+v from %s, want the renewal read before, %q, from %s", e.Subject, d, e.Source, ReasonLeaseExpired, Source)
				}
			}
			if !tt.leases.closed && fmt.Sprint(tt.leases.reads) != "[node1 node2 node3]" {
				t.Errorf("read leases of %v, want every watched node in order", tt.leases.reads)
			}
			if _, ok := tt.leases.held["node1"]; ok && !lv.lastSeen["node1"].Equal(renewed) {
				t.Errorf("last seen node1 %s, want its renewal %s", lv.lastSeen["node1"], renewed)
			}
		})
	}
}

// TestLivenessSkipsUnwatchedNodes: a node its host manager halted on a
// clean stop is not read; a node an operator halted is (design-notes §6).
func TestLivenessSkipsUnwatchedNodes(t *testing.T) {
	l := newLog(t)
	l.config(testCluster(testPkg("web", "node1", "node2", "node3")))
	l.join("node1", "node2", "node3")
	l.add("node1", events.NodeHalted{Reason: "stop"}, "")
	l.add("node2", events.NodeHalted{By: "operator"}, "")
	leases := &fakeLeases{}
	lv := newLiveness(simLeases{leases}, &fakeProber{verdict: lease.Lost}, func() time.Time { return t0 }, fixedClock(t0), time.Second, slog.New(slog.DiscardHandler))
	got := lv.lost(context.Background(), l.state())
	if nodes := lostNodes(got); nodes != "[node2 node3]" {
		t.Errorf("lost %s, want [node2 node3]", nodes)
	}
	if fmt.Sprint(leases.reads) != "[node2 node3]" {
		t.Errorf("read leases of %v, want node2 and node3", leases.reads)
	}
}

// lostNodes lists the nodes of node.lost events.
func lostNodes(evs []events.Event) string {
	var nodes []string
	for _, e := range evs {
		if _, ok := e.Data.(events.NodeLost); ok {
			nodes = append(nodes, e.Subject)
		}
	}
	return fmt.Sprint(nodes)
}
