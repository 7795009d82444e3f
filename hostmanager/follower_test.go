package hostmanager

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

// TestFollower: the replay folds what concerns the node (its packages,
// found by the index, and node events) and nothing of other nodes'
// packages; after it, a package placed here for the first time comes to
// the loop as a catch-up of its history (install) before its later events,
// and events of packages placed elsewhere never come.
func TestFollower(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.place("web", "node1")
	e.place("db", "node2")
	e.halt("db", "node2", 1)
	f := newFollower(Config{Node: "node1", Log: e.log, Now: time.Now}, slog.New(slog.DiscardHandler))
	var folded []string
	last, err := f.replay(context.Background(), func(ev events.Event) { folded = append(folded, ev.Subject) }, func(uint64, string) {})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(folded, []string{"web"}) {
		t.Fatalf("replay folded %v, want web's placement only", folded)
	}
	if !f.concern["web"] || f.concern["db"] {
		t.Fatalf("concern set %v, want web only", f.concern)
	}

	ctx, cancel := context.WithCancel(context.Background())
	in := make(chan item, 16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.Run(ctx, last+1, nil, in)
	}()
	defer func() {
		cancel()
		wg.Wait()
	}()
	next := func() item {
		t.Helper()
		select {
		case it := <-in:
			return it
		case <-time.After(15 * time.Second):
			t.Fatal("nothing from the follower")
			return item{}
		}
	}
	e.halt("db", "node2", 1) // not this node's: never comes
	e.place("db", "node1")   // db concerns node1 from now on
	it := next()
	if it.install == nil || it.install["db"] == nil {
		t.Fatalf("first item %+v, want db's catch-up", it)
	}
	e.halt("db", "node1", 2)
	for {
		it := next()
		if it.install != nil {
			t.Fatalf("a second catch-up: %+v", it)
		}
		if it.e.Subject == "db" {
			if _, ok := it.e.Data.(events.PackageHalting); ok {
				break
			}
		}
	}
}

// TestFollowerReadsItsOwnMarkers: the index reads this node's placement
// markers and nothing of the placements on other nodes (design-notes §10:
// reading every placement of the cluster was nodes × placements messages).
func TestFollowerReadsItsOwnMarkers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for i := range 40 {
		e.place(fmt.Sprintf("other%d", i), "node2")
	}
	e.place("web", "node1")
	e.place("db", "node1")
	f := newFollower(Config{Node: "node1", Log: e.log, Now: time.Now}, slog.New(slog.DiscardHandler))
	if _, err := f.replay(context.Background(), func(events.Event) {}, func(uint64, string) {}); err != nil {
		t.Fatal(err)
	}
	if want := map[string]bool{"web": true, "db": true}; !maps.Equal(f.concern, want) {
		t.Fatalf("concern set %v, want %v", f.concern, want)
	}
	if n := f.reads.Messages.Load(); n != 2 {
		t.Errorf("the index read %d messages, want node1's 2 markers", n)
	}
}

// TestFollowerReadsPlacementsFromBeforeMarkers: in a log written before
// markers existed, the placements stored before the first marker are read
// once at the start (oldPlacements); those after it through their
// markers.
func TestFollowerReadsPlacementsFromBeforeMarkers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	old := func(pkg, node string) {
		t.Helper()
		if _, err := e.log.Append(ctx, events.New("/vmguard/failover", pkg, events.PackagePlaced{Node: node, Epoch: 1, Reason: "auto_run"})); err != nil {
			t.Fatal(err)
		}
	}
	old("web", "node1")
	old("api", "node2")
	e.place("db", "node2") // the first marker: the controller was upgraded
	e.place("mq", "node1")
	f := newFollower(Config{Node: "node1", Log: e.log, Now: time.Now}, slog.New(slog.DiscardHandler))
	if _, err := f.replay(ctx, func(events.Event) {}, func(uint64, string) {}); err != nil {
		t.Fatal(err)
	}
	if want := map[string]bool{"web": true, "mq": true}; !maps.Equal(f.concern, want) {
		t.Fatalf("concern set %v, want %v", f.concern, want)
	}
	from, to, ok, err := oldPlacements(ctx, e.log)
	if err != nil || !ok || from != 1 || to != 3 {
		t.Errorf("old placements [%d, %d) %v %v, want [1, 3): the two before the first marker", from, to, ok, err)
	}
}

// TestCatchUpStartsAtFirstPlacement: a catch-up reads its package's
// history from its first package.placed on, not from the log's start (a
// read from the start cost the server a walk of a block's subjects for
// every message delivered), and still folds what came before that the
// placement depends on: node3 was lost before db's first placement there,
// so that placement is void, as the whole log's fold has it.
func TestCatchUpStartsAtFirstPlacement(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.append(events.Event{Source: "/vmguard/failover", Subject: "node3", Data: events.NodeLost{Reason: "lease expired"}})
	for i := range 60 {
		e.place(fmt.Sprintf("other%d", i), "node2")
	}
	e.place("db", "node3") // void: node3 is lost
	e.place("db", "node1")
	f, reads, last := replayedFollower(t, e)
	if len(f.downs) != 1 || f.downs[0].node != "node3" {
		t.Fatalf("the main read recorded %+v, want node3's loss", f.downs)
	}
	reads.starts, reads.gets = nil, nil
	got, err := f.catchUpPackages(ctx, []string{"db"}, last, nil)
	if err != nil {
		t.Fatal(err)
	}
	// db's first placement (at last-2) and its second (the next from
	// last-1): two direct gets, no consumer.
	if want := []uint64{last - 2, last - 1}; len(reads.starts) != 0 || !slices.Equal(reads.gets, want) {
		t.Errorf("the catch-up read with consumers from %v and direct gets from %v, want no consumer and gets from %v",
			reads.starts, reads.gets, want)
	}
	var whole []events.Event
	if _, err := e.log.Replay(ctx, events.ReadOptions{}, func(ev events.Event) error {
		whole = append(whole, ev)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st := NewState("node1")
	for _, ev := range whole {
		st.Apply(ev)
	}
	if g, w := pkgJSON(got["db"]), pkgJSON(st.Packages["db"]); g != w {
		t.Fatalf("db caught up:\n%s\nwant (whole log)\n%s", g, w)
	}
	if p := got["db"]; p.Current.Node != "node1" || len(p.Prior) != 0 {
		t.Errorf("db caught up: current %+v, prior %+v; want node1, the void placement on node3 not waited for", p.Current, p.Prior)
	}
}

// startsOf is a logReader that records where each replay and each
// direct get (Next) starts.
type startsOf struct {
	logReader
	starts, gets []uint64
}

func (r *startsOf) Next(ctx context.Context, subject string, from uint64) (events.Event, bool, error) {
	r.gets = append(r.gets, from)
	return r.logReader.Next(ctx, subject, from)
}

func (r *startsOf) Replay(ctx context.Context, ro events.ReadOptions, fn events.Handler) (uint64, error) {
	r.starts = append(r.starts, ro.StartSeq)
	return r.logReader.Replay(ctx, ro, fn)
}

// TestCatchUpOfALongHistory: a package placed here after more events than
// a catch-up reads by direct gets (catchUpGets) is read with a consumer
// from its first placement, and comes out as the whole log's fold has it.
func TestCatchUpOfALongHistory(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.place("db", "node2")
	for range catchUpGets {
		e.halt("db", "node2", 1)
	}
	e.append(events.Event{Source: "/vmguard/failover", Subject: "node2", Data: events.NodeLost{Reason: "lease expired"}})
	e.place("db", "node1")
	f, reads, last := replayedFollower(t, e)
	reads.starts = nil
	got, err := f.catchUpPackages(ctx, []string{"db"}, last, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(reads.starts) != 1 || reads.starts[0] != 2 {
		t.Errorf("the catch-up's consumers started at %v, want one at db's first placement (2)", reads.starts)
	}
	st := NewState("node1")
	if _, err := e.log.Replay(ctx, events.ReadOptions{}, func(ev events.Event) error {
		st.Apply(ev)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if g, w := pkgJSON(got["db"]), pkgJSON(st.Packages["db"]); g != w {
		t.Fatalf("db caught up:\n%s\nwant (whole log)\n%s", g, w)
	}
}

// replayedFollower returns node1's follower after its replay of e's log,
// its concern set empty (a package joins it later, by a catch-up), its
// reads recorded, and the log's last sequence.
func replayedFollower(t *testing.T, e *testEnv) (*follower, *startsOf, uint64) {
	t.Helper()
	ctx := context.Background()
	f := newFollower(Config{Node: "node1", Log: e.log, Now: time.Now}, slog.New(slog.DiscardHandler))
	f.indexDone, f.oldDone = true, true
	reads := &startsOf{logReader: e.log}
	f.log = reads
	if _, err := f.replay(ctx, func(events.Event) {}, func(uint64, string) {}); err != nil {
		t.Fatal(err)
	}
	last, err := e.log.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return f, reads, last
}
