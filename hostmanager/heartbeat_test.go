package hostmanager

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/vmguard/vmguard/config"
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

// fakeLinks is a guestLinks whose heartbeats the test publishes (publish):
// one handler per subscribed guest, and how often each was subscribed.
type fakeLinks struct {
	fns        map[string]func(subject string, data []byte)
	subscribed map[string]int
}

func (f *fakeLinks) client(config.Guest) (*guestagent.Client, error) {
	return nil, errors.New("no agents here")
}

func (f *fakeLinks) beats(g config.Guest, fn func(subject string, data []byte)) (func(), error) {
	f.fns[g.Name] = fn
	f.subscribed[g.Name]++
	return func() { delete(f.fns, g.Name) }, nil
}

func (f *fakeLinks) settle(context.Context, config.Guest) {}

// publish sends guest's heartbeat from node, if guest is subscribed.
func (f *fakeLinks) publish(guest, node string) bool {
	fn := f.fns[guest]
	if fn == nil {
		return false
	}
	b, _ := json.Marshal(guestagent.Heartbeat{Guest: guest, Node: node})
	fn(guestagent.HeartbeatSubject(guest), b)
	return true
}

// TestHeartbeatsFollowThroughLinks: the tracker subscribes to a guest's
// heartbeats through its guestLinks once however often it is asked, notes
// the beats that come (from this node only), and stops at unfollow and
// close; without links (a Loop) it subscribes to nothing.
func TestHeartbeatsFollowThroughLinks(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := newHeartbeats("node1", func() time.Time { return t0 }, noMetrics{}, slog.New(slog.DiscardHandler))
	links := &fakeLinks{fns: map[string]func(string, []byte){}, subscribed: map[string]int{}}
	web, db := config.Guest{Name: "webvm"}, config.Guest{Name: "dbvm"}
	h.follow(nil, web)
	if len(h.subs) != 0 {
		t.Fatalf("subscribed without links: %v", h.subs)
	}
	h.follow(links, web)
	h.follow(links, web)
	h.follow(links, db)
	if links.subscribed["webvm"] != 1 || links.subscribed["dbvm"] != 1 {
		t.Errorf("subscriptions %v, want one per guest", links.subscribed)
	}
	if !links.publish("webvm", "node2") || !h.lastBeat("webvm").IsZero() {
		t.Error("a beat from another node's agent counted")
	}
	if !links.publish("webvm", "node1") || !h.lastBeat("webvm").Equal(t0) {
		t.Errorf("webvm's beat not noted: last %v", h.lastBeat("webvm"))
	}
	h.unfollow("webvm")
	if links.publish("webvm", "node1") {
		t.Error("webvm still subscribed after unfollow")
	}
	h.close()
	if links.publish("dbvm", "node1") || len(h.subs) != 0 {
		t.Errorf("subscriptions left after close: %v", h.subs)
	}
}
