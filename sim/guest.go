package sim

import (
	"errors"
	"slices"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/hostmanager"
	"github.com/vmguard/vmguard/internal/timeline"
)

// guest is a simulated VM of a package on a node, with its agent's
// processes. It runs until stopped (driver, guard, fence) or crashed.
type guest struct {
	pkg, node, name string
	epoch           uint64
	up              bool
	procs           map[string]*process // by run request id, the agent's dedup
}

type process struct {
	service string
	pid     int
	epoch   uint64
	started string // its process.started id
	alive   bool
	since   time.Time
}

func guestKey(pkg, node string) string { return pkg + "@" + node }

func (w *world) guestName(pkg string) string {
	cp, _ := w.cfg.Package(pkg)
	return cp.Guest.Name
}

// startGuest is the driver's start: a guest already running counts as
// started (its processes go on).
func (w *world) startGuest(pkg, node string, epoch uint64) {
	k := guestKey(pkg, node)
	g := w.guests[k]
	if g != nil && g.up {
		g.epoch = epoch
		return
	}
	w.guests[k] = &guest{pkg: pkg, node: node, name: w.guestName(pkg), epoch: epoch, up: true, procs: map[string]*process{}}
}

// stopGuest powers the guest off: its processes end without a report.
func (w *world) stopGuest(pkg, node string) {
	if g := w.guests[guestKey(pkg, node)]; g != nil {
		g.up = false
		for _, p := range g.procs {
			p.alive = false
		}
	}
}

// stopGuests stops every guest of node (a fence, the guard, a node crash).
func (w *world) stopGuests(node string) {
	for _, k := range sortedKeys(w.guests) {
		if g := w.guests[k]; g.node == node {
			w.stopGuest(g.pkg, node)
		}
	}
}

// errGuestDown answers an agent request to a guest that is not running.
var errGuestDown = errors.New("guest agent does not answer: guest not running")

// agentRun is the guest agent's run request: deduplicated by request id
// (a repeated request gets the pid of the first); a new process is
// reported started and exits by itself later.
func (w *world) agentRun(node string, a hostmanager.Action) (int, error) {
	g := w.guests[guestKey(a.Package, node)]
	if g == nil || !g.up {
		return 0, errGuestDown
	}
	if p, ok := g.procs[a.RequestID]; ok {
		return p.pid, nil
	}
	w.pids++
	p := &process{service: a.Service.Name, pid: w.pids, epoch: a.Epoch, alive: true, since: w.now()}
	g.procs[a.RequestID] = p
	e := w.stamp(events.Event{Source: events.GuestSource(g.name), Subject: a.Package, CauseID: a.CauseID,
		Data: events.ProcessStarted{Guest: g.name, Service: p.service, PID: p.pid, RequestID: a.RequestID, Epoch: a.Epoch}}, w.now())
	p.started = e.ID
	w.agentAppend(node, e)
	req := a.RequestID
	w.after(w.lifetime(p.service), func() {
		// Once the faults stop, services stop failing too, so that
		// liveness can be judged.
		if !p.alive || !g.up || !w.faulting {
			return
		}
		w.exited(g, req, p, 1, "")
	})
	return p.pid, nil
}

// agentStop is the agent's stop request: the process ends and is reported
// stopped.
func (w *world) agentStop(node string, a hostmanager.Action) error {
	g := w.guests[guestKey(a.Package, node)]
	if g == nil || !g.up {
		return errGuestDown
	}
	p := g.procs[a.RequestID]
	if p == nil || !p.alive {
		return nil
	}
	w.exited(g, a.RequestID, p, -1, "stopped")
	return nil
}

func (w *world) exited(g *guest, req string, p *process, code int, reason string) {
	p.alive = false
	sig := ""
	if reason == "stopped" {
		sig = "SIGTERM"
	}
	e := w.stamp(events.Event{Source: events.GuestSource(g.name), Subject: g.pkg, CauseID: p.started,
		Data: events.ProcessExited{Guest: g.name, Service: p.service, PID: p.pid, ExitCode: code, Signal: sig,
			RuntimeMS: w.now().Sub(p.since).Milliseconds(), RequestID: req, Epoch: p.epoch, Reason: reason}}, w.now())
	w.agentAppend(g.node, e)
}

// agentAppend appends an agent's event, or spools it while the node cannot
// reach the log (the agent's local spool), in order.
func (w *world) agentAppend(node string, e events.Event) {
	if len(w.spool[node]) == 0 {
		if _, err := w.appendEvent("node/"+node, e, nil); err == nil {
			return
		}
	}
	w.spool[node] = append(w.spool[node], e)
}

func (w *world) flushSpool(node string) {
	for len(w.spool[node]) > 0 {
		if _, err := w.appendEvent("node/"+node, w.spool[node][0], nil); err != nil {
			return
		}
		w.spool[node] = w.spool[node][1:]
	}
}

// guard is a node's guard: petted by its host manager while it holds the
// lease, it stops the node's guests when not petted within the fencing
// timeline's bound (renewal interval + guard bound).
type guard struct {
	last  time.Time
	armed bool
}

// guardAfter is the guard's bound: renew interval + guard bound.
var guardAfter = timeline.Default(nodeTimeout).GuardAfter()

func (g *guard) pet(now time.Time) { g.last, g.armed = now, true }

func (w *world) guardCheck(node string) {
	g := w.guards[node]
	if !g.armed || w.now().Sub(g.last) < guardAfter {
		return
	}
	g.armed = false
	w.trace("%s guard fired", node)
	w.stopGuests(node)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
