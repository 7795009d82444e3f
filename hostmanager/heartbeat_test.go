package hostmanager

import (
	"encoding/json"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/vmguard/vmguard/guestagent"
)

// TestHeartbeatCountsForTheSubjectsGuest: a beat counts for the guest whose
// subject it came on, never for one its payload names; a guest's NATS user
// may publish on its own heartbeat subject only.
func TestHeartbeatCountsForTheSubjectsGuest(t *testing.T) {
	env := newEnv(t)
	r, err := NewRunner(Config{Node: "node1", Log: env.log, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	beat := func(subject, guest, node string) bool {
		b, _ := json.Marshal(guestagent.Heartbeat{Guest: guest, Node: node})
		return r.hb.note(subject, b)
	}
	if !beat(guestagent.HeartbeatSubject("webvm"), "webvm", "node1") {
		t.Error("a guest's own beat did not count")
	}
	if beat(guestagent.HeartbeatSubject("webvm"), "dbvm", "node1") {
		t.Error("webvm's beat counted for dbvm")
	}
	if beat(guestagent.HeartbeatSubject("webvm"), "webvm", "node2") {
		t.Error("a beat from another node's agent counted")
	}
	if !r.hb.lastBeat("dbvm").IsZero() {
		t.Error("dbvm has a heartbeat it never sent")
	}
}

// TestHeartbeatsSilent: a guest up on this node is silent once no beat
// came for the timeout since its watch began, its last beat or the end of
// a blind spell (the connection down); once its loss is recorded it is not
// reported again, and a new start of the guest watches it afresh.
func TestHeartbeatsSilent(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	h := newHeartbeats("node1", func() time.Time { return now }, noMetrics{}, slog.New(slog.DiscardHandler))
	st := NewState("node1")
	in := &Instance{Epoch: 3, Guest: GuestState{Phase: GuestUp, StartedID: "s1"}}
	in.Config.Guest.Name = "webvm"
	st.Packages["web"] = &PackageState{Name: "web", Inst: in}
	const timeout = 10 * time.Second
	silent := func() []string {
		var out []string
		for _, g := range h.silent(st, true, timeout) {
			out = append(out, g.pkg)
		}
		return out
	}
	step := func(d time.Duration, want ...string) {
		t.Helper()
		now = now.Add(d)
		if got := silent(); !slices.Equal(got, want) {
			t.Fatalf("at +%s: silent %v, want %v", now.Sub(t0), got, want)
		}
	}
	step(0)       // the watch begins
	step(timeout) // exactly the timeout: not yet
	step(time.Millisecond, "web")
	beat := func() {
		b, _ := json.Marshal(guestagent.Heartbeat{Guest: "webvm", Node: "node1"})
		if !h.note(guestagent.HeartbeatSubject("webvm"), b) {
			t.Fatal("beat not noted")
		}
	}
	beat()
	step(timeout)
	step(time.Millisecond, "web")
	// Blind: the connection is down; a full timeout once it is back.
	now = now.Add(time.Second)
	if got := h.silent(st, false, timeout); got != nil {
		t.Fatalf("silent while blind: %v", got)
	}
	step(timeout)
	step(time.Millisecond, "web")
	h.watches["web"].lost = true
	step(time.Hour) // recorded lost: not again
	in.Guest.StartedID = "s2"
	step(0) // a new start: a new watch
	step(timeout+time.Millisecond, "web")
	in.Guest.Phase = GuestDown
	step(time.Hour) // not up: not watched
	if _, ok := h.watches["web"]; ok {
		t.Error("a guest not up kept its watch")
	}
}
