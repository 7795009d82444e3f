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
	e, found, tail, err := l.Last(ctx, subj)
	if err != nil || found || tail != junk {
		t.Fatalf("Last over junk only: %+v found=%v tail=%d err=%v; want nothing found, tail %d", e, found, tail, err, junk)
	}
	if l.Skipped() != 1 {
		t.Fatalf("skipped %d, want 1", l.Skipped())
	}

	good, err := l.Append(ctx, events.New("/t", "web", events.PackageFailed{Node: "node1", Epoch: 3, Reason: "ok"}))
	if err != nil {
		t.Fatal(err)
	}
	smuggled := publish(string(failedBody("", `{"node":"node1","epoch":4,"reason":"ok","NODE":"a.b c"}`)))
	junk2 := publish(`{"specversion":"1.0"`)
	before := l.Skipped()
	for _, filter := range []string{subj, events.PackageFilter("web")} {
		e, found, tail, err = l.Last(ctx, filter)
		if err != nil || !found || e.Seq != good || tail != junk2 {
			t.Fatalf("Last(%s): seq %d found=%v tail=%d err=%v; want seq %d, tail %d", filter, e.Seq, found, tail, err, good, junk2)
		}
		if d := e.Data.(events.PackageFailed); d.Node != "node1" || d.Epoch != 3 {
			t.Errorf("Last(%s) returned %+v", filter, d)
		}
	}
	if got := l.Skipped() - before; got < 4 {
		t.Errorf("Last skipped %d messages over two reads, want at least 4 (the smuggled and the broken one, each time)", got)
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
	if _, err := l.Append(ctx, events.New("/t", "web", events.PackageFailed{Node: "node1", Epoch: 5, Reason: "next"}), events.ExpectLastSeq(subj, tail)); err != nil {
		t.Fatalf("append expecting the tail %d: %v", tail, err)
	}
}
