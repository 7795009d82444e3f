package hostmanager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/vmguard/vmguard/events"
)

func isGuestAction(k ActionKind) bool { return k == StartGuest || k == StopGuest || k == MigrateGuest }

// act starts the actions Pending lists for pkg that are not in flight, not
// done and due; a package's guest actions one at a time, in order.
func (r *Runner) act(ctx context.Context, pkg string) {
	acts := Pending(r.st, pkg)
	now := r.now()
	want := make(map[string]bool, len(acts))
	guestBusy := r.ex.busy(pkg)
	for _, a := range acts {
		k := a.Key()
		want[k] = true
		if (a.Kind == StopService || a.Kind == StopGuest) && a.NotBefore.After(now) {
			r.ex.arm(ctx, pkg, k, a.NotBefore) // its successors halt first
			continue
		}
		if a.Kind == StopService || a.Kind == StopGuest {
			var step stepKind
			a, k, step = r.ladder(ctx, a, k, now, want)
			if step == stepFence && r.fenceFor(ctx, a) {
				return
			}
		}
		if a.Kind == RunService && r.ex.done[pkg][k] > 0 && r.unreported(ctx, a, k, now, want) {
			continue
		}
		if r.ex.flights[k] != nil || r.ex.done[pkg][k] > 0 {
			guestBusy = guestBusy || isGuestAction(a.Kind)
			continue
		}
		if isGuestAction(a.Kind) {
			if guestBusy {
				continue
			}
			guestBusy = true
		}
		if a.Kind == RunService && a.NotBefore.After(now) {
			r.ex.arm(ctx, pkg, k, a.NotBefore)
			continue
		}
		if rt, ok := r.ex.retries[k]; ok && rt.at.After(now) {
			r.ex.arm(ctx, pkg, k, rt.at)
			continue
		}
		r.ex.start(ctx, k, a)
	}
	r.ex.forget(pkg, want)
}

// ladder returns the rung of the escalation ladder a stop has reached and
// its key: a StopService whose process.exited has not come by its
// stopDeadline becomes a forced StopGuest, a StopGuest whose driver failed
// is forced, then fenced (escalate decides; this keeps the times and
// counts, and a timer for the deadline).
func (r *Runner) ladder(ctx context.Context, a Action, k string, now time.Time, want map[string]bool) (Action, string, stepKind) {
	tr := r.ex.stops[k]
	if tr == nil {
		tr = &stopTrack{pkg: a.Package, since: now}
		r.ex.stops[k] = tr
	}
	if a.Kind == StopService && tr.rung == 0 {
		dl := stopDeadline(a, tr.since)
		if now.Before(dl) {
			want[k+"#deadline"] = true
			r.ex.arm(ctx, a.Package, k+"#deadline", dl)
			return a, k, stepAct
		}
		tr.rung = 1
	}
	ea, step := escalate(a, tr.rung)
	if ea.Kind == a.Kind {
		return ea, k, step
	}
	k2 := ea.Key()
	want[k2] = true
	tr2 := r.ex.stops[k2]
	if tr2 == nil {
		r.logger.Warn("service stop did not end in time; forcing the guest off", "package", a.Package, "service", a.Service.Name,
			"request_id", a.RequestID, "pid", a.PID, "since", tr.since)
		tr2 = &stopTrack{pkg: a.Package, since: now}
		r.ex.stops[k2] = tr2
	}
	ea, step = escalate(ea, tr2.rung)
	return ea, k2, step
}

// fenceFor fences this node because a guest of a's package cannot be
// stopped (its forced stop failed): every guest of the node is stopped
// through its driver and node.fenced recorded, which releases the node's
// placements so that the packages may run elsewhere. Once per package
// epoch and runner: it returns false if this one already fenced for it,
// and the forced stop is then retried with backoff.
func (r *Runner) fenceFor(ctx context.Context, a Action) bool {
	id := fmt.Sprintf("%s/%d", a.Package, a.Epoch)
	if r.fencedFor[id] {
		return false
	}
	r.fencedFor[id] = true
	why := clipReason(fmt.Sprintf("guest %s of package %s could not be stopped by its driver, forced: %s; node fenced for the package",
		a.Guest.Name, a.Package, r.ex.stopErr[a.Key()]))
	delete(r.ex.stopErr, a.Key())
	r.logger.Error("fencing this node: a guest cannot be stopped", "package", a.Package, "guest", a.Guest.Name, "reason", why)
	r.fenceNode(ctx, why, false)
	return true
}

// fenceNode fences this node by itself: the membership records the fence
// (hold: it stays out until `node run`), the actions in flight are
// cancelled, every guest is stopped in the background (fence; a Loop's
// LoopConfig.Fence instead) and
// node.fenced is appended (nodeWork).
func (r *Runner) fenceNode(ctx context.Context, why string, hold bool) {
	r.member.Observe(Observation{Kind: ObserveFence, Reason: why, At: r.now(), Hold: hold})
	r.ex.cancelAll()
	if r.fenceGuests != nil {
		r.fenceGuests(why)
	} else {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.lease.fence(ctx, why)
		}()
	}
	r.nodeWork(ctx)
}

// failFast fences this node when the log shows a fail-fast failure on it
// (State.FailFast: a service with fail_fast failed after its restarts, or
// a package with node_fail_fast failed) that no node.fenced, node.lost or
// node.halted has answered yet, as Serviceguard halts a node: every guest
// of the node is stopped through its driver and node.fenced recorded, so
// the controller moves all of the node's packages. The state comes from
// the log, so a host manager restarted in between fences on start; once
// per failure, since node.fenced clears it. A frozen node ignores it. The
// fence holds: the node stays out until an operator's `node run`.
func (r *Runner) failFast(ctx context.Context) {
	ff := r.st.FailFast
	if ff == nil || r.member.Fenced || r.member.FrozenAt(r.now()) {
		return
	}
	why := clipReason(ff.Reason)
	r.logger.Error("fencing this node: fail-fast failure", "package", ff.Package, "reason", why)
	r.fenceNode(ctx, why, true)
}

// unreported handles a run the agent accepted: if its process.started has
// not come within ReportTimeout, the host manager records the process as
// exited (the run counts as a failed start; the restart policy applies)
// and reports true. It arms a timer for the bound otherwise.
//
// The record is guarded by the package's last sequence as this host has
// read it: if the log holds news of the package this host has not read
// yet (its main read lagging under load, and the news maybe the
// process.started itself), it is not recorded, and the run gets another
// ReportTimeout. Unguarded, a host reading late recorded the exit of
// processes that ran, restarted them into "already runs" and failed
// their packages (a 200-node `bench scale`: 7,000 of them in a cold start).
func (r *Runner) unreported(ctx context.Context, a Action, k string, now time.Time, want map[string]bool) bool {
	ac := r.ex.accepted[k]
	if ac == nil || ac.pid <= 0 {
		return false
	}
	dl := ac.at.Add(ReportTimeout)
	if now.Before(dl) {
		want[k+"#report"] = true
		r.ex.arm(ctx, a.Package, k+"#report", dl)
		return false
	}
	ac.at = now // the next window, if the record is refused
	want[k+"#report"] = true
	r.ex.arm(ctx, a.Package, k+"#report", now.Add(ReportTimeout))
	r.logger.Error("no process.started for a run the agent accepted; counting it as a failed start", "package", a.Package,
		"service", a.Service.Name, "request_id", a.RequestID, "pid", ac.pid, "waited", ReportTimeout)
	x := a.Unreported(ac.pid)
	expect := r.st.Expect(a.Package)
	// A fact, appended by a goroutine like any action's result (a Loop's,
	// whose actions go to its caller, appends it at once).
	record := func() {
		err := r.ex.do.appendFact(ctx, x, expect)
		switch {
		case errors.Is(err, events.ErrConflict):
			r.logger.Warn("exit of an unreported run not recorded: the log holds news of the package this host has not read; waiting again",
				"package", a.Package, "service", a.Service.Name, "request_id", a.RequestID)
		case err != nil && ctx.Err() == nil:
			r.logger.Warn("append process.exited of an unreported run", "package", a.Package, "err", err)
		}
	}
	if r.ex.hand != nil {
		record()
		return true
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		record()
	}()
	return true
}

// finished records an action's outcome and processes its package again.
func (r *Runner) finished(ctx context.Context, res result) {
	f := r.ex.flights[res.key]
	delete(r.ex.flights, res.key)
	pkg := res.a.Package
	switch {
	case res.err == nil:
		if r.ex.done[pkg] == nil {
			r.ex.done[pkg] = map[string]int{}
		}
		r.ex.done[pkg][res.key]++
		delete(r.ex.retries, res.key)
		if res.a.Kind == RunService {
			r.ex.accepted[res.key] = &accepted{pkg: pkg, at: r.now(), pid: res.pid}
		}
	case errors.Is(res.err, errNoStart):
		r.logger.Error("service cannot be started", "package", pkg, "service", res.a.Service.Name, "err", res.err)
		r.ex.backoff(res.key, pkg) // not again at once, should the append fail
		r.serviceCannotStart(ctx, res.a, res.err)
	case errors.Is(res.err, errGuestStuck):
		// The forced stop already failed: the last rung, not a retry that
		// would run the driver's start again.
		r.logger.Error("guest did not start and cannot be stopped", "package", pkg, "guest", res.a.Guest.Name, "err", res.err)
		sa := res.a
		sa.Kind, sa.Force = StopGuest, true
		r.ex.stopErr[sa.Key()] = res.err.Error()
		if !r.fenceFor(ctx, sa) {
			r.ex.backoff(res.key, pkg)
		}
	case f != nil && errors.Is(res.err, context.Canceled):
		// Canceled by us: the log no longer asks for it.
	default:
		rt := r.ex.backoff(res.key, pkg)
		if tr := r.ex.stops[res.key]; tr != nil && res.a.Kind == StopGuest {
			tr.rung++ // forced next, then fenced (escalate)
			r.ex.stopErr[res.key] = res.err.Error()
		}
		if res.a.Kind == RunService && r.now().Sub(rt.since) >= RunGiveUp {
			r.logger.Error("service run not accepted in time; failing the service", "package", pkg, "service", res.a.Service.Name,
				"for", RunGiveUp, "err", res.err)
			r.serviceCannotStart(ctx, res.a, fmt.Errorf("run not accepted by the agent within %s: %w", RunGiveUp, res.err))
		}
		level := slog.LevelDebug // e.g. an agent that has not seen the node lease yet
		if rt.wait >= time.Second {
			level = slog.LevelWarn
		}
		r.logger.Log(ctx, level, "action failed; retrying", "package", pkg, "kind", res.a.Kind, "service", res.a.Service.Name,
			"retry_in", rt.wait, "err", res.err)
	}
	r.process(ctx, pkg)
}

// serviceCannotStart appends service.failed for a run the agent could not
// start: like Serviceguard, a service that cannot start fails its package.
func (r *Runner) serviceCannotStart(ctx context.Context, a Action, cause error) {
	p := r.st.Packages[a.Package]
	if p == nil || p.Inst == nil || p.Inst.Epoch != a.Epoch {
		return
	}
	sv := p.Inst.Service(a.Service.Name)
	if sv == nil || sv.Run == nil || sv.Run.ID != a.RequestID || sv.Failed {
		return
	}
	d := events.Event{Source: r.st.Source(), Subject: a.Package, CauseID: a.CauseID, Data: events.ServiceFailed{
		Service: a.Service.Name, Node: r.node, Epoch: a.Epoch, Restarts: sv.Restarts,
		Reason: clipReason("cannot be started: " + cause.Error()),
	}}
	r.appendDecision(ctx, a.Package, d)
}
