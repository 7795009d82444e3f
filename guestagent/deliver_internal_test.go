package guestagent

import (
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

// A spooled exit the log refuses (here: too many output lines, a reason
// over its limit) has a valid fallback that keeps the exit; a start has
// none.
func TestDeliverFallback(t *testing.T) {
	codec, err := events.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, 150)
	for i := range out {
		out[i] = "line"
	}
	e := events.Event{ID: "id1", Source: Source("g1"), Subject: "web", Time: time.Now(), CauseID: "c",
		Data: events.ProcessExited{Guest: "g1", Service: "svc", PID: 9, ExitCode: 1, RequestID: "r1", Epoch: 2,
			Reason: strings.Repeat("x", 5000), Output: out}}
	if _, err := codec.Encode(e); err == nil {
		t.Fatal("the test event should be invalid")
	}
	fb, ok := fallback(e)
	if !ok {
		t.Fatal("no fallback for an exit")
	}
	if _, err := codec.Encode(fb); err != nil {
		t.Fatalf("fallback invalid: %v", err)
	}
	x := fb.Data.(events.ProcessExited)
	if fb.ID == e.ID || fb.CauseID != "c" || x.RequestID != "r1" || x.ExitCode != 1 || x.Output != nil {
		t.Fatalf("fallback %+v %+v", fb, x)
	}
	if _, ok := fallback(events.Event{Data: events.ProcessStarted{Guest: "g1"}}); ok {
		t.Error("a fallback for a start")
	}
}
