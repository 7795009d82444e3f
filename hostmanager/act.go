package hostmanager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
)

// agentTimeout bounds one run request to an agent.
const agentTimeout = 10 * time.Second

// Retry waits of a failed action.
const (
	firstRetry = 25 * time.Millisecond
	maxRetry   = 5 * time.Second
)

// flight is an action being performed.
type flight struct {
	pkg    string
	kind   ActionKind
	cancel context.CancelFunc
}

// result is what an action goroutine reports back to the loop.
type result struct {
	a   Action
	key string
	err error
	pid int // RunService: the process the agent started
}

// retry is when a failed action may be tried again.
type retry struct {
	pkg   string
	at    time.Time
	wait  time.Duration
	since time.Time // the first failure
}

// stopTrack is a stop (StopService or StopGuest) on the escalation ladder:
// when the log first asked for it and how many rungs it went up.
type stopTrack struct {
	pkg   string
	since time.Time
	rung  int
}

// accepted is a run the agent accepted whose process.started is awaited.
type accepted struct {
	pkg string
	at  time.Time
	pid int
}

// armed is a timer that wakes a package when a delayed action is due.
type armed struct {
	pkg string
	at  time.Time
	t   *time.Timer
}

// errNoStart marks a run the agent refused because the process could not
// be started (e.g. no such executable): trying again will not help.
var errNoStart = errors.New("service cannot be started")

// errGuestStuck marks a guest that did not start and that its driver could
// not stop either: starting it again would not help; the ladder fences.
var errGuestStuck = errors.New("guest cannot be stopped")

func isGuestAction(k ActionKind) bool { return k == StartGuest || k == StopGuest || k == MigrateGuest }

// act starts the actions Pending lists for pkg that are not in flight, not
// done and due; a package's guest actions one at a time, in order.
func (r *Runner) act(ctx context.Context, pkg string) {
	acts := Pending(r.st, pkg)
	now := r.now()
	want := make(map[string]bool, len(acts))
	guestBusy := false
	for _, f := range r.flights {
		if f.pkg == pkg && isGuestAction(f.kind) {
			guestBusy = true
		}
	}
	for _, a := range acts {
		k := a.Key()
		want[k] = true
		if a.Kind == StopService || a.Kind == StopGuest {
			var step stepKind
			a, k, step = r.ladder(ctx, a, k, now, want)
			if step == stepFence && r.fenceFor(ctx, a) {
				return
			}
		}
		if a.Kind == RunService && r.done[pkg][k] > 0 && r.unreported(ctx, a, k, now, want) {
			continue
		}
		if r.flights[k] != nil || r.done[pkg][k] > 0 {
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
			r.arm(ctx, pkg, k, a.NotBefore)
			continue
		}
		if rt, ok := r.retries[k]; ok && rt.at.After(now) {
			r.arm(ctx, pkg, k, rt.at)
			continue
		}
		r.start(ctx, k, a)
	}
	// Forget what the log no longer asks for.
	for k := range r.done[pkg] {
		if !want[k] {
			delete(r.done[pkg], k)
		}
	}
	for k, f := range r.flights {
		if f.pkg == pkg && !want[k] && f.kind == StartGuest {
			f.cancel() // e.g. halted while the guest was starting
		}
	}
	for k, t := range r.timers {
		if t.pkg == pkg && !want[k] {
			t.t.Stop()
			delete(r.timers, k)
		}
	}
	for k, rt := range r.retries {
		if rt.pkg == pkg && !want[k] {
			delete(r.retries, k)
		}
	}
	for k, tr := range r.stops {
		if tr.pkg == pkg && !want[k] {
			delete(r.stops, k)
			delete(r.stopErr, k)
		}
	}
	for k, ac := range r.accepted {
		if ac.pkg == pkg && !want[k] {
			delete(r.accepted, k)
		}
	}
}

// ladder returns the rung of the escalation ladder a stop has reached and
// its key: a StopService whose process.exited has not come by its
// stopDeadline becomes a forced StopGuest, a StopGuest whose driver failed
// is forced, then fenced (escalate decides; this keeps the times and
// counts, and a timer for the deadline).
func (r *Runner) ladder(ctx context.Context, a Action, k string, now time.Time, want map[string]bool) (Action, string, stepKind) {
	tr := r.stops[k]
	if tr == nil {
		tr = &stopTrack{pkg: a.Package, since: now}
		r.stops[k] = tr
	}
	if a.Kind == StopService && tr.rung == 0 {
		dl := stopDeadline(a, tr.since)
		if now.Before(dl) {
			want[k+"#deadline"] = true
			r.arm(ctx, a.Package, k+"#deadline", dl)
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
	tr2 := r.stops[k2]
	if tr2 == nil {
		r.logger.Warn("service stop did not end in time; forcing the guest off", "package", a.Package, "service", a.Service.Name,
			"request_id", a.RequestID, "pid", a.PID, "since", tr.since)
		tr2 = &stopTrack{pkg: a.Package, since: now}
		r.stops[k2] = tr2
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
		a.Guest.Name, a.Package, r.stopErr[a.Key()]))
	delete(r.stopErr, a.Key())
	r.logger.Error("fencing this node: a guest cannot be stopped", "package", a.Package, "guest", a.Guest.Name, "reason", why)
	r.fenceNode(ctx, why, false)
	return true
}

// fenceNode fences this node by itself: the membership records the fence
// (hold: it stays out until `node run`), the actions in flight are
// cancelled, every guest is stopped in the background (fence) and
// node.fenced is appended (nodeWork).
func (r *Runner) fenceNode(ctx context.Context, why string, hold bool) {
	r.member.Observe(Observation{Kind: ObserveFence, Reason: why, At: r.now(), Hold: hold})
	for _, f := range r.flights {
		f.cancel()
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.lease.fence(ctx, why)
	}()
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
func (r *Runner) unreported(ctx context.Context, a Action, k string, now time.Time, want map[string]bool) bool {
	ac := r.accepted[k]
	if ac == nil || ac.pid <= 0 {
		return false
	}
	dl := ac.at.Add(ReportTimeout)
	if now.Before(dl) {
		want[k+"#report"] = true
		r.arm(ctx, a.Package, k+"#report", dl)
		return false
	}
	delete(r.accepted, k)
	r.logger.Error("no process.started for a run the agent accepted; counting it as a failed start", "package", a.Package,
		"service", a.Service.Name, "request_id", a.RequestID, "pid", ac.pid, "waited", ReportTimeout)
	x := a.Unreported(ac.pid)
	// A fact, appended by a goroutine like any action's result.
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := r.appendFact(ctx, x); err != nil && ctx.Err() == nil {
			r.logger.Warn("append process.exited of an unreported run", "package", a.Package, "err", err)
		}
	}()
	return true
}

// arm wakes pkg at at (once per key).
func (r *Runner) arm(ctx context.Context, pkg, key string, at time.Time) {
	if t := r.timers[key]; t != nil && t.at.Equal(at) {
		return
	} else if t != nil {
		t.t.Stop()
	}
	d := max(at.Sub(r.now()), 0)
	r.timers[key] = &armed{pkg: pkg, at: at, t: time.AfterFunc(d, func() {
		select {
		case r.wake <- pkg:
		case <-ctx.Done():
		}
	})}
}

// start performs a in its own goroutine.
func (r *Runner) start(ctx context.Context, key string, a Action) {
	if t := r.timers[key]; t != nil {
		t.t.Stop()
		delete(r.timers, key)
	}
	actx, cancel := context.WithCancel(ctx)
	r.flights[key] = &flight{pkg: a.Package, kind: a.Kind, cancel: cancel}
	r.logger.Debug("action", "package", a.Package, "kind", a.Kind, "service", a.Service.Name, "request_id", a.RequestID)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer cancel()
		pid, err := r.perform(actx, a)
		select {
		case r.results <- result{a: a, key: key, err: err, pid: pid}:
		case <-ctx.Done():
		}
	}()
}

// finished records an action's outcome and processes its package again.
func (r *Runner) finished(ctx context.Context, res result) {
	f := r.flights[res.key]
	delete(r.flights, res.key)
	pkg := res.a.Package
	switch {
	case res.err == nil:
		if r.done[pkg] == nil {
			r.done[pkg] = map[string]int{}
		}
		r.done[pkg][res.key]++
		delete(r.retries, res.key)
		if res.a.Kind == RunService {
			r.accepted[res.key] = &accepted{pkg: pkg, at: r.now(), pid: res.pid}
		}
	case errors.Is(res.err, errNoStart):
		r.logger.Error("service cannot be started", "package", pkg, "service", res.a.Service.Name, "err", res.err)
		r.backoff(res.key, pkg) // not again at once, should the append fail
		r.serviceCannotStart(ctx, res.a, res.err)
	case errors.Is(res.err, errGuestStuck):
		// The forced stop already failed: the last rung, not a retry that
		// would run the driver's start again.
		r.logger.Error("guest did not start and cannot be stopped", "package", pkg, "guest", res.a.Guest.Name, "err", res.err)
		sa := res.a
		sa.Kind, sa.Force = StopGuest, true
		r.stopErr[sa.Key()] = res.err.Error()
		if !r.fenceFor(ctx, sa) {
			r.backoff(res.key, pkg)
		}
	case f != nil && errors.Is(res.err, context.Canceled):
		// Canceled by us: the log no longer asks for it.
	default:
		rt := r.backoff(res.key, pkg)
		if tr := r.stops[res.key]; tr != nil && res.a.Kind == StopGuest {
			tr.rung++ // forced next, then fenced (escalate)
			r.stopErr[res.key] = res.err.Error()
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

// backoff records a failure of the action key and when it may be tried
// again: 25 ms, doubling, at most 5 s.
func (r *Runner) backoff(key, pkg string) retry {
	now := r.now()
	rt, ok := r.retries[key]
	if !ok {
		rt.since = now
	}
	rt.pkg = pkg
	rt.wait = min(max(2*rt.wait, firstRetry), maxRetry)
	rt.at = now.Add(rt.wait)
	r.retries[key] = rt
	return rt
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

// perform does one action and, for guest actions, appends its result. A
// RunService returns the pid of the process the agent started.
func (r *Runner) perform(ctx context.Context, a Action) (int, error) {
	switch a.Kind {
	case StartGuest:
		return 0, r.startGuest(ctx, a)
	case StopGuest:
		return 0, r.stopGuest(ctx, a)
	case RunService:
		return r.runService(ctx, a)
	case StopService:
		return 0, r.stopService(ctx, a)
	case MigrateGuest:
		return 0, r.migrateGuest(ctx, a)
	}
	return 0, fmt.Errorf("perform %s: unknown action", a.Kind)
}

func (r *Runner) driver(name string) (Driver, error) {
	if name == "" {
		name = config.DefaultGuestDriver
	}
	d, ok := r.drivers[name]
	if !ok {
		return nil, fmt.Errorf("guest driver %q: unknown", name)
	}
	return d, nil
}

// startGuest starts the guest through its driver and waits, within its
// start timeout, for its agent's first heartbeat from this node; then it
// appends guest.started. A guest that does not come up is stopped (forced)
// and guest.stopped says why, which fails the package on this node.
func (r *Runner) startGuest(ctx context.Context, a Action) error {
	ref := GuestRef{Package: a.Package, Node: r.node, Guest: a.Guest}
	timeout := a.Guest.StartTimeout.D()
	if timeout <= 0 {
		timeout = config.DefaultStartTimeout
	}
	drv, err := r.driver(a.Guest.Driver)
	if err != nil {
		return r.appendFact(ctx, a.GuestStopped("did not start: "+err.Error()))
	}
	beats := make(chan *nats.Msg, 16)
	sub, err := r.guestConn(a.Guest).ChanSubscribe(guestagent.HeartbeatSubject(a.Guest.Name), beats)
	if err != nil {
		return fmt.Errorf("start guest %s: subscribe to heartbeats: %w", a.Guest.Name, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = drv.Start(sctx, ref)
	if err == nil {
		placed := make(chan struct{})
		go func() {
			defer close(placed)
			r.place(sctx, a)
		}()
		err = r.firstBeat(sctx, beats)
		cancel()
		<-placed
	}
	if err == nil {
		r.logger.Info("guest started", "package", a.Package, "guest", a.Guest.Name)
		return r.appendFact(ctx, a.GuestStarted())
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("no heartbeat from its agent within start_timeout %s", timeout)
	}
	r.logger.Error("guest did not start", "package", a.Package, "guest", a.Guest.Name, "err", err)
	sctx2, cancel2 := context.WithTimeout(ctx, time.Minute)
	defer cancel2()
	if serr := drv.Stop(sctx2, ref, true); serr != nil {
		return fmt.Errorf("%w: stop guest %s that did not start (%v): %w", errGuestStuck, a.Guest.Name, err, serr)
	}
	return r.appendFact(ctx, a.GuestStopped("did not start: "+err.Error()))
}

// placeRetry is the pause between place requests to a starting guest's
// agent.
const placeRetry = 250 * time.Millisecond

// place tells the agent of a starting guest that this node controls it
// under a's epoch (guestagent.PlaceRequest), until it agrees or ctx ends: a
// guest whose image names another node (it booted here after a failover)
// or none follows this node's lease once the log confirms the placement,
// and only then sends heartbeats from this node. An agent that refuses
// (the log places the package elsewhere) never sends them, and the start
// runs into its start timeout.
func (r *Runner) place(ctx context.Context, a Action) {
	c, err := r.client(a.Guest)
	if err != nil {
		return
	}
	var last error
	for {
		rctx, cancel := context.WithTimeout(ctx, agentTimeout)
		_, err := c.Place(rctx, guestagent.PlaceRequest{Package: a.Package, Node: r.node, Epoch: a.Epoch})
		cancel()
		if err == nil {
			return
		}
		if errors.Is(err, guestagent.ErrConflict) && (last == nil || last.Error() != err.Error()) {
			r.logger.Warn("guest agent refuses this node's placement", "package", a.Package, "guest", a.Guest.Name, "epoch", a.Epoch, "err", err)
		}
		last = err
		t := time.NewTimer(placeRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// firstBeat waits for a heartbeat from the agent on this node.
func (r *Runner) firstBeat(ctx context.Context, beats <-chan *nats.Msg) error {
	for {
		select {
		case m := <-beats:
			if r.hb.note(m) {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stopGuest stops the guest through its driver, within guestStopTimeout,
// then appends guest.stopped.
func (r *Runner) stopGuest(ctx context.Context, a Action) error {
	drv, err := r.driver(a.Guest.Driver)
	if err == nil {
		sctx, cancel := context.WithTimeout(ctx, guestStopTimeout(a.Guest))
		err = drv.Stop(sctx, GuestRef{Package: a.Package, Node: r.node, Guest: a.Guest}, a.Force)
		cancel()
	}
	if err != nil {
		return fmt.Errorf("stop guest %s: %w", a.Guest.Name, err)
	}
	r.logger.Info("guest stopped", "package", a.Package, "guest", a.Guest.Name, "reason", a.Reason)
	return r.appendFact(ctx, a.GuestStopped(a.Reason))
}

// migrateGuest migrates the guest live to a.Target through its driver,
// within the driver's migrate bound, and appends guest.migrated; if the
// driver cannot migrate, or the migration fails or runs out of time, it
// appends guest.migration_failed instead, and the core falls back to halt
// here and start there. It never retries a migration by itself.
func (r *Runner) migrateGuest(ctx context.Context, a Action) error {
	ref := GuestRef{Package: a.Package, Node: r.node, Guest: a.Guest}
	err := func() error {
		drv, err := r.driver(a.Guest.Driver)
		if err != nil {
			return err
		}
		m, ok := drv.(Migrator)
		if !ok {
			return fmt.Errorf("guest driver %q cannot migrate", a.Guest.Driver)
		}
		mctx, cancel := context.WithTimeout(ctx, migrateTimeout(a.Guest))
		defer cancel()
		start := r.now()
		err = m.Migrate(mctx, ref, a.Target)
		if err != nil && mctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("no migration within %s: %w", migrateTimeout(a.Guest), err)
		}
		if err == nil {
			r.logger.Info("guest migrated", "package", a.Package, "guest", a.Guest.Name, "target", a.Target, "took", r.now().Sub(start))
		}
		return err
	}()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		r.logger.Error("guest migration failed; halting it here to start it on the target", "package", a.Package, "guest", a.Guest.Name,
			"target", a.Target, "err", err)
		return r.appendFact(ctx, a.GuestMigrationFailed("migrate to "+a.Target+": "+err.Error()))
	}
	return r.appendFact(ctx, a.GuestMigrated())
}

// client returns a client for guest's agent. Clients are cheap: action
// goroutines make their own rather than share a map with the loop.
func (r *Runner) client(g config.Guest) (*guestagent.Client, error) {
	return guestagent.NewClient(r.guestConn(g), g.Name)
}

// guestConn is the connection to g's agent: Config.GuestConn unless g's
// agent is the host manager's own child (the process driver).
func (r *Runner) guestConn(g config.Guest) *nats.Conn {
	if g.Driver == config.DriverProcess || g.Driver == "" {
		return r.nc
	}
	return r.guestNC
}

// runService asks the agent to run the service under the decision's
// request id; the agent deduplicates it and writes process.started.
func (r *Runner) runService(ctx context.Context, a Action) (int, error) {
	c, err := r.client(a.Guest)
	if err != nil {
		return 0, err
	}
	rctx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	rep, err := c.Run(rctx, guestagent.RunRequest{
		Package: a.Package, Service: a.Service.Name, Argv: a.Service.Cmd, Env: a.Service.Env, Dir: a.Service.Dir,
		RequestID: a.RequestID, CauseID: a.CauseID, Epoch: a.Epoch, Node: r.node, HaltTimeout: a.Service.HaltTimeout,
	})
	if errors.Is(err, guestagent.ErrStart) || errors.Is(err, guestagent.ErrBadRequest) {
		return 0, fmt.Errorf("%w: %w", errNoStart, err)
	}
	if err != nil {
		return 0, err
	}
	return rep.Process.PID, nil
}

// stopService asks the agent to stop the process of the request id; the
// agent writes its process.exited (reason stopped).
func (r *Runner) stopService(ctx context.Context, a Action) error {
	c, err := r.client(a.Guest)
	if err != nil {
		return err
	}
	halt := a.Service.HaltTimeout.D()
	if halt <= 0 {
		halt = config.DefaultHaltTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, agentTimeout+halt)
	defer cancel()
	_, err = c.Stop(rctx, guestagent.StopRequest{RequestID: a.RequestID, HaltTimeout: config.Duration(halt)})
	// An agent that does not know the request id (ErrNotFound) is retried
	// too: with the process driver a fenced agent of the same guest on a
	// node whose host manager died may still answer on the guest's
	// subjects, and the request may reach the right agent next time.
	return err
}

// appendFact appends the result of an action, retrying with the same id
// (stored once) until it is in the log or ctx ends. A result the log
// refuses as invalid (a bug) is logged and replaced once by its Fallback;
// it is never retried, and neither is the action (which would run the
// driver again).
func (r *Runner) appendFact(ctx context.Context, e events.Event) error {
	e = events.Stamp(e, r.now())
	wait := firstRetry
	fellBack := false
	for {
		actx, cancel := context.WithTimeout(ctx, appendTimeout)
		_, err := r.log.Append(actx, e)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, events.ErrInvalid) {
			fb, ok := Fallback(e)
			if fellBack || !ok {
				r.logger.Error("action result refused as invalid; not recorded", "package", e.Subject, "type", e.Type(), "err", err)
				return nil
			}
			r.logger.Error("action result refused as invalid; appending a fallback", "package", e.Subject, "type", e.Type(), "err", err)
			e, fellBack = events.Stamp(fb, r.now()), true
			continue
		}
		r.logger.Warn("append result; retrying", "type", e.Type(), "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		wait = min(2*wait, maxRetry)
	}
}
