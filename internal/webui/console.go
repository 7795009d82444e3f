// Package webui is vmguard's web console: one page, embedded in the binary,
// that shows the cluster, its nodes, packages and services as `vmguard
// status -v` does, the event timeline with filters, a package's explain
// chain and the state at any past sequence, live over server-sent events.
// The Console follows the log and keeps what it read in memory; the page
// asks it over a small JSON API. It is read-only: it never appends to the
// log, and its handlers change nothing.
package webui

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/failover"
)

// DefaultMaxEvents bounds the events a Console keeps in memory; past it the
// older half is dropped, and the state at a sequence before what is kept is
// folded again from the log.
const DefaultMaxEvents = 200_000

// Console follows the log and serves the web console. Create it with New,
// run Run, and serve Handler.
type Console struct {
	log       *events.Log
	logger    *slog.Logger
	maxEvents int

	mu        sync.Mutex
	state     *failover.State // the fold of everything read
	evs       []events.Event  // what was read, oldest first
	truncated bool            // evs no longer starts at the log's start
	subs      map[chan Event]struct{}
	caughtUp  bool
}

// Event is one event as the page shows it.
type Event struct {
	Seq     uint64    `json:"seq"`
	ID      string    `json:"id"`
	Cause   string    `json:"cause,omitempty"`
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Scope   string    `json:"scope"` // cluster, node or package
	Subject string    `json:"subject"`
	// Package and Node are what the event is about, when it says.
	Package string `json:"package,omitempty"`
	Node    string `json:"node,omitempty"`
	Summary string `json:"summary"`
}

// Config configures a Console.
type Config struct {
	// Log is the event log to follow (required).
	Log *events.Log
	// Logger receives the console's own log (default: discard).
	Logger *slog.Logger
	// MaxEvents bounds the events kept in memory (default DefaultMaxEvents).
	MaxEvents int
}

// New returns a console of cfg.Log.
func New(cfg Config) (*Console, error) {
	if cfg.Log == nil {
		return nil, fmt.Errorf("new console: log: missing")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = DefaultMaxEvents
	}
	return &Console{log: cfg.Log, logger: cfg.Logger, maxEvents: cfg.MaxEvents,
		state: &failover.State{}, subs: map[chan Event]struct{}{}}, nil
}

// Run follows the log until ctx ends.
func (c *Console) Run(ctx context.Context) error {
	last, err := c.log.LastSeq(ctx)
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	if last == 0 {
		c.setCaughtUp()
	}
	err = c.log.Follow(ctx, events.ReadOptions{OnSkip: c.skip}, func(e events.Event) error {
		c.apply(e)
		if e.Seq >= last {
			c.setCaughtUp()
		}
		return nil
	})
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("console: follow the log: %w", err)
}

func (c *Console) setCaughtUp() {
	c.mu.Lock()
	c.caughtUp = true
	c.mu.Unlock()
}

func (c *Console) skip(seq uint64, subject string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state.Skip(seq, subject)
}

// apply folds e, keeps it and hands it to every live page. A page that
// cannot keep up is dropped; its browser reconnects and catches up.
func (c *Console) apply(e events.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.state.Apply(e) {
		return
	}
	c.evs = append(c.evs, e)
	if len(c.evs) > c.maxEvents {
		c.evs = slices.Clone(c.evs[len(c.evs)/2:])
		c.truncated = true
	}
	pe := pageEvent(e)
	for ch := range c.subs {
		select {
		case ch <- pe:
		default:
			delete(c.subs, ch)
			close(ch)
		}
	}
}

// subscribe returns the kept events after seq and a channel of the ones
// that follow, in order, without a gap between the two.
func (c *Console) subscribe(after uint64) ([]Event, chan Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var backlog []Event
	for _, e := range c.evs[c.index(after+1):] {
		backlog = append(backlog, pageEvent(e))
	}
	ch := make(chan Event, 1024)
	c.subs[ch] = struct{}{}
	return backlog, ch
}

func (c *Console) unsubscribe(ch chan Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.subs[ch]; ok {
		delete(c.subs, ch)
		close(ch)
	}
}

// index returns the position in evs of the first event at or after seq.
// Caller holds mu.
func (c *Console) index(seq uint64) int {
	i, _ := slices.BinarySearchFunc(c.evs, seq, func(e events.Event, s uint64) int {
		switch {
		case e.Seq < s:
			return -1
		case e.Seq > s:
			return 1
		}
		return 0
	})
	return i
}

// Status is what the page shows of one moment.
type Status struct {
	// View is the cluster at Seq, as `vmguard status -o json` prints it.
	View failover.View `json:"view"`
	// Seq is the sequence shown, Last the last one read.
	Seq  uint64 `json:"seq"`
	Last uint64 `json:"last"`
	// First is the first sequence kept; time travel before it reads the log.
	First uint64 `json:"first"`
	// Live is true when the view is the latest state.
	Live bool `json:"live"`
	// CaughtUp is false while the console still reads the log's history.
	CaughtUp bool `json:"caught_up"`
}

// status returns the latest state, or the state at sequence at (0: latest).
func (c *Console) status(ctx context.Context, at uint64) (Status, error) {
	c.mu.Lock()
	st := Status{Last: c.state.Seq, CaughtUp: c.caughtUp}
	if len(c.evs) > 0 {
		st.First = c.evs[0].Seq
	}
	if at == 0 || at >= c.state.Seq {
		st.View, st.Seq, st.Live = failover.BuildView(c.state), c.state.Seq, true
		c.mu.Unlock()
		return st, nil
	}
	if !c.truncated {
		evs := c.evs[:c.index(at+1)]
		c.mu.Unlock()
		// evs is a prefix that apply never changes (it only appends or
		// replaces the slice), so it is read without the lock.
		st.View, st.Seq = failover.BuildView(failover.FoldUntil(evs, at)), at
		return st, nil
	}
	c.mu.Unlock()
	s := &failover.State{}
	_, err := c.log.Replay(ctx, events.ReadOptions{}, func(e events.Event) error {
		if e.Seq <= at {
			s.Apply(e)
		}
		return nil
	})
	if err != nil {
		return Status{}, fmt.Errorf("fold the log up to seq %d: %w", at, err)
	}
	st.View, st.Seq = failover.BuildView(s), at
	return st, nil
}

// Filter selects events for the timeline; empty fields select everything.
type Filter struct {
	Package, Node, Type string
	// Limit is how many of the latest matching events (default 500).
	Limit int
}

// timeline returns the latest events that match f, oldest first.
func (c *Console) timeline(f Filter) []Event {
	if f.Limit <= 0 {
		f.Limit = 500
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Event
	for i := len(c.evs) - 1; i >= 0 && len(out) < f.Limit; i-- {
		pe := pageEvent(c.evs[i])
		if f.matches(pe) {
			out = append(out, pe)
		}
	}
	slices.Reverse(out)
	return out
}

func (f Filter) matches(e Event) bool {
	return (f.Package == "" || e.Package == f.Package) && (f.Node == "" || e.Node == f.Node) && (f.Type == "" || e.Type == f.Type)
}

// explain returns the chain of causes behind pkg's state, latest first.
func (c *Console) explain(pkg string) []Event {
	c.mu.Lock()
	evs := c.evs // a prefix apply never changes, read without the lock
	c.mu.Unlock()
	var out []Event
	for _, e := range failover.Explain(evs, pkg) {
		out = append(out, pageEvent(e))
	}
	return out
}

// pageEvent returns e as the page shows it.
func pageEvent(e events.Event) Event {
	pe := Event{Seq: e.Seq, ID: e.ID, Cause: e.CauseID, Time: e.Time, Type: events.ShortType(e.Type()),
		Subject: e.Subject, Summary: e.Summary()}
	sc, _ := events.ScopeOf(e.Type())
	switch sc {
	case events.ScopeCluster:
		pe.Scope = "cluster"
	case events.ScopeNode:
		pe.Scope, pe.Node = "node", e.Subject
	case events.ScopePackage:
		pe.Scope, pe.Package = "package", e.Subject
		if v := reflect.ValueOf(e.Data); v.Kind() == reflect.Struct {
			if f := v.FieldByName("Node"); f.IsValid() && f.Kind() == reflect.String {
				pe.Node = f.String()
			}
		}
	}
	return pe
}
