package hostmanager

import (
	"context"
	"encoding/json"
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
}

// retry is when a failed action may be tried again.
type retry struct {
	pkg  string
	at   time.Time
	wait time.Duration
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

func isGuestAction(k ActionKind) bool { return k == StartGuest || k == StopGuest }

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
		err := r.perform(actx, a)
		select {
		case r.results <- result{a: a, key: key, err: err}:
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
	case errors.Is(res.err, errNoStart):
		r.logger.Error("service cannot be started", "package", pkg, "service", res.a.Service.Name, "err", res.err)
		r.serviceCannotStart(ctx, res.a, res.err)
	case f != nil && errors.Is(res.err, context.Canceled):
		// Canceled by us: the log no longer asks for it.
	default:
		rt := r.retries[res.key]
		rt.pkg = pkg
		rt.wait = min(max(2*rt.wait, firstRetry), maxRetry)
		rt.at = r.now().Add(rt.wait)
		r.retries[res.key] = rt
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
		Reason: "cannot be started: " + cause.Error(),
	}}
	r.appendDecision(ctx, a.Package, d)
}

// perform does one action and, for guest actions, appends its result.
func (r *Runner) perform(ctx context.Context, a Action) error {
	switch a.Kind {
	case StartGuest:
		return r.startGuest(ctx, a)
	case StopGuest:
		return r.stopGuest(ctx, a)
	case RunService:
		return r.runService(ctx, a)
	case StopService:
		return r.stopService(ctx, a)
	}
	return fmt.Errorf("perform %s: unknown action", a.Kind)
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
	sub, err := r.nc.ChanSubscribe(guestagent.HeartbeatSubject(a.Guest.Name), beats)
	if err != nil {
		return fmt.Errorf("start guest %s: subscribe to heartbeats: %w", a.Guest.Name, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = drv.Start(sctx, ref)
	if err == nil {
		err = r.firstBeat(sctx, beats)
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
		return fmt.Errorf("stop guest %s that did not start: %w", a.Guest.Name, serr)
	}
	return r.appendFact(ctx, a.GuestStopped("did not start: "+err.Error()))
}

// firstBeat waits for a heartbeat from the agent on this node.
func (r *Runner) firstBeat(ctx context.Context, beats <-chan *nats.Msg) error {
	for {
		select {
		case m := <-beats:
			if r.noteBeat(m) {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stopGuest stops the guest through its driver, then appends guest.stopped.
func (r *Runner) stopGuest(ctx context.Context, a Action) error {
	drv, err := r.driver(a.Guest.Driver)
	if err == nil {
		err = drv.Stop(ctx, GuestRef{Package: a.Package, Node: r.node, Guest: a.Guest}, a.Force)
	}
	if err != nil {
		return fmt.Errorf("stop guest %s: %w", a.Guest.Name, err)
	}
	r.logger.Info("guest stopped", "package", a.Package, "guest", a.Guest.Name, "reason", a.Reason)
	return r.appendFact(ctx, a.GuestStopped(a.Reason))
}

// client returns a client for guest's agent. Clients are cheap: action
// goroutines make their own rather than share a map with the loop.
func (r *Runner) client(guest string) (*guestagent.Client, error) {
	return guestagent.NewClient(r.nc, guest)
}

// runService asks the agent to run the service under the decision's
// request id; the agent deduplicates it and writes process.started.
func (r *Runner) runService(ctx context.Context, a Action) error {
	c, err := r.client(a.Guest.Name)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	_, err = c.Run(rctx, guestagent.RunRequest{
		Package: a.Package, Service: a.Service.Name, Argv: a.Service.Cmd, Env: a.Service.Env, Dir: a.Service.Dir,
		RequestID: a.RequestID, CauseID: a.CauseID, Epoch: a.Epoch, HaltTimeout: a.Service.HaltTimeout,
	})
	if errors.Is(err, guestagent.ErrStart) || errors.Is(err, guestagent.ErrBadRequest) {
		return fmt.Errorf("%w: %w", errNoStart, err)
	}
	return err
}

// stopService asks the agent to stop the process of the request id; the
// agent writes its process.exited (reason stopped).
func (r *Runner) stopService(ctx context.Context, a Action) error {
	c, err := r.client(a.Guest.Name)
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
// (stored once) until it is in the log or ctx ends.
func (r *Runner) appendFact(ctx context.Context, e events.Event) error {
	e = events.Stamp(e, r.now())
	wait := firstRetry
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
			return err
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

// noteBeat records a heartbeat message if it comes from an agent on this
// node (or one that does not say), and reports whether it did.
func (r *Runner) noteBeat(m *nats.Msg) bool {
	var hb guestagent.Heartbeat
	if err := json.Unmarshal(m.Data, &hb); err != nil || hb.Guest == "" {
		return false
	}
	// The subject, not the payload, says whose beat it is: a guest's NATS
	// user may publish only on its own heartbeat subject, so a guest cannot
	// keep another, dead guest from being reported lost.
	if m.Subject != guestagent.HeartbeatSubject(hb.Guest) {
		return false
	}
	if hb.Node != "" && hb.Node != r.node {
		return false
	}
	r.hbMu.Lock()
	r.hb[hb.Guest] = time.Now()
	r.hbMu.Unlock()
	return true
}

// onHeartbeat is the heartbeat subscription's handler.
func (r *Runner) onHeartbeat(m *nats.Msg) { r.noteBeat(m) }
