package hostmanager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
)

// actuator performs this node's actions: guests through their drivers,
// services through their agents, and appends the results (the executor's
// performer).
type actuator struct {
	node    string
	now     func() time.Time
	logger  *slog.Logger
	log     appender   // action results (appendFact)
	guests  guestLinks // the agents (natsGuests); nil in a Loop
	drivers map[string]Driver
	hb      *heartbeats // a starting guest's first beat
}

// guestLinks reaches the agents of this node's guests: a client for
// requests, and their heartbeats (natsGuests over NATS).
type guestLinks interface {
	// client returns a client for g's agent.
	client(g config.Guest) (*guestagent.Client, error)
	// beats calls fn with each heartbeat g's agent publishes (its subject
	// and payload) until stop is called.
	beats(g config.Guest, fn func(subject string, data []byte)) (stop func(), err error)
	// settle waits, at most a short bound and ctx, until the server holds
	// the subscriptions made so far on g's connection; best effort.
	settle(ctx context.Context, g config.Guest)
}

// agentTimeout bounds one run request to an agent.
const agentTimeout = 10 * time.Second

// errNoStart marks a run the agent refused because the process could not
// be started (e.g. no such executable): trying again will not help.
var errNoStart = errors.New("service cannot be started")

// errGuestStuck marks a guest that did not start and that its driver could
// not stop either: starting it again would not help; the ladder fences.
var errGuestStuck = errors.New("guest cannot be stopped")

// perform does one action and, for guest actions, appends its result. A
// RunService returns the pid of the process the agent started.
func (u *actuator) perform(ctx context.Context, a Action) (int, error) {
	switch a.Kind {
	case StartGuest:
		return 0, u.startGuest(ctx, a)
	case StopGuest:
		return 0, u.stopGuest(ctx, a)
	case RunService:
		return u.runService(ctx, a)
	case StopService:
		return 0, u.stopService(ctx, a)
	case MigrateGuest:
		return 0, u.migrateGuest(ctx, a)
	}
	return 0, fmt.Errorf("perform %s: unknown action", a.Kind)
}

func (u *actuator) driver(name string) (Driver, error) {
	if name == "" {
		name = config.DefaultGuestDriver
	}
	d, ok := u.drivers[name]
	if !ok {
		return nil, fmt.Errorf("guest driver %q: unknown", name)
	}
	return d, nil
}

// startGuest starts the guest through its driver and waits, within its
// start timeout, for its agent's first heartbeat from this node; then it
// appends guest.started. A guest that does not come up is stopped (forced)
// and guest.stopped says why, which fails the package on this node.
func (u *actuator) startGuest(ctx context.Context, a Action) error {
	ref := GuestRef{Package: a.Package, Node: u.node, Guest: a.Guest}
	timeout := a.Guest.StartTimeout.D()
	if timeout <= 0 {
		timeout = config.DefaultStartTimeout
	}
	drv, err := u.driver(a.Guest.Driver)
	if err != nil {
		return u.appendFact(ctx, a.GuestStopped("did not start: "+err.Error()))
	}
	beat := make(chan struct{})
	var once sync.Once
	stop, err := u.guests.beats(a.Guest, func(subject string, data []byte) {
		if u.hb.note(subject, data) {
			once.Do(func() { close(beat) })
		}
	})
	if err != nil {
		return fmt.Errorf("start guest %s: subscribe to heartbeats: %w", a.Guest.Name, err)
	}
	defer stop()
	// The agent's first heartbeat may come over another connection (an
	// agent's own, a simulated guest's) and reach the server before this
	// subscription does; then only the next one, a heartbeat interval
	// later, would be seen.
	u.guests.settle(ctx, a.Guest)
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err = drv.Start(sctx, ref)
	if err == nil {
		placed := make(chan struct{})
		go func() {
			defer close(placed)
			u.place(sctx, a)
		}()
		err = firstBeat(sctx, beat)
		cancel()
		<-placed
	}
	if err == nil {
		u.logger.Info("guest started", "package", a.Package, "guest", a.Guest.Name)
		return u.appendFact(ctx, a.GuestStarted())
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("no heartbeat from its agent within start_timeout %s", timeout)
	}
	u.logger.Error("guest did not start", "package", a.Package, "guest", a.Guest.Name, "err", err)
	sctx2, cancel2 := context.WithTimeout(ctx, time.Minute)
	defer cancel2()
	if serr := drv.Stop(sctx2, ref, true); serr != nil {
		return fmt.Errorf("%w: stop guest %s that did not start (%v): %w", errGuestStuck, a.Guest.Name, err, serr)
	}
	return u.appendFact(ctx, a.GuestStopped("did not start: "+err.Error()))
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
func (u *actuator) place(ctx context.Context, a Action) {
	c, err := u.client(a.Guest)
	if err != nil {
		return
	}
	var last error
	for {
		rctx, cancel := context.WithTimeout(ctx, agentTimeout)
		_, err := c.Place(rctx, guestagent.PlaceRequest{Package: a.Package, Node: u.node, Epoch: a.Epoch})
		cancel()
		if err == nil {
			return
		}
		if errors.Is(err, guestagent.ErrConflict) && (last == nil || last.Error() != err.Error()) {
			u.logger.Warn("guest agent refuses this node's placement", "package", a.Package, "guest", a.Guest.Name, "epoch", a.Epoch, "err", err)
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

// firstBeat waits for beat to close: a heartbeat from the agent on this
// node came.
func firstBeat(ctx context.Context, beat <-chan struct{}) error {
	select {
	case <-beat:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopGuest stops the guest through its driver, within guestStopTimeout,
// then appends guest.stopped.
func (u *actuator) stopGuest(ctx context.Context, a Action) error {
	drv, err := u.driver(a.Guest.Driver)
	if err == nil {
		sctx, cancel := context.WithTimeout(ctx, guestStopTimeout(a.Guest))
		err = drv.Stop(sctx, GuestRef{Package: a.Package, Node: u.node, Guest: a.Guest}, a.Force)
		cancel()
	}
	if err != nil {
		return fmt.Errorf("stop guest %s: %w", a.Guest.Name, err)
	}
	u.logger.Info("guest stopped", "package", a.Package, "guest", a.Guest.Name, "reason", a.Reason)
	return u.appendFact(ctx, a.GuestStopped(a.Reason))
}

// migrateGuest migrates the guest live to a.Target through its driver,
// within the driver's migrate bound, and appends guest.migrated; if the
// driver cannot migrate, or the migration fails or runs out of time, it
// appends guest.migration_failed instead, and the core falls back to halt
// here and start there. It never retries a migration by itself.
func (u *actuator) migrateGuest(ctx context.Context, a Action) error {
	ref := GuestRef{Package: a.Package, Node: u.node, Guest: a.Guest}
	err := func() error {
		drv, err := u.driver(a.Guest.Driver)
		if err != nil {
			return err
		}
		m, ok := drv.(Migrator)
		if !ok {
			return fmt.Errorf("guest driver %q cannot migrate", a.Guest.Driver)
		}
		mctx, cancel := context.WithTimeout(ctx, migrateTimeout(a.Guest))
		defer cancel()
		start := u.now()
		err = m.Migrate(mctx, ref, a.Target)
		if err != nil && mctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("no migration within %s: %w", migrateTimeout(a.Guest), err)
		}
		if err == nil {
			u.logger.Info("guest migrated", "package", a.Package, "guest", a.Guest.Name, "target", a.Target, "took", u.now().Sub(start))
		}
		return err
	}()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		u.logger.Error("guest migration failed; halting it here to start it on the target", "package", a.Package, "guest", a.Guest.Name,
			"target", a.Target, "err", err)
		return u.appendFact(ctx, a.GuestMigrationFailed("migrate to "+a.Target+": "+err.Error()))
	}
	return u.appendFact(ctx, a.GuestMigrated())
}

// client returns a client for guest's agent. Clients are cheap: action
// goroutines make their own rather than share a map with the loop.
func (u *actuator) client(g config.Guest) (*guestagent.Client, error) {
	return u.guests.client(g)
}

// runService asks the agent to run the service under the decision's
// request id; the agent deduplicates it and writes process.started.
func (u *actuator) runService(ctx context.Context, a Action) (int, error) {
	c, err := u.client(a.Guest)
	if err != nil {
		return 0, err
	}
	rctx, cancel := context.WithTimeout(ctx, agentTimeout)
	defer cancel()
	rep, err := c.Run(rctx, guestagent.RunRequest{
		Package: a.Package, Service: a.Service.Name, Argv: a.Service.Cmd, Env: a.Service.Env, Dir: a.Service.Dir,
		RequestID: a.RequestID, CauseID: a.CauseID, Epoch: a.Epoch, Node: u.node, HaltTimeout: a.Service.HaltTimeout,
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
func (u *actuator) stopService(ctx context.Context, a Action) error {
	c, err := u.client(a.Guest)
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
func (u *actuator) appendFact(ctx context.Context, e events.Event, opts ...events.AppendOption) error {
	e = events.Stamp(e, u.now())
	wait := firstRetry
	fellBack := false
	for {
		actx, cancel := context.WithTimeout(ctx, appendTimeout)
		_, err := u.log.Append(actx, e, opts...)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, events.ErrConflict) {
			return err // a guarded fact the log has moved past: not recorded
		}
		if errors.Is(err, events.ErrInvalid) {
			fb, ok := Fallback(e)
			if fellBack || !ok {
				u.logger.Error("action result refused as invalid; not recorded", "package", e.Subject, "type", e.Type(), "err", err)
				return nil
			}
			u.logger.Error("action result refused as invalid; appending a fallback", "package", e.Subject, "type", e.Type(), "err", err)
			e, fellBack = events.Stamp(fb, u.now()), true
			continue
		}
		u.logger.Warn("append result; retrying", "type", e.Type(), "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		wait = min(2*wait, maxRetry)
	}
}
