package hostmanager

import (
	"strconv"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

// BenchmarkRestartDecision measures the core's share of a restart: fold a
// process.exited, decide service.restarting, fold it, list the run action,
// fold the process.started.
// The window case keeps the most restart times (unlimited restarts, all
// inside the window).
func BenchmarkRestartDecision(b *testing.B) {
	b.Run("unlimited", func(b *testing.B) { benchRestart(b, "restart: unlimited") })
	b.Run("limit+backoff", func(b *testing.B) {
		benchRestart(b, "restart: 1000000000\nbackoff: {delay: 1ms, factor: 2, max: 1s}")
	})
	b.Run("unlimited+window", func(b *testing.B) { benchRestart(b, "restart: unlimited\nrestart_window: 10m") })
}

func benchRestart(b *testing.B, svc string) {
	h := newHarness(b, cfgYAML(svc, ""))
	h.start()
	s := h.s
	in := s.Package("web").Inst
	seq := uint64(len(h.log))
	rid := in.Service("a").Proc.RequestID
	at := t0
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		at = at.Add(time.Millisecond)
		seq++
		s.Apply(events.Event{ID: "x", Source: "/a", Subject: "web", Time: at, Seq: seq,
			Data: events.ProcessExited{Guest: "webvm", Service: "a", PID: 1, ExitCode: 1, RequestID: rid, Epoch: 1}})
		d, ok := Decide(s, "web")
		if !ok {
			b.Fatal("no decision")
		}
		seq++
		d.ID, d.Time, d.Seq = "r"+strconv.Itoa(i), at, seq
		s.Apply(d)
		acts := Pending(s, "web")
		if len(acts) != 1 {
			b.Fatalf("actions %+v", acts)
		}
		rid = acts[0].RequestID
		seq++
		s.Apply(events.Event{ID: "p", Source: "/a", Subject: "web", Time: at, Seq: seq,
			Data: events.ProcessStarted{Guest: "webvm", Service: "a", PID: 2, RequestID: rid, Epoch: 1}})
	}
}
