package hostmanager

import (
	"sync"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

// concernYAML: web and db run on node2 and may move to node3; their
// services exit every 300 ms and are restarted without end, so node2's
// packages keep writing events that node3 has no business reading.
const concernYAML = `cluster: test
node_timeout: 3s
guest_timeout: 2s
nodes: [node2, node3]
packages:
  - name: web
    nodes: [node2, node3]
    guest: {name: webvm, driver: process, start_timeout: 20s}
    services:
      - name: svc
        cmd: [sh, -c, "sleep 0.3; exit 1"]
        restart: unlimited
        halt_timeout: 1s
  - name: db
    nodes: [node2, node3]
    guest: {name: dbvm, driver: process, start_timeout: 20s}
    services:
      - name: svc
        cmd: [sh, -c, "sleep 0.3; exit 1"]
        restart: unlimited
        halt_timeout: 1s
`

// handled records the events a runner's loop was handed while following.
type handled struct {
	mu  sync.Mutex
	evs []events.Event
}

func (h *handled) add(e events.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.evs = append(h.evs, e)
}

// about returns the events handled about package pkg.
func (h *handled) about(pkg string) []events.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []events.Event
	for _, e := range h.evs {
		if sc, ok := scopeOf(e); ok && sc == events.ScopePackage && e.Subject == pkg {
			out = append(out, e)
		}
	}
	return out
}

// TestHostReadsOnlyWhatConcernsIt runs the host managers of node2 and
// node3 on a real server. While web and db run on node2 and restart over
// and over, node3's host manager is handed none of their events, and its
// reads receive a small part of the log. Then web is moved to node3: node3
// reads web's history from where it needs it (node2's placement must be
// released by node2's package.halted before node3 starts it), starts and
// restarts it, and still reads nothing of db. A new host manager of node3
// (a restart) rebuilds the same: it neither starts web again nor misses
// its next exit.
func TestHostReadsOnlyWhatConcernsIt(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.applyConfig(concernYAML)
	e.startRunner("node2", nil, nil)
	seen := &handled{}
	h3 := e.startRunner("node3", nil, &testHooks{onHandle: seen.add})
	e.waitFor("both nodes joined", 30*time.Second, func(evs []events.Event) bool {
		n := 0
		for _, ev := range evs {
			if _, ok := ev.Data.(events.NodeJoined); ok {
				n++
			}
		}
		return n >= 2
	})
	e.place("web", "node2")
	e.place("db", "node2")
	e.waitCount("web", "service.restarting", 5, 60*time.Second)
	e.waitCount("db", "service.restarting", 5, 60*time.Second)

	if got := seen.about("web"); len(got) > 0 {
		t.Errorf("node3 was handed %d events of web while it ran on node2, e.g. %s", len(got), got[0].Type())
	}
	if got := seen.about("db"); len(got) > 0 {
		t.Errorf("node3 was handed %d events of db, e.g. %s", len(got), got[0].Type())
	}
	all := len(e.eventsNow())
	msgs := h3.r.ReadStats().Messages
	// node3 reads the cluster and node events and every package.placed
	// (two here): a handful, while the log holds dozens of restarts.
	if msgs == 0 || msgs*3 > uint64(all) {
		t.Errorf("node3's reads received %d messages of a log of %d events; want some, under a third", msgs, all)
	}
	t.Logf("before the move: node3 read %d messages, the log holds %d events", msgs, all)

	// Move web to node3, as the controller would.
	epoch := e.place("web", "node3")
	e.waitFor("web started on node3", 60*time.Second, func(evs []events.Event) bool {
		for _, ev := range evs {
			if d, ok := ev.Data.(events.PackageStarted); ok && ev.Subject == "web" && d.Node == "node3" && d.Epoch == epoch {
				return true
			}
		}
		return false
	})
	restartsOn3 := func() int {
		n := 0
		for _, ev := range e.pkgEvents("web") {
			if d, ok := ev.Data.(events.ServiceRestarting); ok && d.Node == "node3" && ev.Source == HostSource("node3") {
				n++
			}
		}
		return n
	}
	e.waitFor("node3 restarts web", 30*time.Second, func([]events.Event) bool { return restartsOn3() >= 3 })
	// node2's release came first: node3 never starts before it.
	evs := e.eventsNow()
	var halted2, starting3 uint64
	for _, ev := range evs {
		switch d := ev.Data.(type) {
		case events.PackageHalted:
			if ev.Subject == "web" && d.Node == "node2" && halted2 == 0 {
				halted2 = ev.Seq
			}
		case events.PackageStarting:
			if ev.Subject == "web" && d.Node == "node3" && starting3 == 0 {
				starting3 = ev.Seq
			}
		}
	}
	if halted2 == 0 || starting3 < halted2 {
		t.Errorf("web: node2's package.halted at seq %d, node3's package.starting at seq %d; want the halt first", halted2, starting3)
	}
	if got := seen.about("db"); len(got) > 0 {
		t.Errorf("after the move node3 was handed %d events of db, e.g. %s", len(got), got[0].Type())
	}
	if len(seen.about("web")) == 0 {
		t.Error("node3 was handed no event of web after web was placed on it")
	}

	// A new host manager of node3 rebuilds from the log: web's instance is
	// its own, nothing is started twice, the next exits are restarted.
	if err := h3.stop(t); err != nil {
		t.Fatalf("node3 runner: %v", err)
	}
	startingBefore := e.count("web", "package.starting")
	before := restartsOn3()
	e.startRunner("node3", nil, nil)
	e.waitFor("the new node3 host manager restarts web", 30*time.Second, func([]events.Event) bool { return restartsOn3() >= before+3 })
	if n := e.count("web", "package.starting"); n != startingBefore {
		t.Errorf("package.starting of web: %d after node3's restart, %d before", n, startingBefore)
	}
	e.checkInvariants()
}
