package hostmanager

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sort"
	"sync"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// What a host manager reads (DESIGN.md §11, issue 12 item 2).
//
// A host manager does not read the whole log. It reads, in stream order,
// on one consumer (the main read): the cluster's subjects, every node's
// subjects (few events: joins, losses, fences, freezes), and the whole
// subject space of each package that concerns it: a package placed on
// this node at least once (its "concern set"). Beside it, a second
// consumer (the index) reads this node's placement markers
// (placement.noted on vmguard.events.placement.<node>.noted, appended in
// one atomic batch with every package.placed, design-notes §10), and
// nothing else, to learn when a package starts to concern this node.
// (Until session 9 the index read every package.placed of the cluster:
// nodes × placements messages, which is what kept 1,000 nodes from
// coming up. A log written before markers existed has placements without
// one: the start reads those once, oldPlacements.)
//
// The race between "placement seen" and "package added to the filter" is
// closed by anchoring the addition on the main read's position, not on the
// placement's: when the index sees package P placed on this node, the main
// read stops at the next stream sequence M it has not delivered, P's
// history below M is folded on its own (a catch-up: P's subjects and every
// node.lost, node.fenced and node.joined, in stream order, below M; read
// from P's first package.placed on, the nodes' events before it taken from
// what the main read delivered), the result is
// installed in the state, and the main read resumes at M with P in its
// filter. Whether the index is ahead of the main read or behind it, every
// event of P is folded exactly once and in stream order relative to what
// P's fold depends on (P's own events, node losses, fences and joins, this node).
// A package's fold does not depend on other packages, so the state of each
// package in the concern set is the state a fold of the whole log gives;
// packages outside it are what the configuration names (empty: nothing
// placed here, nothing to decide). A restart computes the concern set from
// the index first (every placement on this node in the log), then folds
// the main read: the same state for every package it may act on.
//
// The one approximation: a catch-up folds P's events with the
// configuration in force at M, not the one in force at each event, and
// without this node's node.resource_set events (its filters may not
// overlap node.*.lost); both matter only for an instance of P on this node
// started before M, which needs a package.starting that this node appended
// while P was outside its concern set: a previous run of this host manager
// that saw the placement first. Packages never leave the concern set while
// the runner runs, and a restart finds their placements in the log again.

// placedFilter matches every package.placed: what the start reads of a
// log's placements from before its first marker (oldPlacements).
var placedFilter = events.PackageSubject("*", "package", "placed")

// markersFilter matches every node's placement markers.
const markersFilter = "vmguard.events.placement.>"

// downFilters match every node.lost, node.fenced and node.joined: a loss
// or fence releases the placements on its node, and a placement on a node
// lost or fenced and not joined since is void, so a catch-up folds them
// with the package.
var downFilters = []string{events.NodeSubject("*", "lost"), events.NodeSubject("*", "fenced"), events.NodeSubject("*", "joined")}

// nodesFilter matches every node's events.
const nodesFilter = "vmguard.events.node.>"

// mainSubjects returns the main read's filter for the concern set pkgs.
func mainSubjects(pkgs map[string]bool) []string {
	subs := []string{events.ClusterFilter, nodesFilter}
	for _, p := range sortedKeys(pkgs) {
		subs = append(subs, events.PackageFilter(p))
	}
	return subs
}

// catchUpSubjects returns what a catch-up of pkgs reads.
func catchUpSubjects(pkgs []string) []string {
	subs := slices.Clone(downFilters)
	for _, p := range pkgs {
		subs = append(subs, events.PackageFilter(p))
	}
	return subs
}

// placedHere returns the package e places on node, if it is a
// placement.noted about node or a package.placed naming node.
func placedHere(e events.Event, node string) (string, bool) {
	switch d := e.Data.(type) {
	case events.PlacementNoted:
		if e.Subject == node && events.ValidName(d.Package) {
			return d.Package, true
		}
	case events.PackagePlaced:
		if d.Node == node && events.ValidName(e.Subject) {
			return e.Subject, true
		}
	}
	return "", false
}

// oldPlacements returns where the placements written before the log's
// first marker are: the range [from, to) to read (to 0: to the log's
// end), and false if there are none, as in any log written since markers
// exist, where each placement is stored after its marker. The upgrade rule
// this relies on (README): every writer of placements (controllers,
// operators' CLIs) runs a version that writes markers before any host
// manager that reads them.
func oldPlacements(ctx context.Context, log logReader) (from, to uint64, ok bool, err error) {
	first, found, err := log.First(ctx, placedFilter, 1)
	if err != nil || !found {
		return 0, 0, false, err
	}
	marker, found, err := log.First(ctx, markersFilter, 1)
	if err != nil {
		return 0, 0, false, err
	}
	if found && marker < first {
		return 0, 0, false, nil
	}
	if !found {
		marker = 0
	}
	return first, marker, true, nil
}

func sortedKeys(m map[string]bool) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// catchUp folds the history of packages below a sequence on its own: the
// packages' events and every node loss and fence, in stream order, onto an
// empty state of the node holding cfg.
type catchUp struct {
	st      *State
	through uint64
}

// newCatchUp returns a catch-up of node's packages through seq through,
// with cfg as the configuration in force.
func newCatchUp(node string, cfg *config.Cluster, through uint64) *catchUp {
	st := NewState(node)
	st.Config = cfg
	return &catchUp{st: st, through: through}
}

// seed sets the nodes' last loss or fence and last join before sequence
// from, as a fold of downs (in stream order) below from leaves them: a
// catch-up that starts at from folds what it reads on top.
func (c *catchUp) seed(downs []nodeMark, from uint64) {
	st := c.st
	for _, d := range downs {
		if d.seq >= from {
			break
		}
		st.NodeSeqs[d.node] = d.seq
		if _, ok := d.data.(events.NodeJoined); ok {
			st.NodeJoined[d.node] = d.seq
		} else {
			st.NodeDown[d.node] = d.seq
		}
	}
}

// caught is a message a catch-up read by direct get: an event, or a
// malformed message on subject skip.
type caught struct {
	seq  uint64
	e    events.Event
	skip string
}

// fold applies the packages' messages few and the nodes' events in downs
// from sequence from on, in stream order, up to the bound.
func (c *catchUp) fold(few []caught, downs []nodeMark, from uint64) {
	i := sort.Search(len(downs), func(i int) bool { return downs[i].seq >= from })
	for _, d := range downs[i:] {
		few = append(few, caught{seq: d.seq, e: d.event()})
	}
	slices.SortFunc(few, func(a, b caught) int { return cmp.Compare(a.seq, b.seq) })
	for _, m := range few {
		if m.skip != "" {
			c.skipped(m.seq, m.skip)
		} else if !c.apply(m.e) {
			return
		}
	}
}

// apply folds e and reports whether it was at or below the bound (false:
// the catch-up is complete, stop reading).
func (c *catchUp) apply(e events.Event) bool {
	if e.Seq > c.through {
		return false
	}
	c.st.Apply(e)
	return true
}

// skipped records a malformed message at or below the bound.
func (c *catchUp) skipped(seq uint64, subject string) {
	if seq <= c.through {
		c.st.Skip(seq, subject)
	}
}

// packages returns the folded state of pkgs (an empty one for a package
// with no event).
func (c *catchUp) packages(pkgs []string) map[string]*PackageState {
	out := make(map[string]*PackageState, len(pkgs))
	for _, p := range pkgs {
		out[p] = c.st.pkg(p)
	}
	return out
}

// Install puts p, folded by a catch-up through a sequence below every
// event of p's package not yet applied, in place of what s knew of its
// package (nothing, or an entry the configuration made).
func (s *State) Install(p *PackageState) {
	if _, ok := s.Packages[p.Name]; !ok {
		s.cache.names = nil
	}
	s.Packages[p.Name] = p
	s.Seq = max(s.Seq, p.Seq)
	s.noteLocal(p.Name)
}

// addQueue carries the packages the index found placed on this node to
// the main read, and stops the main read's current consumer so that it
// takes them in.
type addQueue struct {
	mu     sync.Mutex
	pkgs   []string
	cancel context.CancelFunc
}

// add queues pkg and stops the main read's consumer.
func (q *addQueue) add(pkg string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pkgs = append(q.pkgs, pkg)
	if q.cancel != nil {
		q.cancel()
	}
}

// take returns and clears the queue.
func (q *addQueue) take() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	p := q.pkgs
	q.pkgs = nil
	return p
}

// putBack queues pkgs again (a catch-up failed).
func (q *addQueue) putBack(pkgs []string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pkgs = append(pkgs, q.pkgs...)
}

// arm registers the cancel of the main read's consumer; false if packages
// are queued already (take them first).
func (q *addQueue) arm(cancel context.CancelFunc) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pkgs) > 0 {
		return false
	}
	q.cancel = cancel
	return true
}

// disarm forgets the cancel and reports whether packages are queued.
func (q *addQueue) disarm() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.cancel = nil
	return len(q.pkgs) > 0
}

// errCaughtUp stops a catch-up's replay at its bound.
var errCaughtUp = errors.New("caught up")

// Lag returns how many events of what the runner reads the server held
// behind the last one its main read received: 0 when it is caught up.
// (The log's last sequence minus the last sequence read is no measure of
// a reader that skips what does not concern it.)
func (r *Runner) Lag() uint64 { return r.reader.mainReads.Pending.Load() }

// ReadStats is what a runner's reads of the log received since it
// started: messages and their bytes (subject, headers, payload), the
// consumers they asked the server for, those found made after their
// create got no answer in time, and those read on after late heartbeats
// (events.ReadCount).
type ReadStats struct {
	Messages, Bytes, Creates, Late, Kept uint64
}

// ReadStats returns what the runner's reads of the log received since it
// started.
func (r *Runner) ReadStats() ReadStats { return r.reader.stats() }
