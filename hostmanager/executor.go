package hostmanager

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmguard/vmguard/events"
)

// executor performs the actions the log asks for (perform.go), each in its
// own goroutine that reports its result on results, and keeps the
// bookkeeping of actions by key: in flight, done but not yet in the log,
// due later (timers), failed and retried, stops on the escalation ladder,
// runs accepted whose process.started is awaited. The loop decides which
// actions to start (act.go); only the loop goroutine touches the maps.
type executor struct {
	do      performer
	now     func() time.Time
	after   afterFunc
	logger  *slog.Logger
	wg      *sync.WaitGroup // the runner's: every goroutine started
	results chan result     // to the loop
	wake    chan<- work     // to the loop: a timer fired
	// hand, if set, takes each action instead of a goroutine of its own:
	// the caller performs it and reports its result through the loop's
	// finished step (Loop.Finished, the simulator's seam). Nil in
	// production.
	hand func(ctx context.Context, key string, a Action)

	// Owned by the loop goroutine.
	flights  map[string]*flight        // actions in flight, by key
	done     map[string]map[string]int // pkg -> keys performed whose result is not yet in the log
	timers   map[string]*armed         // by key: a delayed run or a retry
	retries  map[string]retry          // by key
	stops    map[string]*stopTrack     // by key: stops on the escalation ladder
	stopErr  map[string]string         // by key: why a guest stop failed last
	accepted map[string]*accepted      // by key: runs whose process.started is awaited
}

// afterFunc is the loop's timer seam: it calls f in its own goroutine
// after d (time.AfterFunc), or when a simulator says so.
type afterFunc func(d time.Duration, f func()) timer

// timer is a timer afterFunc started (*time.Timer).
type timer interface{ Stop() bool }

// realTimers is the afterFunc of the machine's clock.
func realTimers(d time.Duration, f func()) timer { return time.AfterFunc(d, f) }

func newExecutor(do performer, now func() time.Time, after afterFunc, logger *slog.Logger, wg *sync.WaitGroup, wake chan<- work) *executor {
	return &executor{do: do, now: now, after: after, logger: logger, wg: wg, results: make(chan result, 64), wake: wake,
		flights: map[string]*flight{}, done: map[string]map[string]int{}, timers: map[string]*armed{},
		retries: map[string]retry{}, stops: map[string]*stopTrack{}, stopErr: map[string]string{}, accepted: map[string]*accepted{}}
}

// performer does one action and reports a RunService's pid (actuator);
// appendFact appends an action's result, retrying until it is stored.
type performer interface {
	perform(ctx context.Context, a Action) (int, error)
	appendFact(ctx context.Context, e events.Event, opts ...events.AppendOption) error
}

// work is what a timer wakes the loop for: a package's decisions and
// actions, or the node's own membership work (nodeWork).
type work struct {
	pkg  string // the package; empty for node work
	node bool
}

// pkgWork is the work of package pkg.
func pkgWork(pkg string) work { return work{pkg: pkg} }

// workNode is the node's membership work (Runner.nodeWork).
var workNode = work{node: true}

// busy reports whether a guest action of pkg is in flight.
func (x *executor) busy(pkg string) bool {
	for _, f := range x.flights {
		if f.pkg == pkg && isGuestAction(f.kind) {
			return true
		}
	}
	return false
}

// forget drops what the log no longer asks for of pkg: every key of its
// that want does not hold (a guest start in flight is cancelled, e.g.
// halted while the guest was starting).
func (x *executor) forget(pkg string, want map[string]bool) {
	for k := range x.done[pkg] {
		if !want[k] {
			delete(x.done[pkg], k)
		}
	}
	for k, f := range x.flights {
		if f.pkg == pkg && !want[k] && f.kind == StartGuest {
			f.cancel()
		}
	}
	for k, t := range x.timers {
		if t.pkg == pkg && !want[k] {
			t.t.Stop()
			delete(x.timers, k)
		}
	}
	for k, rt := range x.retries {
		if rt.pkg == pkg && !want[k] {
			delete(x.retries, k)
		}
	}
	for k, tr := range x.stops {
		if tr.pkg == pkg && !want[k] {
			delete(x.stops, k)
			delete(x.stopErr, k)
		}
	}
	for k, ac := range x.accepted {
		if ac.pkg == pkg && !want[k] {
			delete(x.accepted, k)
		}
	}
}

// cancelAll cancels every action in flight (a fence, the lease lost).
func (x *executor) cancelAll() {
	for _, f := range x.flights {
		f.cancel()
	}
}

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
	pkg   string
	at    time.Time
	t     timer
	fired atomic.Bool // its wake was sent (or the loop is ending)
}

// arm wakes pkg at at (once per key, unless the timer already fired: the
// clock stepped back after it was armed, so that the action woken is not
// due yet, and it is armed again for the rest of the delay).
func (x *executor) arm(ctx context.Context, pkg, key string, at time.Time) {
	if t := x.timers[key]; t != nil && t.at.Equal(at) && !t.fired.Load() {
		return
	} else if t != nil {
		t.t.Stop()
	}
	d := max(at.Sub(x.now()), 0)
	a := &armed{pkg: pkg, at: at}
	x.timers[key] = a
	a.t = x.after(d, func() {
		a.fired.Store(true)
		select {
		case x.wake <- pkgWork(pkg):
		case <-ctx.Done():
		}
	})
}

// start performs a in its own goroutine (or hands it to hand).
func (x *executor) start(ctx context.Context, key string, a Action) {
	if t := x.timers[key]; t != nil {
		t.t.Stop()
		delete(x.timers, key)
	}
	actx, cancel := context.WithCancel(ctx)
	x.flights[key] = &flight{pkg: a.Package, kind: a.Kind, cancel: cancel}
	x.logger.Debug("action", "package", a.Package, "kind", a.Kind, "service", a.Service.Name, "request_id", a.RequestID)
	if x.hand != nil {
		x.hand(actx, key, a)
		return
	}
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		defer cancel()
		pid, err := x.do.perform(actx, a)
		select {
		case x.results <- result{a: a, key: key, err: err, pid: pid}:
		case <-ctx.Done():
		}
	}()
}

// backoff records a failure of the action key and when it may be tried
// again: 25 ms, doubling, at most 5 s.
func (x *executor) backoff(key, pkg string) retry {
	now := x.now()
	rt, ok := x.retries[key]
	if !ok {
		rt.since = now
	}
	rt.pkg = pkg
	rt.wait = min(max(2*rt.wait, firstRetry), maxRetry)
	rt.at = now.Add(rt.wait)
	x.retries[key] = rt
	return rt
}
