package events_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/vmguard/vmguard/events"
)

// TestLastAndGetSkipMalformed: one malformed message (hand-published: not
// JSON, or smuggling a value past the schema with a case-variant member)
// neither fails Last and Get nor hides the events before it; it is counted
// as skipped, as Replay counts it, and Last says where the subject ends so
// that an expected-sequence append does not conflict forever.
func TestLastAndGetSkipMalformed(t *testing.T) {
	ctx := context.Background()
	l, _ := openLog(t)
	js := l.JetStream()
	const subj = "vmguard.events.pkg.web.package.failed"
	publish := func(body string) uint64 {
		t.Helper()
		ack, err := js.Publish(ctx, subj, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}

	// Only malformed messages: none found, no error, the tail named.
	junk := publish(`not json`)
	tl, err := l.Tail(ctx, subj)
	if err != nil || tl.Found || tl.Seq != junk {
		t.Fatalf("Tail over junk only: %+v err=%v; want nothing found, seq %d", tl, err, junk)
	}
	if _, found, err := l.Last(ctx, subj); err != nil || found {
		t.Fatalf("Last over junk only: found=%v err=%v", found, err)
	}
	if l.Skipped() != 2 {
		t.Fatalf("skipped %d, want 2 (once per read)", l.Skipped())
	}

	good, err := l.Append(ctx, events.New(events.HostSource("node1"), "web", events.PackageFailed{Node: "node1", Epoch: 3, Reason: "ok"}))
	if err != nil {
		t.Fatal(err)
	}
	smuggled := publish(string(failedBody("", `{"node":"node1","epoch":4,"reason":"ok","NODE":"a.b c"}`)))
	junk2 := publish(`{"specversion":"1.0"`)
	before := l.Skipped()
	for _, filter := range []string{subj, events.PackageFilter("web")} {
		tl, err = l.Tail(ctx, filter)
		if err != nil || !tl.Found || tl.Event.Seq != good || tl.Seq != junk2 {
			t.Fatalf("Tail(%s): event seq %d found=%v seq=%d err=%v; want event seq %d, seq %d", filter, tl.Event.Seq, tl.Found, tl.Seq, err, good, junk2)
		}
		if d := tl.Event.Data.(events.PackageFailed); d.Node != "node1" || d.Epoch != 3 {
			t.Errorf("Tail(%s) returned %+v", filter, d)
		}
		if e, found, err := l.Last(ctx, filter); err != nil || !found || e.Seq != good {
			t.Errorf("Last(%s): seq %d found=%v err=%v; want seq %d", filter, e.Seq, found, err, good)
		}
	}
	if got := l.Skipped() - before; got < 8 {
		t.Errorf("Tail and Last skipped %d messages over four reads, want at least 8 (the smuggled and the broken one, each time)", got)
	}

	// Get: the good one reads, the bad ones are refused as invalid and counted.
	if e, err := l.Get(ctx, good); err != nil || e.Seq != good {
		t.Errorf("Get(%d): %+v %v", good, e, err)
	}
	for _, seq := range []uint64{junk, smuggled, junk2} {
		before := l.Skipped()
		_, err := l.Get(ctx, seq)
		if !errors.Is(err, events.ErrInvalid) {
			t.Errorf("Get(%d): %v, want ErrInvalid", seq, err)
		}
		if l.Skipped() != before+1 {
			t.Errorf("Get(%d) did not count the skip", seq)
		}
	}
	if _, err := l.Get(ctx, junk2+100); err == nil || errors.Is(err, events.ErrInvalid) {
		t.Errorf("Get past the end: %v, want a read error that is not ErrInvalid", err)
	}
	_, err = l.Get(ctx, smuggled)
	if !strings.Contains(err.Error(), "NODE") {
		t.Errorf("the smuggled event's error does not name the member: %v", err)
	}

	// The tail Last reported is what an expected-sequence append needs.
	if _, err := l.Append(ctx, events.New(events.HostSource("node1"), "web", events.PackageFailed{Node: "node1", Epoch: 5, Reason: "next"}), events.ExpectLastSeq(subj, tl.Seq)); err != nil {
		t.Fatalf("append expecting the tail %d: %v", tl.Seq, err)
	}
}
