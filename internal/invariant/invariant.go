// Package invariant checks a whole event log for the promises vmguard makes,
// so that `vmguard verify` and every end-to-end test can assert them on what
// really happened. The rules (Rule) are:
//
//   - one_epoch: a package never runs under two placements at once: when a
//     process of a package starts, every other live process of that package
//     belongs to the same epoch (a node.lost or node.fenced of a placement's
//     node ends that placement's processes: the fencing timeline stops a
//     node's guests before its lease can expire);
//   - released_first: nothing of a package starts (package.starting,
//     guest.started, process.started) under epoch N while a placement of an
//     older epoch is not yet released (package.halted or package.failed of
//     that epoch, or node.lost / node.fenced of its node after it was placed);
//   - cause: a cause an event names exists and comes before it; restarts,
//     failovers and the processes vmguard asked for must name one, of the
//     right kind: a restart an exit of that service; a failover placement
//     (which names the event that triggered the decision) only once the
//     placement it replaces is released;
//   - restart_policy: a service.restarting stays within the service's
//     restart limit (and restart_window) in the config in force, counted per
//     placement since the last package.reset;
//   - live_node: no start or restart is decided for a node that is lost or
//     fenced (until it joins again), nor for a placement a node loss
//     released; a placement stored while its node is lost or fenced (one
//     that raced the loss) is void: released at once (a note), so that
//     nothing may start it, not even after the node joins again;
//   - maintenance: no package is placed on a node an operator drained
//     (node.drained, until node.resumed) or froze (node.frozen, until
//     node.thawed); no placement moves a package away from a frozen node
//     while its placement there is not released; and no node.lost is
//     recorded for a frozen node (its guard is disarmed: a lapsed lease
//     there does not mean its guests are stopped); a frozen node's host
//     manager decides nothing (no start, restart, guest loss or service
//     failure on it written later than Options.Grace after the freeze);
//   - migration: a live migration hands one epoch over to the next without
//     two live ones: guest.migrated of epoch N to epoch M needs M to be a
//     later placement of the package, on the target node and placed with
//     migrate, and N not yet released; at that event N is released and its
//     live processes count as M's from then on (so nothing of M may start
//     before it, by released_first, and no process of N may start after
//     it, by one_epoch); every guest.migrating ends in guest.migrated or
//     guest.migration_failed within the driver's migrate bound plus Grace
//     (checked as bound);
//   - exclusion: two packages that exclude each other (a down dependency
//     in the config in force) never hold placements at once where a start
//     happens: no package.starting of one on a node while a placement of
//     the other there (same_node) or anywhere (all_nodes) is not released;
//   - bound: every package.starting and package.halting ends (started,
//     halting, halted, failed, or its node lost or fenced) within its
//     configured bound plus Options.Grace, by the event times; one still open
//     when the log ends is reported as open, not as a violation, unless a
//     later event shows its bound has passed.
//
// A multi-node package (package_type multi_node) runs one instance per node
// at once, each a placement of its own epoch; for it one_epoch and
// released_first are per node: no process starts under epoch N while a
// live process of another epoch of the package runs on N's node, and
// nothing starts under N while an older placement on N's node is not
// released. Its instances on other nodes are not a second placement.
//
// A process.started of a placement that a node.lost or node.fenced already
// released, stamped before that loss, is a late report (a guest agent's
// spool), noted and not counted live: the loss ended that placement's
// processes. So is one stamped before a guest.stopped of its epoch that
// the log holds before it: the stop ended it with the guest.
//
// Reports from guests (process.started, process.exited) are claims, not
// decisions: a process.started that answers no run request vmguard made is
// listed as unasked and does not count as a live process (a guest can write
// anything on its own subjects; the host does not act on such a claim).
//
// It is pure: a function of the events, in stream order, and the options.
package invariant

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// Rule names one promise the log must keep.
type Rule string

// The rules Verify checks (see the package comment).
const (
	RuleOneEpoch      Rule = "one_epoch"
	RuleReleasedFirst Rule = "released_first"
	RuleCause         Rule = "cause"
	RuleRestartPolicy Rule = "restart_policy"
	RuleLiveNode      Rule = "live_node"
	RuleBound         Rule = "bound"
	RuleMaintenance   Rule = "maintenance"
	RuleMigration     Rule = "migration"
	RuleExclusion     Rule = "exclusion"
)

// DefaultGrace is the slack Verify adds to each configured bound: the host
// manager's own reply timeouts and the scheduling noise of a loaded machine.
const DefaultGrace = 10 * time.Second

// Options tune Verify. The zero value checks the whole log with DefaultGrace.
type Options struct {
	// Grace is added to every configured bound (0: DefaultGrace).
	Grace time.Duration
	// From reports only problems at or after this stream sequence; the
	// events before it are still folded, because the rules need history.
	From uint64
}

// Violation is one broken promise, at the sequence of the event that broke
// it (for a bound: the starting or halting that did not end in time).
type Violation struct {
	Seq     uint64 `json:"seq"`
	Subject string `json:"subject"`
	Type    string `json:"type"`
	Rule    Rule   `json:"rule"`
	Message string `json:"message"`
}

// String formats v as "seq N subject type: message [rule]".
func (v Violation) String() string {
	return fmt.Sprintf("seq %d %s %s: %s [%s]", v.Seq, v.Subject, v.Type, v.Message, v.Rule)
}

// Open is a package.starting or package.halting that had not ended when the
// log ended, but whose bound had not passed by the last event's time either.
type Open struct {
	Seq      uint64    `json:"seq"`
	Package  string    `json:"package"`
	Type     string    `json:"type"`
	Node     string    `json:"node"`
	Epoch    uint64    `json:"epoch"`
	Deadline time.Time `json:"deadline"`
}

// Note is something worth a look that breaks no promise (an unasked
// process.started, a config that could not be read).
type Note struct {
	Seq     uint64 `json:"seq"`
	Subject string `json:"subject"`
	Message string `json:"message"`
}

// Report is the result of Verify.
type Report struct {
	Events     int         `json:"events"`
	FirstSeq   uint64      `json:"first_seq"`
	LastSeq    uint64      `json:"last_seq"`
	Violations []Violation `json:"violations"`
	Open       []Open      `json:"open"`
	Notes      []Note      `json:"notes"`
	// Checked counts, per rule, the events it looked at.
	Checked map[Rule]int `json:"checked"`
}

// OK reports whether the log keeps every promise.
func (r Report) OK() bool { return len(r.Violations) == 0 }

// Check returns one line per violation, in log order; none means the log
// keeps every promise. It is Verify with the zero Options.
func Check(evs []events.Event) []string {
	r := Verify(evs, Options{})
	out := make([]string, 0, len(r.Violations))
	for _, v := range r.Violations {
		out = append(out, v.String())
	}
	return out
}

// Verify folds evs, in stream order, and reports every broken promise.
func Verify(evs []events.Event, opts Options) Report {
	c := newChecker(opts, len(evs))
	for _, e := range evs {
		c.byID[e.ID] = e
	}
	for _, e := range evs {
		c.expire(e)
		c.apply(e)
	}
	if len(evs) > 0 {
		c.report.FirstSeq, c.report.LastSeq = evs[0].Seq, evs[len(evs)-1].Seq
	}
	return c.finish()
}

func newChecker(opts Options, n int) checker {
	if opts.Grace <= 0 {
		opts.Grace = DefaultGrace
	}
	return checker{
		opts:     opts,
		byID:     make(map[string]events.Event, n),
		pkgs:     map[string]*pkgState{},
		nodeDown: map[string]events.Event{},
		drained:  map[string]events.Event{},
		frozen:   map[string]events.Event{},
		report:   Report{Events: n, Checked: map[Rule]int{}},
	}
}

// finish lists the open actions and sorts the violations.
func (c *checker) finish() Report {
	r := c.report
	r.Open = nil
	for _, name := range sortedKeys(c.pkgs) {
		p := c.pkgs[name]
		for _, ep := range sortedKeys(p.open) {
			a := p.open[ep]
			r.Open = append(r.Open, Open{Seq: a.ev.Seq, Package: name, Type: events.ShortType(a.ev.Type()), Node: a.node, Epoch: ep, Deadline: a.deadline})
		}
	}
	r.Violations = slices.Clone(r.Violations)
	slices.SortStableFunc(r.Violations, func(a, b Violation) int { return cmpU(a.Seq, b.Seq) })
	return r
}

// Checker verifies a log as it grows, one event at a time, for a caller
// that must know at once when a promise breaks (the simulator checks after
// every step). It applies the rules Verify applies, with one difference:
// a cause that comes later in the log is reported as not in the log, since
// it is not yet when its effect is added.
type Checker struct{ c checker }

// NewChecker returns a Checker of an empty log.
func NewChecker(opts Options) *Checker {
	c := newChecker(opts, 0)
	return &Checker{c: c}
}

// Add checks e, the next event of the log in stream order, and returns the
// violations it revealed (none: every promise holds so far).
func (k *Checker) Add(e events.Event) []Violation {
	c := &k.c
	n := len(c.report.Violations)
	c.byID[e.ID] = e
	if c.report.Events == 0 {
		c.report.FirstSeq = e.Seq
	}
	c.report.Events++
	c.report.LastSeq = e.Seq
	c.expire(e)
	c.apply(e)
	return c.report.Violations[n:len(c.report.Violations):len(c.report.Violations)]
}

// Report returns what Verify would report for the events added so far.
func (k *Checker) Report() Report { return k.c.finish() }

// placement is one package.placed and whether it is released.
type placement struct {
	epoch    uint64
	node     string
	seq      uint64
	released bool
	// migrate is set when package.placed asked for a live migration.
	migrate bool
	// multi: placed while the config in force made the package
	// multi_node, an instance (its rules are per node) whatever the
	// config says later (design-notes §8, a changed package_type).
	multi bool
	// byLoss is the node.lost or node.fenced that released it, if one did.
	byLoss *events.Event
}

// proc is a live process of a package, by the agents' reports.
type proc struct {
	key   string
	epoch uint64
	seq   uint64
}

// action is an open package.starting or package.halting.
type action struct {
	ev       events.Event
	node     string
	deadline time.Time
}

// svcCount counts the restarts of one service under one placement.
type svcCount struct {
	n     int
	times []time.Time // exit times of the counted restarts
}

type pkgState struct {
	placements map[uint64]*placement
	alive      map[string]proc
	open       map[uint64]*action // epoch -> open starting/halting
	restarts   map[string]*svcCount
	// asked holds the ids of run requests vmguard made for this package.
	asked map[string]bool
	// stopped holds, per epoch, its last guest.stopped: the guest and
	// every process in it ended then.
	stopped map[uint64]events.Event
}

type checker struct {
	opts     Options
	byID     map[string]events.Event
	pkgs     map[string]*pkgState
	nodeDown map[string]events.Event // node -> the node.lost/fenced it is down since
	// drained and frozen hold the node.drained / node.frozen in force.
	drained, frozen map[string]events.Event
	cfg             *config.Cluster
	report          Report
}

func (c *checker) pkg(name string) *pkgState {
	p := c.pkgs[name]
	if p == nil {
		p = &pkgState{
			placements: map[uint64]*placement{},
			alive:      map[string]proc{},
			open:       map[uint64]*action{},
			restarts:   map[string]*svcCount{},
			asked:      map[string]bool{},
			stopped:    map[uint64]events.Event{},
		}
		c.pkgs[name] = p
	}
	return p
}

func (c *checker) fail(e events.Event, rule Rule, format string, args ...any) {
	if e.Seq < c.opts.From {
		return
	}
	c.report.Violations = append(c.report.Violations, Violation{
		Seq: e.Seq, Subject: e.Subject, Type: events.ShortType(e.Type()), Rule: rule,
		Message: fmt.Sprintf(format, args...),
	})
}

func (c *checker) note(e events.Event, format string, args ...any) {
	if e.Seq < c.opts.From {
		return
	}
	c.report.Notes = append(c.report.Notes, Note{Seq: e.Seq, Subject: e.Subject, Message: fmt.Sprintf(format, args...)})
}

// cause returns the event e names as its cause, checking it exists and
// comes before e.
func (c *checker) cause(e events.Event) (events.Event, bool) {
	c.report.Checked[RuleCause]++
	if e.CauseID == "" {
		c.fail(e, RuleCause, "names no cause")
		return events.Event{}, false
	}
	ce, ok := c.byID[e.CauseID]
	if !ok {
		c.fail(e, RuleCause, "cause %s is not in the log", e.CauseID)
		return events.Event{}, false
	}
	if ce.Seq >= e.Seq {
		c.fail(e, RuleCause, "cause %s (seq %d) comes after it", e.CauseID, ce.Seq)
	}
	return ce, true
}

// causeIfNamed checks the cause e names, if it names one: the host
// manager names one for every event, tools that write by hand may not.
func (c *checker) causeIfNamed(e events.Event) {
	if e.CauseID != "" {
		c.cause(e)
	}
}

// expire reports every open action whose bound passed before e's time.
func (c *checker) expire(e events.Event) {
	if c.nOpen() == 0 || e.Time.IsZero() {
		return
	}
	type late struct {
		p  *pkgState
		ep uint64
		a  *action
	}
	var lates []late
	for _, p := range c.pkgs {
		for ep, a := range p.open {
			if e.Time.After(a.deadline) {
				lates = append(lates, late{p, ep, a})
			}
		}
	}
	slices.SortFunc(lates, func(x, y late) int { return cmpU(x.a.ev.Seq, y.a.ev.Seq) })
	for _, l := range lates {
		a := l.a
		c.fail(a.ev, RuleBound, "%s on %s (epoch %d) did not end within its bound of %v (still open at seq %d, %v later)",
			events.ShortType(a.ev.Type()), a.node, l.ep, a.deadline.Sub(a.ev.Time).Round(time.Millisecond), e.Seq, e.Time.Sub(a.ev.Time).Round(time.Millisecond))
		delete(l.p.open, l.ep)
	}
}

// nOpen counts the open actions of every package.
func (c *checker) nOpen() int {
	n := 0
	for _, p := range c.pkgs {
		n += len(p.open)
	}
	return n
}

// apply checks event e against the rules and folds it into the checker.
//
// Longer than 80 lines: one switch over event types, a case per rule it
// checks; the checker reads best as one place where each event's checks
// are seen (docs/design-notes.md §5).
func (c *checker) apply(e events.Event) {
	switch d := e.Data.(type) {
	case events.ConfigApplied:
		cfg, err := config.FromJSON(d.Config)
		if err != nil {
			c.note(e, "config cannot be read, the previous one stays in force: %v", err)
			return
		}
		c.cfg = cfg
	case events.NodeJoined:
		delete(c.nodeDown, e.Subject)
	case events.NodeDrained:
		c.drained[e.Subject] = e
	case events.NodeResumed:
		delete(c.drained, e.Subject)
	case events.NodeFrozen:
		c.frozen[e.Subject] = e
	case events.NodeThawed:
		if _, ok := c.frozen[e.Subject]; !ok {
			c.note(e, "node %s thawed but not frozen", e.Subject)
		}
		delete(c.frozen, e.Subject)
	case events.NodeLost, events.NodeFenced:
		if _, lost := d.(events.NodeLost); lost {
			c.report.Checked[RuleMaintenance]++
			if f, ok := c.frozen[e.Subject]; ok {
				c.fail(e, RuleMaintenance, "node %s recorded lost while frozen (node.frozen at seq %d)", e.Subject, f.Seq)
			}
		}
		c.nodeDown[e.Subject] = e
		for _, p := range c.pkgs {
			for ep, pl := range p.placements {
				if pl.node != e.Subject || pl.seq >= e.Seq {
					continue
				}
				// The fencing timeline (DESIGN §10) makes a node's loss or
				// fence mean its guests are stopped: the self-fence and the
				// node guard act inside node_timeout. Their exits may never
				// be reported (the guest was stopped with them).
				for k, pr := range p.alive {
					if pr.epoch == ep {
						delete(p.alive, k)
					}
				}
				if !pl.released {
					pl.released, pl.byLoss = true, &e
					delete(p.open, ep)
				}
			}
		}
	case events.PackagePlaced:
		c.placed(e, d)
	case events.PackageStarting:
		c.frozenHost(e, d.Node)
		c.causeIfNamed(e)
		c.liveNode(e, d.Node, d.Epoch)
		c.releasedFirst(e, d.Epoch)
		c.exclusion(e, d.Node)
		p := c.pkg(e.Subject)
		delete(p.open, d.Epoch)
		if pl := p.placements[d.Epoch]; pl == nil || !pl.released {
			p.open[d.Epoch] = &action{ev: e, node: d.Node, deadline: e.Time.Add(c.startBound(e.Subject))}
		}
	case events.PackageStarted:
		c.causeIfNamed(e)
		delete(c.pkg(e.Subject).open, d.Epoch)
	case events.PackageHalting:
		if d.By == "" {
			c.causeIfNamed(e)
		}
		p := c.pkg(e.Subject)
		node := d.Node
		pl := p.placements[d.Epoch]
		if node == "" && pl != nil {
			node = pl.node
		}
		if pl != nil && !pl.released {
			p.open[d.Epoch] = &action{ev: e, node: node, deadline: e.Time.Add(c.haltBound(e.Subject))}
		}
	case events.PackageHalted:
		c.causeIfNamed(e)
		c.ended(e, d.Epoch)
	case events.PackageFailed:
		c.causeIfNamed(e)
		c.ended(e, d.Epoch)
	case events.GuestStarted:
		c.causeIfNamed(e)
		c.releasedFirst(e, d.Epoch)
		p := c.pkg(e.Subject)
		p.asked[e.ID] = true
	case events.GuestStopped:
		c.causeIfNamed(e)
		c.clearProcs(e.Subject, d.Epoch)
		c.pkg(e.Subject).stopped[d.Epoch] = e
	case events.GuestMigrating:
		c.causeIfNamed(e)
		c.liveNode(e, d.Node, d.Epoch)
		p := c.pkg(e.Subject)
		if pl := p.placements[d.Epoch]; pl != nil && !pl.released {
			p.open[d.Epoch] = &action{ev: e, node: d.Node, deadline: e.Time.Add(c.migrateBound(e.Subject))}
		}
	case events.GuestMigrationFailed:
		c.causeIfNamed(e)
		delete(c.pkg(e.Subject).open, d.Epoch)
	case events.GuestMigrated:
		c.migrated(e, d)
	case events.PackageReset:
		// `pkg reset` starts the counters again (of one service or all),
		// as the host manager does (found by the simulator, sim seed 498).
		p := c.pkg(e.Subject)
		for k := range p.restarts {
			if _, svc, _ := strings.Cut(k, "/"); d.Service == "" || svc == d.Service {
				delete(p.restarts, k)
			}
		}
	case events.ServiceRestarting:
		c.frozenHost(e, d.Node)
		c.restarting(e, d)
	case events.GuestLost:
		c.frozenHost(e, d.Node)
	case events.ServiceFailed:
		c.frozenHost(e, d.Node)
		c.causeIfNamed(e)
	case events.ProcessStarted:
		c.processStarted(e, d)
	case events.ProcessExited:
		delete(c.pkg(e.Subject).alive, fmt.Sprintf("%s/%d", d.Guest, d.PID))
	}
}

func (c *checker) placed(e events.Event, d events.PackagePlaced) {
	p := c.pkg(e.Subject)
	pl := &placement{epoch: d.Epoch, node: d.Node, seq: e.Seq, migrate: d.Migrate}
	if c.cfg != nil {
		cp, ok := c.cfg.Package(e.Subject)
		pl.multi = ok && cp.MultiNode()
	}
	if down, ok := c.nodeDown[d.Node]; ok {
		// Void: a placement decided before its maker read the loss (its
		// append is guarded by the package's sequence only). Both cores
		// count it released at once; starting it is a violation.
		c.report.Checked[RuleLiveNode]++
		c.note(e, "placed on node %s, %s at seq %d and not joined since: void, released at once", d.Node, events.ShortType(down.Type()), down.Seq)
		pl.released, pl.byLoss = true, &down
	}
	c.maintenance(e, p, d)
	p.placements[d.Epoch] = pl
	if d.By != "" {
		return // an operator's command is its own cause
	}
	reason := d.Reason
	if i := strings.IndexAny(reason, ": "); i > 0 {
		reason = reason[:i]
	}
	if reason != "failover" && reason != "node_lost" {
		// A first placement answers a join or a config; the controller
		// names it, tools that place by hand may not.
		c.causeIfNamed(e)
		return
	}
	// A failover names the event that triggered the decision (Decide's
	// trigger: any event of the package or its nodes); what must hold is
	// that the placement it replaces (the latest before it) was released
	// first. An older one may still be halting (a move whose target was
	// lost before it started): the new placement's node waits for it, which
	// released_first checks on whatever starts.
	c.cause(e)
	var prev *placement
	for _, ep := range sortedKeys(p.placements) {
		if ep < d.Epoch {
			prev = p.placements[ep]
		}
	}
	if prev != nil && !prev.released {
		c.fail(e, RuleCause, "%s placement while epoch %d on %s (placed at seq %d) is neither failed, halted nor lost", reason, prev.epoch, prev.node, prev.seq)
	}
}

// migrated checks a guest.migrated and hands epoch d.Epoch over to
// d.TargetEpoch: the source placement is released and its live processes
// belong to the target from now on.
func (c *checker) migrated(e events.Event, d events.GuestMigrated) {
	c.causeIfNamed(e)
	c.report.Checked[RuleMigration]++
	p := c.pkg(e.Subject)
	src, dst := p.placements[d.Epoch], p.placements[d.TargetEpoch]
	switch {
	case src == nil:
		c.fail(e, RuleMigration, "migrates epoch %d, which was never placed", d.Epoch)
	case src.released:
		c.fail(e, RuleMigration, "migrates epoch %d on %s, already released: its guest was to be stopped", d.Epoch, src.node)
	}
	switch {
	case dst == nil || d.TargetEpoch <= d.Epoch:
		c.fail(e, RuleMigration, "migrates to epoch %d, not a later placement of the package", d.TargetEpoch)
	case dst.node != d.TargetNode:
		c.fail(e, RuleMigration, "migrates to node %s, but epoch %d is placed on %s", d.TargetNode, d.TargetEpoch, dst.node)
	case !dst.migrate:
		c.fail(e, RuleMigration, "migrates to epoch %d, whose placement did not ask for a migration", d.TargetEpoch)
	case dst.released:
		c.fail(e, RuleMigration, "migrates to epoch %d, already released", d.TargetEpoch)
	}
	if src != nil {
		src.released = true
	}
	delete(p.open, d.Epoch)
	for k, pr := range p.alive {
		if pr.epoch == d.Epoch {
			pr.epoch = d.TargetEpoch
			p.alive[k] = pr
		}
	}
}

// ended records a package.halted or package.failed of epoch.
func (c *checker) ended(e events.Event, epoch uint64) {
	p := c.pkg(e.Subject)
	if pl := p.placements[epoch]; pl != nil {
		pl.released = true
	}
	delete(p.open, epoch)
	c.clearProcs(e.Subject, epoch)
}

// clearProcs forgets the live processes of epoch: a guest.stopped, a
// package.halted or package.failed says none of them runs any more.
func (c *checker) clearProcs(pkg string, epoch uint64) {
	p := c.pkg(pkg)
	for k, pr := range p.alive {
		if pr.epoch == epoch {
			delete(p.alive, k)
		}
	}
}

// liveNode reports a decision for node while it is lost or fenced, or for
// a placement (epoch > 0) a node loss released.
func (c *checker) liveNode(e events.Event, node string, epoch uint64) {
	c.report.Checked[RuleLiveNode]++
	if down, ok := c.nodeDown[node]; ok {
		c.fail(e, RuleLiveNode, "acts on node %s, %s at seq %d and not joined since", node, events.ShortType(down.Type()), down.Seq)
		return
	}
	if epoch == 0 {
		return
	}
	if pl := c.pkg(e.Subject).placements[epoch]; pl != nil && pl.byLoss != nil {
		c.fail(e, RuleLiveNode, "acts on epoch %d on %s, released by %s at seq %d", epoch, pl.node, events.ShortType(pl.byLoss.Type()), pl.byLoss.Seq)
	}
}

// maintenance reports a placement on a drained or frozen node, or away
// from a frozen node whose placement of the package is not released.
func (c *checker) maintenance(e events.Event, p *pkgState, d events.PackagePlaced) {
	c.report.Checked[RuleMaintenance]++
	if h, ok := c.drained[d.Node]; ok {
		c.fail(e, RuleMaintenance, "placed on node %s, drained at seq %d and not run since", d.Node, h.Seq)
	}
	if h, ok := c.frozen[d.Node]; ok {
		c.fail(e, RuleMaintenance, "placed on node %s, frozen at seq %d and not thawed since", d.Node, h.Seq)
	}
	for _, ep := range sortedKeys(p.placements) {
		pl := p.placements[ep]
		if h, ok := c.frozen[pl.node]; ok && ep < d.Epoch && !pl.released && pl.node != d.Node {
			c.fail(e, RuleMaintenance, "moved away from node %s (epoch %d, not released), frozen at seq %d", pl.node, ep, h.Seq)
		}
	}
}

// frozenHost reports a decision of a frozen node's host manager (a start,
// a restart, a guest loss, a service failure) written more than Grace after
// the freeze: one written just after it was decided before the host
// manager read the freeze (its appends are guarded by the package's
// subjects, not the node's).
func (c *checker) frozenHost(e events.Event, node string) {
	c.report.Checked[RuleMaintenance]++
	if f, ok := c.frozen[node]; ok && e.Time.After(f.Time.Add(c.opts.Grace)) {
		c.fail(e, RuleMaintenance, "decided on node %s, frozen at seq %d (%v before)", node, f.Seq, e.Time.Sub(f.Time).Round(time.Millisecond))
	}
}

// exclusion reports a start of e's package on node while a package it
// excludes holds a placement that is not released there (same_node) or
// anywhere (all_nodes).
func (c *checker) exclusion(e events.Event, node string) {
	if c.cfg == nil {
		return
	}
	cp, ok := c.cfg.Package(e.Subject)
	if !ok {
		return
	}
	for _, d := range cp.Dependencies {
		if d.Condition != config.DependDown {
			continue
		}
		c.report.Checked[RuleExclusion]++
		other := c.pkgs[d.Name]
		if other == nil {
			continue
		}
		for _, ep := range sortedKeys(other.placements) {
			pl := other.placements[ep]
			if !pl.released && (d.Where() == config.AllNodes || pl.node == node) {
				c.fail(e, RuleExclusion, "starts on %s while %s, which it excludes (%s), holds epoch %d on %s (placed at seq %d)", node, d.Name, d.Where(), ep, pl.node, pl.seq)
			}
		}
	}
}

// releasedFirst reports a start under epoch while an older placement of the
// package is not released.
func (c *checker) releasedFirst(e events.Event, epoch uint64) {
	c.report.Checked[RuleReleasedFirst]++
	p := c.pkg(e.Subject)
	node, multi := c.instanceNode(e.Subject, epoch)
	for _, ep := range sortedKeys(p.placements) {
		pl := p.placements[ep]
		if multi && pl.multi && pl.node != node {
			continue // another node's instance of a multi-node package
		}
		if ep < epoch && !pl.released {
			c.fail(e, RuleReleasedFirst, "epoch %d starts while epoch %d on %s (placed at seq %d) is not released", epoch, ep, pl.node, pl.seq)
		}
	}
}

func (c *checker) restarting(e events.Event, d events.ServiceRestarting) {
	ce, ok := c.cause(e)
	if ok {
		x, isExit := ce.Data.(events.ProcessExited)
		if !isExit || x.Service != d.Service || ce.Subject != e.Subject {
			c.fail(e, RuleCause, "restart of %s is caused by %s, not by an exit of that service", d.Service, events.ShortType(ce.Type()))
			ok = false
		}
	}
	c.liveNode(e, d.Node, d.Epoch)
	p := c.pkg(e.Subject)
	p.asked[e.ID] = true
	key := fmt.Sprintf("%d/%s", d.Epoch, d.Service)
	sc := p.restarts[key]
	if sc == nil {
		sc = &svcCount{}
		p.restarts[key] = sc
	}
	at := e.Time
	if ok {
		at = ce.Time // the window counts exits, as the host manager does
	}
	spec, known := c.service(e.Subject, d.Service)
	if !known {
		sc.n++
		return
	}
	c.report.Checked[RuleRestartPolicy]++
	used := sc.n
	if w := spec.RestartWindow.D(); w > 0 {
		used = 0
		for _, t := range sc.times {
			if t.After(at.Add(-w)) {
				used++
			}
		}
	}
	if !spec.Restart.Allows(used) {
		how := ""
		if w := spec.RestartWindow.D(); w > 0 {
			how = fmt.Sprintf(" within restart_window %v", w)
		}
		c.fail(e, RuleRestartPolicy, "restart of %s on %s (epoch %d) after %d restarts%s; restart: %s allows no more", d.Service, d.Node, d.Epoch, used, how, spec.Restart)
	}
	sc.n++
	sc.times = append(sc.times, at)
}

func (c *checker) processStarted(e events.Event, d events.ProcessStarted) {
	p := c.pkg(e.Subject)
	req, _, _ := strings.Cut(d.RequestID, "/")
	if !p.asked[req] {
		c.note(e, "process %s/%d of %s (epoch %d) answers no run request vmguard made (request %s): a guest's claim, ignored",
			d.Guest, d.PID, d.Service, d.Epoch, d.RequestID)
		return
	}
	c.cause(e)
	if pl := p.placements[d.Epoch]; pl != nil && pl.byLoss != nil && e.Time.Before(pl.byLoss.Time) {
		// A late report (an agent's spool delivered after its node was cut
		// off) of a start the agent saw before the loss: the loss ended this
		// placement's processes, as it ends those reported in time (found
		// by the simulator, sim seed 171). A start stamped after the loss
		// means the fence did not stop the guest: that one counts.
		c.note(e, "process %s/%d of %s reported started after %s at seq %d released epoch %d: a late report, not a live process",
			d.Guest, d.PID, d.Service, events.ShortType(pl.byLoss.Type()), pl.byLoss.Seq, d.Epoch)
		return
	}
	if gs, ok := p.stopped[d.Epoch]; ok && e.Time.Before(gs.Time) {
		// A late report of a start the agent saw before its guest was
		// stopped (its append was delayed past the guest.stopped): the
		// stop ended it with the guest (found by the simulator, sim seed
		// 4651: a forced stop, then package.failed, then the start).
		c.note(e, "process %s/%d of %s reported started after guest.stopped at seq %d of epoch %d: a late report, not a live process",
			d.Guest, d.PID, d.Service, gs.Seq, d.Epoch)
		return
	}
	c.releasedFirst(e, d.Epoch)
	c.report.Checked[RuleOneEpoch]++
	node, multi := c.instanceNode(e.Subject, d.Epoch)
	for _, k := range sortedKeys(p.alive) {
		pr := p.alive[k]
		if multi {
			if other, instance := c.instanceNode(e.Subject, pr.epoch); instance && other != node {
				continue // another node's instance of a multi-node package
			}
		}
		if pr.epoch != d.Epoch {
			c.fail(e, RuleOneEpoch, "process of epoch %d starts while %s of epoch %d (started at seq %d) still runs: two placements at once", d.Epoch, pr.key, pr.epoch, pr.seq)
		}
	}
	key := fmt.Sprintf("%s/%d", d.Guest, d.PID)
	p.alive[key] = proc{key: key, epoch: d.Epoch, seq: e.Seq}
}

// instanceNode returns the node of pkg's placement of epoch, and whether
// it is an instance of a multi-node package (its rules are per node): by
// the config in force when it was placed, or for a placement not seen by
// the config in force.
func (c *checker) instanceNode(pkg string, epoch uint64) (string, bool) {
	if pl := c.pkg(pkg).placements[epoch]; pl != nil {
		return pl.node, pl.multi
	}
	if c.cfg == nil {
		return "", false
	}
	cp, ok := c.cfg.Package(pkg)
	return "", ok && cp.MultiNode()
}

// service returns the policy of a service in the config in force.
func (c *checker) service(pkg, name string) (config.Service, bool) {
	if c.cfg == nil {
		return config.Service{}, false
	}
	cp, ok := c.cfg.Package(pkg)
	if !ok {
		return config.Service{}, false
	}
	return cp.Service(name)
}

// startBound is how long a package.starting may stay open: the driver's
// start command, then start_timeout for the agent's first heartbeat, plus
// the grace.
func (c *checker) startBound(pkg string) time.Duration {
	start, driver := config.DefaultStartTimeout, time.Duration(0)
	if c.cfg != nil {
		if cp, ok := c.cfg.Package(pkg); ok {
			if t := cp.Guest.StartTimeout.D(); t > 0 {
				start = t
			}
			if cp.Guest.Exec != nil {
				driver = cp.Guest.Exec.Timeout.D()
				if driver <= 0 {
					driver = config.DefaultExecTimeout
				}
			}
		}
	}
	return driver + start + c.opts.Grace
}

// migrateBound is how long a guest.migrating may stay open: the exec
// driver's migrate_timeout (or the process driver's bound), plus the grace.
func (c *checker) migrateBound(pkg string) time.Duration {
	d := config.DefaultProcessMigrateTimeout
	if c.cfg != nil {
		if cp, ok := c.cfg.Package(pkg); ok && cp.Guest.Exec != nil {
			d = config.DefaultMigrateTimeout
			if t := cp.Guest.Exec.MigrateTimeout.D(); t > 0 {
				d = t
			}
		}
	}
	return d + c.opts.Grace
}

// haltBound is how long a package.halting may stay open: every service's
// halt_timeout (SIGTERM, then SIGKILL), then the driver's stop command,
// plus the grace.
func (c *checker) haltBound(pkg string) time.Duration {
	halt, driver := config.DefaultHaltTimeout, time.Duration(0)
	if c.cfg != nil {
		if cp, ok := c.cfg.Package(pkg); ok {
			halt = 0
			for _, s := range cp.Services {
				t := s.HaltTimeout.D()
				if t <= 0 {
					t = config.DefaultHaltTimeout
				}
				halt += t
			}
			if cp.Guest.Exec != nil {
				driver = cp.Guest.Exec.Timeout.D()
				if driver <= 0 {
					driver = config.DefaultExecTimeout
				}
			}
		}
	}
	return halt + driver + c.opts.Grace
}

func sortedKeys[K interface{ ~string | ~uint64 }, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
