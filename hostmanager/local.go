package hostmanager

import (
	"maps"
	"slices"

	"github.com/vmguard/vmguard/events"
)

// Which packages an event about the cluster or a node makes a host manager
// look at. Only a package with an instance on this node or a placement on
// it (current or older, not yet released) can lead to a decision or an
// action here (Decide, the actuator); every other package of the cluster
// is skipped. Without this, each node.joined made every host manager run
// Decide over every package of the cluster: 1,000 joins × 1,000 host
// managers × 10,000 packages (`vmguard bench scale`).
//
// A package joins that set only by an event about itself (its placement)
// or by a catch-up's Install, and leaves it by an event about itself or
// by a node's loss or fence releasing its placements; the set is kept up
// to date on those, and built from every package once (a State decoded
// from JSON, whose unexported fields are empty).

// localCache holds the State's sorted package names and the packages that
// concern this node. Not part of the State's JSON: rebuilt from it.
type localCache struct {
	names []string // every package, sorted; nil: to rebuild

	built  bool                // local holds every package that concerns this node
	local  map[string]struct{} // packages that concern this node
	sorted []string            // local, sorted; nil: to rebuild
}

// concernsNode reports whether p has an instance on node or a placement on
// it not yet released.
func concernsNode(p *PackageState, node string) bool {
	if p.Inst != nil || p.Current.Epoch > 0 && p.Current.Node == node && !p.Current.Released {
		return true
	}
	for _, pl := range p.Prior {
		if pl.Node == node {
			return true
		}
	}
	return false
}

// noteLocal updates whether pkg concerns this node.
func (s *State) noteLocal(pkg string) {
	if !s.cache.built {
		return
	}
	p := s.Packages[pkg]
	_, was := s.cache.local[pkg]
	is := p != nil && concernsNode(p, s.Node)
	switch {
	case is && !was:
		s.cache.local[pkg] = struct{}{}
		s.cache.sorted = nil
	case was && !is:
		delete(s.cache.local, pkg)
		s.cache.sorted = nil
	}
}

// recheckLocal updates every package that concerns this node: an event
// about a node can only make packages leave the set.
func (s *State) recheckLocal() {
	if !s.cache.built {
		return
	}
	for _, pkg := range slices.Collect(maps.Keys(s.cache.local)) {
		s.noteLocal(pkg)
	}
}

// LocalNames returns, sorted, the packages with an instance on this node
// or a placement on it not yet released: the only ones an event about the
// cluster or a node can lead this node to decide or act on. The slice is
// shared: callers must not change it.
func (s *State) LocalNames() []string {
	if !s.cache.built {
		s.cache.local = map[string]struct{}{}
		for name, p := range s.Packages {
			if concernsNode(p, s.Node) {
				s.cache.local[name] = struct{}{}
			}
		}
		s.cache.built, s.cache.sorted = true, nil
	}
	if s.cache.sorted == nil {
		s.cache.sorted = slices.Sorted(maps.Keys(s.cache.local))
	}
	return slices.Clip(s.cache.sorted)
}

// localAfter keeps the set up to date after e was applied.
func (s *State) localAfter(e events.Event, scope events.Scope) {
	switch scope {
	case events.ScopePackage:
		s.noteLocal(e.Subject)
	case events.ScopeNode:
		switch e.Data.(type) {
		case events.NodeLost, events.NodeFenced:
			s.recheckLocal()
		}
	}
}
