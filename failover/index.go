package failover

import (
	"cmp"
	"maps"
	"slices"

	"github.com/vmguard/vmguard/config"
)

// The controller's per-event work is proportional to what the event
// touches, not to the package count (issue 12: at 10,000 packages a
// Decide that walked every package for every event fell minutes behind the
// log). Two indexes serve it:
//   - configIndex, derived once from the configuration in force (a
//     configuration is never changed in place, only replaced): the order
//     due decides packages in, the packages listing each node, the
//     dependency links either way, a package's position by name;
//   - stateIndex, kept by Apply: the packages whose current placement is on
//     each node and the load (packages placed, starting or running) of each
//     node. It is built from the packages on first use and updated for each
//     package an event changes (a package's own events; a node lost,
//     fenced or halted changes those on it, in the fold's own pass over
//     the packages).
//
// Neither is serialized: a State decoded from JSON (a snapshot) or built as
// a literal rebuilds them on first use, and Clone copies them.

// configIndex is what due, Decide and Linked need of one configuration,
// computed once. Packages are named by their index in cfg.Packages.
type configIndex struct {
	cfg *config.Cluster
	// order lists the packages in the order due decides them: by priority
	// (highest first), then the packages without one in configuration
	// order, so that a higher-priority package takes a node before a lower
	// one in the same pass. pos is its inverse: pos[i] is package i's place
	// in order.
	order, pos []int
	// byName holds the index of each name's packages (one unless the
	// configuration repeats a name), ascending.
	byName map[string][]int
	// listedOn holds, for each node, the packages listing it.
	listedOn map[string][]int
	// usedBy holds, for each name a dependency names, the packages with
	// such a dependency.
	usedBy map[string][]int
	// dependent lists the packages with a dependency or named by one: a
	// node event concerns them all.
	dependent []int
}

func newConfigIndex(c *config.Cluster) *configIndex {
	ix := &configIndex{cfg: c, byName: map[string][]int{}, listedOn: map[string][]int{}, usedBy: map[string][]int{}}
	ix.order = make([]int, len(c.Packages))
	for i := range ix.order {
		ix.order[i] = i
	}
	if slices.ContainsFunc(c.Packages, func(p config.Package) bool { return p.Priority != 0 }) {
		slices.SortStableFunc(ix.order, func(a, b int) int { return priorityOrder(c.Packages[a], c.Packages[b]) })
	}
	ix.pos = make([]int, len(c.Packages))
	for k, i := range ix.order {
		ix.pos[i] = k
	}
	named := map[string]bool{}
	for i, p := range c.Packages {
		ix.byName[p.Name] = append(ix.byName[p.Name], i)
		for _, n := range p.Nodes {
			ix.listedOn[n] = append(ix.listedOn[n], i)
		}
		for _, d := range p.Dependencies {
			ix.usedBy[d.Name] = append(ix.usedBy[d.Name], i)
			named[d.Name] = true
		}
	}
	for i, p := range c.Packages {
		if len(p.Dependencies) > 0 || named[p.Name] {
			ix.dependent = append(ix.dependent, i)
		}
	}
	return ix
}

// related returns the packages a decision about pkg concerns: those named
// pkg and those linked to it by a dependency either way (see Linked), in
// any order, possibly repeated.
func (ix *configIndex) related(pkg string) []int {
	out := slices.Clone(ix.byName[pkg])
	out = append(out, ix.usedBy[pkg]...)
	if self := ix.byName[pkg]; len(self) > 0 {
		for _, d := range ix.cfg.Packages[self[0]].Dependencies {
			out = append(out, ix.byName[d.Name]...)
		}
	}
	return out
}

// inOrder returns the packages of sel (indexes in cfg.Packages, in any
// order, possibly repeated) once each, in the order due decides them.
func (ix *configIndex) inOrder(sel []int) []int {
	out := make([]int, len(sel))
	for k, i := range sel {
		out[k] = ix.pos[i]
	}
	slices.Sort(out)
	out = slices.Compact(out)
	for k, p := range out {
		out[k] = ix.order[p]
	}
	return out
}

// configIndex returns the index of s.Config (nil without one), built if
// s.Config is new.
func (s *State) configIndex() *configIndex {
	if s.Config == nil {
		return nil
	}
	if s.cfgIx == nil || s.cfgIx.cfg != s.Config {
		s.cfgIx = newConfigIndex(s.Config)
	}
	return s.cfgIx
}

// Linked is Linked(s.Config, pkg) from the configuration's index: the
// packages linked to pkg by a dependency, either way, in configuration
// order.
func (s *State) Linked(pkg string) []string {
	ix := s.configIndex()
	if ix == nil {
		return nil
	}
	sel := ix.related(pkg)
	slices.Sort(sel)
	var out []string
	for _, i := range slices.Compact(sel) {
		if name := ix.cfg.Packages[i].Name; name != pkg {
			out = append(out, name)
		}
	}
	return out
}

// priorityOrder orders two packages for configIndex.order: highest
// priority first, packages without one last.
func priorityOrder(a, b config.Package) int {
	switch {
	case a.Priority == b.Priority:
		return 0
	case a.Priority == 0:
		return 1
	case b.Priority == 0:
		return -1
	}
	return cmp.Compare(a.Priority, b.Priority)
}

// mark is what the state index holds of one package.
type mark struct {
	node   string // its current placement's node
	active bool   // placed, starting or running: counted in load
}

// stateIndex is the part of the state due needs by node, kept by Apply.
type stateIndex struct {
	marks map[string]mark
	// onNode holds, for each node, the packages whose Node it is.
	onNode map[string]map[string]struct{}
	// load counts the packages placed, starting or running on each node.
	load map[string]int
}

// stateIndex returns the index of s.Packages, built on first use.
func (s *State) stateIndex() *stateIndex {
	if s.pkgIx == nil {
		ix := &stateIndex{marks: make(map[string]mark, len(s.Packages)), onNode: map[string]map[string]struct{}{}, load: map[string]int{}}
		for name := range s.Packages {
			ix.update(s, name)
		}
		s.pkgIx = ix
	}
	return s.pkgIx
}

// indexed updates the state index (if built) for a change of package name.
func (s *State) indexed(name string) {
	if s.pkgIx != nil {
		s.pkgIx.update(s, name)
	}
}

func (ix *stateIndex) update(s *State, name string) {
	var m mark
	if p := s.Packages[name]; p != nil {
		m = mark{node: p.Node, active: p.Phase.active()}
	}
	old, had := ix.marks[name]
	if had && old == m {
		return
	}
	if had {
		delete(ix.onNode[old.node], name)
		if len(ix.onNode[old.node]) == 0 {
			delete(ix.onNode, old.node)
		}
		if old.active {
			if ix.load[old.node]--; ix.load[old.node] == 0 {
				delete(ix.load, old.node)
			}
		}
	}
	ix.marks[name] = m
	if ix.onNode[m.node] == nil {
		ix.onNode[m.node] = map[string]struct{}{}
	}
	ix.onNode[m.node][name] = struct{}{}
	if m.active {
		ix.load[m.node]++
	}
}

func (ix *stateIndex) clone() *stateIndex {
	if ix == nil {
		return nil
	}
	c := &stateIndex{marks: maps.Clone(ix.marks), onNode: make(map[string]map[string]struct{}, len(ix.onNode)), load: maps.Clone(ix.load)}
	for n, set := range ix.onNode {
		c.onNode[n] = maps.Clone(set)
	}
	return c
}

// loads is the load of each node as due sees it: the state's (base) plus
// the placements decided so far in the same pass (delta).
type loads struct {
	base, delta map[string]int
}

func (s *State) loads() loads {
	return loads{base: s.stateIndex().load, delta: map[string]int{}}
}

func (l loads) of(node string) int { return l.base[node] + l.delta[node] }
