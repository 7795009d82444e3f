package sim

import (
	"fmt"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/failover"
)

// draw is what one fault takes from the fault schedule's own random
// source: always the same amount, whatever the fault turns out to be, so
// that skipping a fault (Options.Skip, the shrinker) leaves every other
// fault of the schedule as it was.
type draw struct {
	kind, host, ctl int
	u               [4]float64
}

// dur maps u[i] onto [lo, hi).
func (d draw) dur(i int, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(d.u[i]*float64(hi-lo))
}

// pick maps u[i] onto 0..n-1.
func (d draw) pick(i, n int) int { return min(int(d.u[i]*float64(n)), n-1) }

// scheduleFault draws the next fault's time (exponential inter-arrival
// times, mean FaultEvery) and what it is.
func (w *world) scheduleFault() {
	if !w.faulting {
		return
	}
	d := time.Duration(w.frng.ExpFloat64() * float64(w.opt.FaultEvery))
	f := draw{kind: w.frng.IntN(13), host: w.frng.IntN(len(w.hosts)), ctl: w.frng.IntN(len(w.ctls))}
	for i := range f.u {
		f.u[i] = w.frng.Float64()
	}
	w.after(d, func() {
		if !w.faulting {
			return
		}
		i := w.nfault
		w.nfault++
		if !w.opt.Skip[i] {
			w.fault(i, f)
		}
		w.scheduleFault()
	})
}

func (w *world) note(i int, format string, args ...any) {
	f := fmt.Sprintf("#%d %v ", i, w.now().Sub(epoch0).Round(time.Millisecond)) + fmt.Sprintf(format, args...)
	w.faults = append(w.faults, f)
	w.trace("FAULT %s", f)
}

// restartable is a component a fault crashes and that starts again: a host
// manager or a controller.
type restartable interface {
	isUp() bool
	crash()
	start()
}

// startAgain starts p unless it is up already.
func startAgain(p restartable) {
	if !p.isUp() {
		p.start()
	}
}

// startAfter starts p again d from now, unless it is up by then.
func (w *world) startAfter(d time.Duration, p restartable) {
	w.after(d, func() { startAgain(p) })
}

// crashFor crashes p for d, noting fault i as what "for d".
func (w *world) crashFor(i int, p restartable, d time.Duration, what string) {
	w.note(i, "%s for %v", what, d)
	p.crash()
	w.startAfter(d, p)
}

// fault injects fault i of the schedule, as f drew it.
func (w *world) fault(i int, f draw) {
	h := w.hosts[f.host]
	c := w.ctls[f.ctl]
	switch f.kind {
	case 0: // a host manager crashes and starts again
		if h.up {
			w.crashFor(i, h, f.dur(0, 100*time.Millisecond, 8*time.Second), "crash host manager "+h.node)
		}
	case 1: // the whole node crashes: guests, guard, host manager
		if !h.up {
			return
		}
		d := f.dur(0, time.Second, 20*time.Second)
		w.note(i, "crash node %s for %v", h.node, d)
		h.crash()
		w.stopGuests(h.node)
		w.guards[h.node].armed = false
		w.spool[h.node] = nil
		w.startAfter(d, h)
	case 2: // a host manager pauses (stopped, swapped out)
		d := f.dur(0, 500*time.Millisecond, 6*time.Second)
		w.note(i, "pause host manager %s for %v", h.node, d)
		h.pausedUntil = w.now().Add(d)
	case 3: // a controller crashes
		if c.up {
			w.crashFor(i, c, f.dur(0, 100*time.Millisecond, 5*time.Second), "crash controller "+c.name)
		}
	case 4: // a controller pauses between deciding and appending
		d := f.dur(0, time.Second, 8*time.Second)
		w.note(i, "pause controller %s before its next append for %v", c.name, d)
		c.pauseNext = d
	case 5: // a node is cut off from the log and the lease store
		d := f.dur(0, time.Second, 12*time.Second)
		w.note(i, "partition node %s for %v", h.node, d)
		w.cut[h.who()] = w.now().Add(d)
	case 6: // a controller is cut off
		d := f.dur(0, time.Second, 10*time.Second)
		w.note(i, "partition controller %s for %v", c.name, d)
		w.cut[c.who()] = w.now().Add(d)
	case 7: // the store does not answer (a full disk, a slow fsync, no quorum)
		d := f.dur(0, 200*time.Millisecond, 3*time.Second)
		w.note(i, "store outage for %v", d)
		w.outageUntil = w.now().Add(d)
	case 8: // messages delayed, dropped and duplicated for a while
		d := f.dur(0, time.Second, 10*time.Second)
		w.note(i, "lossy network for %v", d)
		w.lagUntil = w.now().Add(d)
	case 9: // a guest crashes
		keys := sortedKeys(w.guests)
		for j := range keys {
			g := w.guests[keys[(f.pick(1, len(keys))+j)%len(keys)]]
			if g.up {
				w.note(i, "crash guest %s on %s", g.name, g.node)
				w.stopGuest(g.pkg, g.node)
				return
			}
		}
	case 10: // a guest lies
		w.forge(i, f)
	case 11: // a node's clock jumps
		d := f.dur(0, -time.Second, time.Second)
		w.note(i, "clock of %s jumps %v", h.node, d)
		h.skew += d
	case 12:
		w.operatorCommand(i, f)
	}
}

// forge makes a running guest's agent write a claim that is false: a
// process.exited for a process that runs, or a process.started nobody
// asked for.
func (w *world) forge(i int, f draw) {
	keys := sortedKeys(w.guests)
	if len(keys) == 0 {
		return
	}
	g := w.guests[keys[f.pick(1, len(keys))]]
	if !g.up {
		return
	}
	reqs := sortedKeys(g.procs)
	if len(reqs) > 0 && f.u[2] < 0.5 {
		req := reqs[f.pick(3, len(reqs))]
		p := g.procs[req]
		if p.alive {
			w.note(i, "guest %s forges an exit of %s", g.name, p.service)
			e := w.stamp(events.Event{Source: events.GuestSource(g.name), Subject: g.pkg, CauseID: p.started,
				Data: events.ProcessExited{Guest: g.name, Service: p.service, PID: p.pid, ExitCode: 0, RequestID: req, Epoch: p.epoch}}, w.now())
			w.agentAppend(g.node, e)
			return
		}
	}
	w.pids++
	w.note(i, "guest %s forges a start", g.name)
	e := w.stamp(events.Event{Source: events.GuestSource(g.name), Subject: g.pkg,
		Data: events.ProcessStarted{Guest: g.name, Service: "steady", PID: w.pids, RequestID: fmt.Sprintf("forged%d", w.pids), Epoch: g.epoch}}, w.now())
	w.agentAppend(g.node, e)
}

// operatorCommand gives a random operator command, checked by the real
// failover.State.Command against the log as the CLI reads it.
func (w *world) operatorCommand(i int, f draw) {
	if !w.reach("operator") {
		return
	}
	for _, e := range w.evs[w.operator.Seq:] {
		w.operator.Apply(e)
	}
	pkg := w.cfg.Packages[f.pick(1, len(w.cfg.Packages))]
	node := pkg.Nodes[f.pick(2, len(pkg.Nodes))]
	ops := []failover.Op{failover.OpMove, failover.OpMove, failover.OpHalt, failover.OpRun, failover.OpEnable,
		failover.OpReset, failover.OpReset, failover.OpNodeHalt, failover.OpNodeRun, failover.OpNodeRun}
	cmd := failover.Command{Op: ops[f.pick(3, len(ops))], Package: pkg.Name, By: "sim", Now: w.now()}
	switch cmd.Op {
	case failover.OpMove, failover.OpNodeHalt, failover.OpNodeRun:
		cmd.Node = node
	case failover.OpRun:
		if f.u[0] < 0.5 {
			cmd.Node = node
		}
	}
	evs, err := w.operator.Command(cmd)
	if err != nil {
		return
	}
	w.note(i, "operator %s %s %s", cmd.Op, cmd.Package, cmd.Node)
	for _, e := range evs {
		e = w.stamp(e, w.now())
		if m, ok := events.PlacementMarker(e); ok {
			// A placement goes with its marker, as the CLI appends it;
			// the marker's id is the world's, as every event's (the one
			// PlacementMarker draws is random: the seed's hash changed
			// from run to run).
			m.ID = ""
			m = w.stamp(m, w.now())
			if _, err := w.appendBatch("operator", []events.Event{m, e}, []*Expect{nil, expectOf(w.operator, e)}); err != nil {
				return
			}
			continue
		}
		if _, err := w.appendEvent("operator", e, expectOf(w.operator, e)); err != nil {
			return
		}
	}
}
