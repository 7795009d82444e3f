// Package invariant checks a whole event log for the promises vmguard makes,
// so that every end-to-end test can assert them on what really happened:
//
//   - a package never runs on two nodes, or under two epochs, at once: when a
//     process of a package starts, every other live process of that package
//     belongs to the same placement (epoch);
//   - every restart and every failover has its cause in the log: a
//     service.restarting names a process.exited of that service, a failover
//     placement names a package.failed or a node.lost, a process.started names
//     an existing decision.
//
// It is pure: a function of the events, in stream order.
package invariant

import (
	"fmt"
	"strings"

	"github.com/vmguard/vmguard/events"
)

// Check returns one message per violation, in log order; none means the log
// keeps every promise.
func Check(evs []events.Event) []string {
	c := checker{
		byID:  make(map[string]events.Event, len(evs)),
		alive: map[string]map[string]proc{},
	}
	for _, e := range evs {
		c.byID[e.ID] = e
	}
	for _, e := range evs {
		c.apply(e)
	}
	return c.problems
}

type proc struct {
	key   string
	epoch uint64
	seq   uint64
}

type checker struct {
	byID     map[string]events.Event
	alive    map[string]map[string]proc // package -> guest/pid -> process
	problems []string
}

func (c *checker) fail(e events.Event, format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf("seq %d %s %s: %s", e.Seq, e.Subject, events.ShortType(e.Type()), fmt.Sprintf(format, args...)))
}

// cause returns the event e names as its cause, checking it exists.
func (c *checker) cause(e events.Event) (events.Event, bool) {
	if e.CauseID == "" {
		c.fail(e, "has no causeid")
		return events.Event{}, false
	}
	ce, ok := c.byID[e.CauseID]
	if !ok {
		c.fail(e, "causeid %s is not in the log", e.CauseID)
		return events.Event{}, false
	}
	if ce.Seq >= e.Seq {
		c.fail(e, "cause %s (seq %d) comes after it", e.CauseID, ce.Seq)
	}
	return ce, true
}

func (c *checker) apply(e events.Event) {
	switch d := e.Data.(type) {
	case events.ProcessStarted:
		c.cause(e)
		procs := c.alive[e.Subject]
		if procs == nil {
			procs = map[string]proc{}
			c.alive[e.Subject] = procs
		}
		for _, p := range procs {
			if p.epoch != d.Epoch {
				c.fail(e, "process of epoch %d starts while %s of epoch %d (started at seq %d) still runs: two placements at once", d.Epoch, p.key, p.epoch, p.seq)
			}
		}
		key := fmt.Sprintf("%s/%d", d.Guest, d.PID)
		procs[key] = proc{key: key, epoch: d.Epoch, seq: e.Seq}
	case events.ProcessExited:
		delete(c.alive[e.Subject], fmt.Sprintf("%s/%d", d.Guest, d.PID))
	case events.ServiceRestarting:
		if ce, ok := c.cause(e); ok {
			x, isExit := ce.Data.(events.ProcessExited)
			if !isExit || x.Service != d.Service || ce.Subject != e.Subject {
				c.fail(e, "restart of %s is caused by %s, not by an exit of that service", d.Service, events.ShortType(ce.Type()))
			}
		}
	case events.PackagePlaced:
		if d.By != "" {
			return // an operator's command is its own cause
		}
		reason := d.Reason
		if i := strings.IndexAny(reason, ": "); i > 0 {
			reason = reason[:i]
		}
		if reason != "failover" && reason != "node_lost" {
			return
		}
		if ce, ok := c.cause(e); ok {
			switch ce.Data.(type) {
			case events.PackageFailed, events.NodeLost, events.NodeHalted, events.NodeFenced:
			default:
				c.fail(e, "failover caused by %s, not by a failure or a lost node", events.ShortType(ce.Type()))
			}
		}
	}
}
