package failover

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/lease"
)

// memLog is a DecisionLog in memory: what the loop needs of the log (append
// with Expect, an atomic batch, a subject's tail, the last sequence), with
// the server's expected-sequence check on filters ending in ".>".
type memLog struct{ evs []events.Event }

func (m *memLog) lastOn(filter string) uint64 {
	prefix, wild := strings.CutSuffix(filter, ">")
	for i := len(m.evs) - 1; i >= 0; i-- {
		subj, _ := events.SubjectOf(m.evs[i])
		if subj == filter || wild && strings.HasPrefix(subj, prefix) {
			return m.evs[i].Seq
		}
	}
	return 0
}

func (m *memLog) check(opts []events.AppendOption) error {
	for _, o := range opts {
		if x, ok := o.(events.Expect); ok && m.lastOn(x.Subject) != x.Seq {
			return fmt.Errorf("%s at %d, not %d: %w", x.Subject, m.lastOn(x.Subject), x.Seq, events.ErrConflict)
		}
	}
	return nil
}

func (m *memLog) add(e events.Event) events.Event {
	e.Seq = uint64(len(m.evs)) + 1
	m.evs = append(m.evs, e)
	return e
}

func (m *memLog) Append(_ context.Context, e events.Event, opts ...events.AppendOption) (uint64, error) {
	if err := m.check(opts); err != nil {
		return 0, err
	}
	return m.add(e).Seq, nil
}

func (m *memLog) AppendBatch(_ context.Context, items ...events.BatchItem) ([]uint64, error) {
	for _, it := range items {
		if err := m.check(it.Opts); err != nil {
			return nil, err
		}
	}
	var seqs []uint64
	for _, it := range items {
		seqs = append(seqs, m.add(it.Event).Seq)
	}
	return seqs, nil
}

func (m *memLog) Tail(_ context.Context, subject string) (events.SubjectTail, error) {
	return events.SubjectTail{Seq: m.lastOn(subject)}, nil
}

func (m *memLog) LastSeq(context.Context) (uint64, error) { return uint64(len(m.evs)), nil }

// webOnTwoNodes appends a configuration with package web on node1 and
// node2, and both nodes' joins.
func (m *memLog) webOnTwoNodes(t *testing.T) {
	l := newLog(t)
	l.config(testCluster(testPkg("web", "node1", "node2")))
	l.join("node1", "node2")
	for _, e := range l.evs {
		m.add(e)
	}
}

// TestLoopSteps drives the controller's loop one synchronous step at a
// time through its seams — an in-memory DecisionLog, liveness over an
// in-memory lease store, a fixed clock — without Run, its goroutines, a
// server or a ticker: what a simulator would do. It reads three events,
// becomes leader and places the package; reads its placement back; finds
// node1's lease gone at a check tick and appends node.lost; reads it and
// places the package on node2.
func TestLoopSteps(t *testing.T) {
	ctx := context.Background()
	now := t0.Add(time.Hour)
	log := &memLog{}
	// Log is never used: the steps append to out, and nothing opens buckets.
	r, err := NewRunner(Config{Log: &events.Log{}, ID: "ctl", Now: func() time.Time { return now }, NoElection: true, StartGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	leases := &fakeLeases{held: map[string]lease.Value{"node1": {Renewed: now}, "node2": {Renewed: now}}}
	r.out = log
	r.live = newLiveness(simLeases{leases}, &fakeProber{verdict: lease.Lost}, r.cfg.Now, fixedClock(now), time.Second, slog.New(slog.DiscardHandler))
	r.el.always()

	// read hands the loop every event of the log it has not read yet.
	read := func() {
		for _, e := range log.evs[r.state.Seq:] {
			r.handle(ctx, item{e: e})
		}
		r.drained(ctx)
	}
	last := func() string { return brief(log.evs[len(log.evs)-1:]) }

	log.webOnTwoNodes(t)
	read()
	if len(log.evs) != 3 {
		t.Fatalf("a standby decided: %s", brief(log.evs[3:]))
	}
	r.leadChanged(ctx, true)
	if got := last(); got != "web->node1 epoch=1 reason=auto_run cause=e2" {
		t.Fatalf("after leading: %s, want web placed on node1", got)
	}
	if r.pending["pkg.web"] != 5 { // 4: its marker
		t.Errorf("pending on web: %d, want 5 until it is read back", r.pending["pkg.web"])
	}
	read()
	r.reconcileTick(ctx)
	r.checkTick(ctx)
	if len(log.evs) != 5 || len(r.pending) != 0 {
		t.Fatalf("with nothing new: appended %s, pending %v", brief(log.evs[5:]), r.pending)
	}

	delete(leases.held, "node1")
	r.checkTick(ctx)
	if got := last(); !strings.HasPrefix(got, "node.lost node1") {
		t.Fatalf("after node1's lease vanished: %s, want node.lost node1", got)
	}
	lost := log.evs[len(log.evs)-1]
	read()
	if got := last(); got != "web->node2 epoch=2 reason=node_lost prev=node1 cause="+lost.ID {
		t.Fatalf("after reading the loss: %s, want web placed on node2", got)
	}
	if st := r.Stats(); st.Decisions != 3 || st.NodesLost != 1 || st.Conflicts != 0 {
		t.Errorf("stats %+v, want 3 decisions, 1 node lost, no conflict", st)
	}
}

// TestNewLoop drives the exported loop (the simulator's entry point) the
// way the simulator does: events handed to Handle, leadership to
// LeadChanged, check ticks; it places, declares a node whose lease is gone
// lost and places again, stamping with the caller's clock.
func TestNewLoop(t *testing.T) {
	ctx := context.Background()
	now := t0.Add(time.Hour)
	log := &memLog{}
	leases := &fakeLeases{held: map[string]lease.Value{"node1": {Renewed: now}, "node2": {Renewed: now}}}
	if _, err := NewLoop(LoopConfig{Log: log}); err == nil {
		t.Fatal("NewLoop without leases, prober and clocks: no error")
	}
	lp, err := NewLoop(LoopConfig{ID: "sim", Log: log, Leases: leases, Prober: &fakeProber{verdict: lease.Lost},
		Now: func() time.Time { return now }, Clock: fixedClock(now), StartGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	read := func() {
		for _, e := range log.evs[lp.Seq():] {
			lp.Handle(ctx, e)
		}
		lp.Drained(ctx)
	}
	last := func() events.Event { return log.evs[len(log.evs)-1] }

	log.webOnTwoNodes(t)
	read()
	lp.CheckTick(ctx)
	lp.ReconcileTick(ctx)
	if len(log.evs) != 3 {
		t.Fatalf("a standby decided: %s", brief(log.evs[3:]))
	}
	lp.LeadChanged(ctx, true)
	if got := brief(log.evs[3:]); got != "web->node1 epoch=1 reason=auto_run cause=e2" {
		t.Fatalf("after leading: %s, want web placed on node1", got)
	}
	if !last().Time.Equal(now) {
		t.Errorf("decision stamped %v, want the loop's clock %v", last().Time, now)
	}
	read()
	delete(leases.held, "node1")
	lp.CheckTick(ctx)
	if got := brief(log.evs[len(log.evs)-1:]); !strings.HasPrefix(got, "node.lost node1") {
		t.Fatalf("after node1's lease vanished: %s, want node.lost node1", got)
	}
	lost := last()
	read()
	if got := brief(log.evs[len(log.evs)-1:]); got != "web->node2 epoch=2 reason=node_lost prev=node1 cause="+lost.ID {
		t.Fatalf("after reading the loss: %s, want web placed on node2", got)
	}
	lp.LeadChanged(ctx, false)
	n := len(log.evs)
	read()
	delete(leases.held, "node2")
	lp.CheckTick(ctx)
	lp.ReconcileTick(ctx)
	if len(log.evs) != n {
		t.Fatalf("decided after losing leadership: %s", brief(log.evs[n:]))
	}
	if st := lp.Stats(); st.Decisions != 3 || st.NodesLost != 1 {
		t.Errorf("stats %+v, want 3 decisions, 1 node lost", st)
	}
}

// tailCounter is a memLog that counts the tails asked of each subject.
type tailCounter struct {
	*memLog
	asked map[string]int
}

func (m *tailCounter) Tail(ctx context.Context, subject string) (events.SubjectTail, error) {
	m.asked[subject]++
	return m.memLog.Tail(ctx, subject)
}

// TestEmitAsksEachNodeOnce: the placements of one pass on one node ask the
// log for the node's tail once (a node loss's hundreds at scale were a
// request each), and share its answer: when the node moved on, none is
// appended.
func TestEmitAsksEachNodeOnce(t *testing.T) {
	ctx := context.Background()
	now := t0.Add(time.Hour)
	for _, moved := range []bool{false, true} {
		log := &tailCounter{memLog: &memLog{}, asked: map[string]int{}}
		r := leadingRunner(t, now, log)
		l := newLog(t)
		l.config(testCluster(testPkg("web", "node1"), testPkg("db", "node1"), testPkg("mq", "node1")))
		r.handle(ctx, item{e: log.add(l.evs[0])})
		r.leadChanged(ctx, true) // nothing due yet: no node
		l.join("node1")
		join := log.add(l.evs[1])
		if moved {
			// Written after the join, not yet read: the placements wait.
			log.add(events.Event{ID: "x", Source: "/t", Subject: "node1", Data: events.NodeResourceSet{Name: "r", Status: events.ResourceUp}})
		}
		before := len(log.evs)
		r.handle(ctx, item{e: join})
		placed := brief(log.evs[before:])
		if n := log.asked[events.NodeFilter("node1")]; n != 1 {
			t.Errorf("moved %v: node1's tail asked %d times for one pass, want 1 (asked %v)", moved, n, log.asked)
		}
		want := "web->node1 epoch=1 reason=auto_run cause=e2; db->node1 epoch=1 reason=auto_run cause=e2; mq->node1 epoch=1 reason=auto_run cause=e2"
		if moved {
			want = ""
		}
		if placed != want {
			t.Errorf("moved %v: appended %s, want %q", moved, placed, want)
		}
	}
}

// batchCounter is a memLog that records the size of each batch and refuses
// one larger than the server takes, as the real Log does (it then appends
// one event at a time).
type batchCounter struct {
	*memLog
	sizes []int
}

func (m *batchCounter) AppendBatch(ctx context.Context, items ...events.BatchItem) ([]uint64, error) {
	if len(items) > events.MaxBatch {
		return nil, fmt.Errorf("a batch of %d", len(items))
	}
	m.sizes = append(m.sizes, len(items))
	return m.memLog.AppendBatch(ctx, items...)
}

// TestEmitChunksWhatABatchCannotHold: 700 placements decided at once (a
// node's join; a loss of 10 nodes places ~1,000) with their markers are
// 1,400 items, more than one atomic batch holds; they go in batches that
// fit, each placement after its marker, not one event at a time.
func TestEmitChunksWhatABatchCannotHold(t *testing.T) {
	ctx := context.Background()
	now := t0.Add(time.Hour)
	log := &batchCounter{memLog: &memLog{}}
	r := leadingRunner(t, now, log)
	var pkgs []config.Package
	for i := range 700 {
		pkgs = append(pkgs, testPkg(fmt.Sprintf("p%03d", i), "node1"))
	}
	l := newLog(t)
	l.config(testCluster(pkgs...))
	r.handle(ctx, item{e: log.add(l.evs[0])})
	r.leadChanged(ctx, true)
	l.join("node1")
	before := len(log.evs)
	r.handle(ctx, item{e: log.add(l.evs[1])})
	added := log.evs[before+1:]
	if len(log.sizes) != 2 || log.sizes[0]+log.sizes[1] != 1400 {
		t.Fatalf("batches of %v, want two that hold the 700 placements and their markers", log.sizes)
	}
	placed := 0
	for i, e := range added {
		d, ok := e.Data.(events.PackagePlaced)
		if !ok {
			continue
		}
		placed++
		if m, ok := added[i-1].Data.(events.PlacementNoted); i == 0 || !ok || m.Package != e.Subject || m.Epoch != d.Epoch {
			t.Fatalf("placement of %s not after its marker", e.Subject)
		}
	}
	if placed != 700 {
		t.Errorf("%d placements, want 700", placed)
	}
}

// leadingRunner returns a runner at now that appends to out, always
// elected, with no lease held and a prober that cannot tell.
func leadingRunner(t *testing.T, now time.Time, out DecisionLog) *Runner {
	t.Helper()
	r, err := NewRunner(Config{Log: &events.Log{}, ID: "ctl", Now: func() time.Time { return now }, NoElection: true, StartGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	r.out = out
	r.live = newLiveness(simLeases{&fakeLeases{held: map[string]lease.Value{}}}, &fakeProber{verdict: lease.Unknown}, r.cfg.Now, fixedClock(now), time.Second, slog.New(slog.DiscardHandler))
	r.el.always()
	return r
}

// TestEmitChunksByNode: decisions that take several batches go in the
// order of the nodes they place on, so that each node's placements are in
// one batch (or two, where a batch ends): its host manager takes them in
// at once, on one new consumer.
func TestEmitChunksByNode(t *testing.T) {
	ctx := context.Background()
	now := t0.Add(time.Hour)
	log := &batchCounter{memLog: &memLog{}}
	r := leadingRunner(t, now, log)
	nodes := []string{"node1", "node2", "node3", "node4"}
	var pkgs []config.Package
	for i := range 700 {
		pkgs = append(pkgs, testPkg(fmt.Sprintf("p%03d", i), nodes[i%len(nodes)]))
	}
	l := newLog(t)
	l.config(testCluster(pkgs...))
	for _, n := range nodes {
		l.join(n)
	}
	for _, e := range l.evs {
		r.handle(ctx, item{e: log.add(e)})
	}
	before := len(log.evs)
	r.leadChanged(ctx, true)             // one pass places all 700
	batches := map[string]map[int]bool{} // node -> the batches placing on it
	at := before
	for b, size := range log.sizes {
		for _, e := range log.evs[at : at+size] {
			if n := placedOn(e); n != "" {
				if batches[n] == nil {
					batches[n] = map[int]bool{}
				}
				batches[n][b] = true
			}
		}
		at += size
	}
	spread := 0
	for _, n := range nodes {
		spread += len(batches[n])
	}
	if len(log.sizes) != 2 || spread > len(nodes)+len(log.sizes)-1 {
		t.Errorf("%d batches place on the 4 nodes %d times (%v), want 2 batches, each node's placements together", len(log.sizes), spread, batches)
	}
}
