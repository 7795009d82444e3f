package hostmanager

import (
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/guestagent"
)

// heartbeats tracks the heartbeats of this node's guests: one subscription
// per guest that may run here, the last beat of each from this node, and
// the guest monitor's watches. It owns no goroutine: NATS's callbacks and
// a starting guest's action call note; the loop calls the rest. The beats
// come from guestLinks (NATS subscriptions, natsGuests).
type heartbeats struct {
	node    string
	now     func() time.Time
	metrics Metrics
	logger  *slog.Logger

	mu   sync.Mutex
	last map[string]time.Time // guest -> last heartbeat from this node

	// Owned by the loop goroutine.
	subs    map[string]func() // guest -> ends its heartbeat subscription
	watches map[string]*watch // pkg -> its guest's heartbeat watch
	// blind is when the monitor last found the connection down.
	blind time.Time
}

func newHeartbeats(node string, now func() time.Time, m Metrics, logger *slog.Logger) *heartbeats {
	return &heartbeats{node: node, now: now, metrics: m, logger: logger,
		last: map[string]time.Time{}, subs: map[string]func(){}, watches: map[string]*watch{}}
}

// note records a heartbeat message (data, published on subject) if it
// comes from an agent on this node (or one that does not say), and reports
// whether it did.
func (h *heartbeats) note(subject string, data []byte) bool {
	var hb guestagent.Heartbeat
	if err := json.Unmarshal(data, &hb); err != nil || hb.Guest == "" {
		return false
	}
	// The subject, not the payload, says whose beat it is: a guest's NATS
	// user may publish only on its own heartbeat subject, so a guest cannot
	// keep another, dead guest from being reported lost.
	if subject != guestagent.HeartbeatSubject(hb.Guest) {
		return false
	}
	if hb.Node != "" && hb.Node != h.node {
		return false
	}
	h.beat(hb.Guest)
	return true
}

// beat records a heartbeat of guest from this node, now.
func (h *heartbeats) beat(guest string) {
	h.mu.Lock()
	h.last[guest] = h.now()
	h.mu.Unlock()
	h.metrics.Heartbeat(guest)
}

// lastBeat returns when guest's last heartbeat from this node came; zero
// if none did.
func (h *heartbeats) lastBeat(guest string) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last[guest]
}

// follow subscribes to g's heartbeats through links unless it is already;
// without links (a Loop, whose caller reports beats with Loop.Heartbeat)
// it does nothing.
func (h *heartbeats) follow(links guestLinks, g config.Guest) {
	if links == nil || h.subs[g.Name] != nil {
		return
	}
	stop, err := links.beats(g, func(subject string, data []byte) { h.note(subject, data) })
	if err != nil {
		h.logger.Warn("subscribe to guest heartbeats", "guest", g.Name, "err", err)
		return
	}
	h.subs[g.Name] = stop
}

// unfollow ends the subscription to guest's heartbeats.
func (h *heartbeats) unfollow(guest string) {
	if stop := h.subs[guest]; stop != nil {
		stop()
		delete(h.subs, guest)
	}
}

// close ends every subscription.
func (h *heartbeats) close() {
	for guest := range h.subs {
		h.unfollow(guest)
	}
}

// silentGuest is a guest the log shows up on this node whose agent sent no
// heartbeat from it for guest_timeout.
type silentGuest struct {
	pkg   string
	inst  *Instance
	beat  time.Time // its last heartbeat; zero if none came
	watch *watch
}

// silent returns the guests of st up on this node whose agents sent no
// heartbeat from it for timeout, since the later of their start's watch,
// the last heartbeat and the end of the last blind spell; none while the
// connection is down (connected false), which starts a blind spell: cut off
// from NATS the host sees no heartbeat from anyone, which says nothing
// about the guests, and each gets a full timeout once it is back. A
// guest whose loss is recorded (its watch's lost) is not returned again.
func (h *heartbeats) silent(st *State, connected bool, timeout time.Duration) []silentGuest {
	now := h.now()
	if !connected {
		h.blind = now
		return nil
	}
	var out []silentGuest
	// Only a package that concerns this node can have an instance here.
	local := st.LocalNames()
	for name := range h.watches {
		if _, ok := slices.BinarySearch(local, name); !ok {
			delete(h.watches, name)
		}
	}
	for _, name := range local { // in order: a replay (Loop) appends the same
		in := st.Packages[name].Inst
		if in == nil || in.Guest.Phase != GuestUp {
			delete(h.watches, name)
			continue
		}
		w := h.watches[name]
		if w == nil || w.startedID != in.Guest.StartedID {
			w = &watch{startedID: in.Guest.StartedID, since: now}
			h.watches[name] = w
		}
		if w.lost {
			continue
		}
		beat := h.lastBeat(in.Config.Guest.Name)
		last := beat
		for _, t := range []time.Time{w.since, h.blind} {
			if last.Before(t) {
				last = t
			}
		}
		if now.Sub(last) > timeout {
			out = append(out, silentGuest{pkg: name, inst: in, beat: beat, watch: w})
		}
	}
	return out
}
