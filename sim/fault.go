package sim

import (
	"fmt"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/failover"
)

// scheduleFault draws the next fault's time (exponential inter-arrival
// times, mean FaultEvery) and kind.
func (w *world) scheduleFault() {
	if !w.faulting {
		return
	}
	d := time.Duration(w.rng.ExpFloat64() * float64(w.opt.FaultEvery))
	w.after(d, func() {
		if !w.faulting {
			return
		}
		w.fault()
		w.scheduleFault()
	})
}

func (w *world) note(format string, args ...any) {
	f := fmt.Sprintf("%v ", w.now().Sub(epoch0).Round(time.Millisecond)) + fmt.Sprintf(format, args...)
	w.faults = append(w.faults, f)
	w.trace("FAULT %s", f)
}

// fault injects one fault drawn from the seed.
func (w *world) fault() {
	h := w.hosts[w.rng.IntN(len(w.hosts))]
	c := w.ctls[w.rng.IntN(len(w.ctls))]
	switch k := w.rng.IntN(13); k {
	case 0: // a host manager crashes and starts again
		if !h.up {
			return
		}
		d := w.dur(100*time.Millisecond, 8*time.Second)
		w.note("crash host manager %s for %v", h.node, d)
		h.crash()
		w.after(d, func() {
			if !h.up {
				h.start()
			}
		})
	case 1: // the whole node crashes: guests, guard, host manager
		if !h.up {
			return
		}
		d := w.dur(time.Second, 20*time.Second)
		w.note("crash node %s for %v", h.node, d)
		h.crash()
		w.stopGuests(h.node)
		w.guards[h.node].armed = false
		w.spool[h.node] = nil
		w.after(d, func() {
			if !h.up {
				h.start()
			}
		})
	case 2: // a host manager pauses (stopped, swapped out)
		d := w.dur(500*time.Millisecond, 6*time.Second)
		w.note("pause host manager %s for %v", h.node, d)
		h.pausedUntil = w.now().Add(d)
	case 3: // a controller crashes
		if !c.up {
			return
		}
		d := w.dur(100*time.Millisecond, 5*time.Second)
		w.note("crash controller %s for %v", c.name, d)
		c.crash()
		w.after(d, func() {
			if !c.up {
				c.start()
			}
		})
	case 4: // a controller pauses between deciding and appending
		d := w.dur(time.Second, 8*time.Second)
		w.note("pause controller %s before its next append for %v", c.name, d)
		c.pauseNext = d
	case 5: // a node is cut off from the log and the lease store
		d := w.dur(time.Second, 12*time.Second)
		w.note("partition node %s for %v", h.node, d)
		w.cut[h.who()] = w.now().Add(d)
	case 6: // a controller is cut off
		d := w.dur(time.Second, 10*time.Second)
		w.note("partition controller %s for %v", c.name, d)
		w.cut[c.who()] = w.now().Add(d)
	case 7: // the store does not answer (a full disk, a slow fsync, no quorum)
		d := w.dur(200*time.Millisecond, 3*time.Second)
		w.note("store outage for %v", d)
		w.outageUntil = w.now().Add(d)
	case 8: // messages delayed, dropped and duplicated for a while
		d := w.dur(time.Second, 10*time.Second)
		w.note("lossy network for %v", d)
		w.lagUntil = w.now().Add(d)
	case 9: // a guest crashes
		keys := sortedKeys(w.guests)
		for range keys {
			g := w.guests[keys[w.rng.IntN(len(keys))]]
			if g.up {
				w.note("crash guest %s on %s", g.name, g.node)
				w.stopGuest(g.pkg, g.node)
				return
			}
		}
	case 10: // a guest lies
		w.forge()
	case 11: // a node's clock jumps
		d := w.dur(-time.Second, time.Second)
		w.note("clock of %s jumps %v", h.node, d)
		h.skew += d
	case 12:
		w.operatorCommand()
	}
}

// forge makes a running guest's agent write a claim that is false: a
// process.exited for a process that runs, or a process.started nobody
// asked for.
func (w *world) forge() {
	keys := sortedKeys(w.guests)
	if len(keys) == 0 {
		return
	}
	g := w.guests[keys[w.rng.IntN(len(keys))]]
	if !g.up {
		return
	}
	reqs := sortedKeys(g.procs)
	if len(reqs) > 0 && w.chance(0.5) {
		req := reqs[w.rng.IntN(len(reqs))]
		p := g.procs[req]
		if p.alive {
			w.note("guest %s forges an exit of %s", g.name, p.service)
			e := w.stamp(events.Event{Source: events.GuestSource(g.name), Subject: g.pkg, CauseID: p.started,
				Data: events.ProcessExited{Guest: g.name, Service: p.service, PID: p.pid, ExitCode: 0, RequestID: req, Epoch: p.epoch}}, w.now())
			w.agentAppend(g.node, e)
			return
		}
	}
	w.pids++
	w.note("guest %s forges a start", g.name)
	e := w.stamp(events.Event{Source: events.GuestSource(g.name), Subject: g.pkg,
		Data: events.ProcessStarted{Guest: g.name, Service: "steady", PID: w.pids, RequestID: fmt.Sprintf("forged%d", w.pids), Epoch: g.epoch}}, w.now())
	w.agentAppend(g.node, e)
}

// operatorCommand gives a random operator command, checked by the real
// failover.State.Command against the log as the CLI reads it.
func (w *world) operatorCommand() {
	if !w.reach("operator") {
		return
	}
	for _, e := range w.evs[w.operator.Seq:] {
		w.operator.Apply(e)
	}
	pkg := w.cfg.Packages[w.rng.IntN(len(w.cfg.Packages))]
	node := pkg.Nodes[w.rng.IntN(len(pkg.Nodes))]
	ops := []failover.Op{failover.OpMove, failover.OpMove, failover.OpHalt, failover.OpRun, failover.OpEnable,
		failover.OpReset, failover.OpReset, failover.OpNodeHalt, failover.OpNodeRun, failover.OpNodeRun}
	cmd := failover.Command{Op: ops[w.rng.IntN(len(ops))], Package: pkg.Name, By: "sim", Now: w.now()}
	switch cmd.Op {
	case failover.OpMove, failover.OpNodeHalt, failover.OpNodeRun:
		cmd.Node = node
	case failover.OpRun:
		if w.chance(0.5) {
			cmd.Node = node
		}
	}
	evs, err := w.operator.Command(cmd)
	if err != nil {
		return
	}
	w.note("operator %s %s %s", cmd.Op, cmd.Package, cmd.Node)
	for _, e := range evs {
		e = w.stamp(e, w.now())
		if _, err := w.appendEvent("operator", e, expectOf(w.operator, e)); err != nil {
			return
		}
	}
}
