package failover

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// Reasons of the package.halting the controller records for dependencies.
const (
	// ReasonDependency: a running package's up dependency is no longer met
	// (the package it needs failed, halted or moved), or a package it
	// excludes with a higher priority runs beside it.
	ReasonDependency = "dependency"
	// ReasonDisplaced: a package with a higher priority needs the node (or,
	// for an all_nodes exclusion, the cluster) this one occupies.
	ReasonDisplaced = "displaced"
	// ReasonPredecessor: a package this one depends on is about to move or
	// halt; its successors halt first (successor_halt_timeout).
	ReasonPredecessor = "predecessor"
)

// halts bounds the reasons the controller writes (the schema's maxLength).
const maxReason = 1024

// where says, for the dependency checks, where each package is: the
// packages of the state, and the decisions made earlier in the same pass
// (plan): a placement on a node ("" for a halt), which occupies that node
// (a halt: still its own) but does not run there.
//
// Unless current is set, a package also occupies the nodes its older
// placements have not yet left (PackageState.Leaving).
type where struct {
	s       *State
	plan    map[string]string
	current bool
}

// owns reports whether pkg occupies node ("" = any node), and which node.
func (w where) owns(pkg, node string) (string, bool) {
	p := w.s.Packages[pkg]
	if p != nil && !w.current {
		for _, in := range p.Leaving {
			if node == "" || in.Node == node {
				return in.Node, true
			}
		}
	}
	if n, ok := w.plan[pkg]; ok && n != "" && (node == "" || n == node) {
		return n, true
	}
	// Placed elsewhere in this pass, it still occupies its current node
	// until that placement is released (it becomes Leaving).
	if p == nil || !p.Phase.Owned() {
		return "", false
	}
	return p.Node, node == "" || p.Node == node
}

// runs reports whether pkg runs (package.started) on node, or on any node
// but skip when node is "".
func (w where) runs(pkg, node, skip string) (string, bool) {
	if _, planned := w.plan[pkg]; planned {
		return "", false
	}
	p := w.s.Packages[pkg]
	if p != nil && p.Instances != nil {
		// A multi-node package runs on each node its instance runs on.
		for _, n := range p.runningOn() {
			if (node != "" && n == node) || (node == "" && n != skip) {
				return n, true
			}
		}
		return "", false
	}
	if p == nil || p.Phase != PhaseRunning {
		return "", false
	}
	if node != "" {
		return p.Node, p.Node == node
	}
	return p.Node, p.Node != skip
}

// ownsAgainst returns the node where the package that the down
// dependency d excludes occupies what d covers from node: node itself
// (same_node) or any node (all_nodes).
func (w where) ownsAgainst(d config.Dependency, node string) (string, bool) {
	on := node
	if d.Where() == config.AllNodes {
		on = ""
	}
	return w.owns(d.Name, on)
}

// unmet returns why cp could not run on node for its dependencies, "" when
// every one is met: each up dependency's package runs there (same_node),
// anywhere (any_node) or on another node (different_node); no package it
// excludes occupies the node (same_node) or any node (all_nodes). An
// excluded package that yield reports true for is left out (it would be
// displaced).
func (w where) unmet(cp config.Package, node string, yield func(config.Package) bool) string {
	for _, d := range cp.Dependencies {
		switch d.Condition {
		case config.DependUp:
			ok := false
			switch d.Where() {
			case config.SameNode:
				_, ok = w.runs(d.Name, node, "")
			case config.AnyNode:
				_, ok = w.runs(d.Name, "", "")
			case config.DifferentNode:
				_, ok = w.runs(d.Name, "", node)
			}
			if !ok {
				return fmt.Sprintf("dependency %s: %s", d, w.s.runsWhere(d.Name))
			}
		case config.DependDown:
			n, ok := w.ownsAgainst(d, node)
			if !ok {
				continue
			}
			if other, known := w.s.configured(d.Name); known && yield != nil && yield(other) {
				continue
			}
			return fmt.Sprintf("dependency %s: %s is %s on %s", d, d.Name, w.s.phaseOf(d.Name), n)
		}
	}
	return ""
}

// runsWhere says where pkg is, for a dependency's reason.
func (s *State) runsWhere(pkg string) string {
	p := s.Packages[pkg]
	if p == nil || p.Phase == PhaseNone {
		return pkg + " has not run"
	}
	if p.Instances != nil {
		if on := p.runningOn(); len(on) > 0 {
			return fmt.Sprintf("%s runs on %s only", pkg, strings.Join(on, ", "))
		}
		return fmt.Sprintf("%s runs on no node", pkg)
	}
	if p.Phase.Owned() {
		return fmt.Sprintf("%s is %s on %s", pkg, s.phaseOf(pkg), p.Node)
	}
	return fmt.Sprintf("%s is %s", pkg, s.phaseOf(pkg))
}

func (s *State) phaseOf(pkg string) string {
	if p := s.Packages[pkg]; p != nil && p.Phase != PhaseNone {
		if p.Phase == PhasePlaced {
			return "placed"
		}
		return p.Phase.State()
	}
	return "down"
}

// dependencyUnmet returns why cp may not be placed on node for its
// dependencies, "" when it may.
func (s *State) dependencyUnmet(cp config.Package, node string) string {
	if len(cp.Dependencies) == 0 {
		return ""
	}
	return where{s: s, plan: s.plan}.unmet(cp, node, nil)
}

// dependencyHalt returns the halt due for package p, active on its node,
// whose dependencies no longer hold there: an up dependency's package no
// longer runs where it must, or a package it excludes and that outranks it
// occupies the node (or, all_nodes, any node). A lower-priority excluded
// package beside it is the other's to leave.
func (s *State) dependencyHalt(cp config.Package, p *PackageState) (placement, bool) {
	if len(cp.Dependencies) == 0 || p == nil || !p.Phase.active() {
		return placement{}, false
	}
	why := where{s: s, plan: s.plan, current: true}.unmet(cp, p.Node, func(other config.Package) bool { return !config.Outranks(other, cp) })
	if why == "" {
		return placement{}, false
	}
	pl := placement{pkg: cp.Name, node: p.Node, epoch: p.Epoch, halt: true,
		reason: events.Clip(ReasonDependency+": "+why, maxReason)}
	pl.causedBy(p.CauseSeq, p.CauseID)
	s.dependencyCause(cp, &pl)
	return pl, true
}

// dependencyCause names the latest change of the packages cp needs up as
// pl's cause (their start, failure or halt), when it is later than pl's.
func (s *State) dependencyCause(cp config.Package, pl *placement) {
	for _, d := range cp.Dependencies {
		o := s.Packages[d.Name]
		switch {
		case o == nil || d.Condition != config.DependUp:
		case o.Instances != nil:
			// A multi-node package: the change of its instance on the node.
			if in := o.Instances[pl.node]; in != nil {
				pl.causedBy(in.ChangeSeq, in.ChangeID)
			}
		default:
			pl.causedBy(o.ChangeSeq, o.ChangeID)
		}
	}
}

// displace returns the halts that make room for cp, which needs a node and
// has none eligible: the first node of its list that would be eligible
// without the packages it excludes and outranks, and for each such package
// running or placed in the way a package.halting (reason displaced, naming
// cp and both priorities). It returns nothing while one in the way is
// already halting (it waits for it), or when no node would do.
func (s *State) displace(cp config.Package, p *PackageState) []placement {
	if cp.Priority == 0 || !slices.ContainsFunc(cp.Dependencies, func(d config.Dependency) bool { return d.Condition == config.DependDown }) {
		return nil
	}
	w := where{s: s, plan: s.plan}
	lower := func(other config.Package) bool { return config.Outranks(cp, other) }
	for _, n := range cp.Nodes {
		if s.check(cp, p, n) != dependencyBlocked || w.unmet(cp, n, lower) != "" {
			continue
		}
		var out []placement
		waiting := false
		for _, d := range cp.Dependencies {
			if d.Condition != config.DependDown {
				continue
			}
			at, in := w.ownsAgainst(d, n)
			if !in {
				continue
			}
			o := s.Packages[d.Name]
			if o == nil || !o.Phase.active() || at != o.Node {
				waiting = true // halting, failing or leaving already: wait for it
				continue
			}
			other, _ := s.Config.Package(d.Name)
			pl := placement{pkg: d.Name, node: o.Node, epoch: o.Epoch, halt: true,
				reason: events.Clip(fmt.Sprintf("%s: by %s (priority %s over %s), which needs node %s (exclusion %s)",
					ReasonDisplaced, cp.Name, cp.PriorityString(), other.PriorityString(), n, d.Where()), maxReason)}
			if p != nil {
				pl.causedBy(p.CauseSeq, p.CauseID)
			}
			pl.causedBy(s.ConfigSeq, s.ConfigID)
			out = append(out, pl)
		}
		if waiting {
			return nil
		}
		return out
	}
	return nil
}

// successorHalts returns, for package cp about to be moved or halted from
// its node by the controller (a node halt or drain, a failback), the halts
// of its successors that still occupy a node, and whether cp's own move
// must wait: it waits while any successor occupies a node, at most its
// successor_halt_timeout from that successor's package.halting by now
// (zero now: no wait runs out).
func (s *State) successorHalts(cp config.Package, now time.Time) (halts []placement, wait bool) {
	limit := cp.SuccessorHalt()
	if limit == 0 {
		return nil, false
	}
	for _, name := range s.Config.Successors(cp.Name) {
		o := s.Packages[name]
		if o == nil || !o.Phase.Owned() {
			continue
		}
		if o.Phase.active() {
			pl := placement{pkg: name, node: o.Node, epoch: o.Epoch, halt: true,
				reason: events.Clip(fmt.Sprintf("%s: %s, which it depends on, moves or halts first", ReasonPredecessor, cp.Name), maxReason)}
			halts = append(halts, pl)
			wait = true
			continue
		}
		if now.IsZero() || o.HaltingAt.IsZero() || now.Before(o.HaltingAt.Add(limit)) {
			wait = true
		}
	}
	return halts, wait
}

// ActiveSuccessors returns the packages that depend on pkg, directly or
// through others, and are placed, starting or running, in configuration
// order.
func (s *State) ActiveSuccessors(pkg string) []string {
	if s.Config == nil {
		return nil
	}
	seen := map[string]bool{pkg: true}
	queue := []string{pkg}
	for len(queue) > 0 {
		next := queue[0]
		queue = queue[1:]
		for _, name := range s.Config.Successors(next) {
			if !seen[name] {
				seen[name] = true
				queue = append(queue, name)
			}
		}
	}
	var out []string
	for _, cp := range s.Config.Packages {
		if p := s.Packages[cp.Name]; cp.Name != pkg && seen[cp.Name] && p != nil && p.Phase.active() {
			out = append(out, cp.Name)
		}
	}
	return out
}

// Down reports whether none of pkgs occupies a node (each is halted,
// failed, lost or never placed).
func (s *State) Down(pkgs []string) bool {
	for _, name := range pkgs {
		if p := s.Packages[name]; p != nil && p.Phase.Owned() {
			return false
		}
	}
	return true
}

// dependencyHolds reports whether dependency d of cp holds: on p's node
// while p occupies one (an excluded package counts only if it outranks
// cp), else on some node of cp's list.
func (s *State) dependencyHolds(cp config.Package, p *PackageState, d config.Dependency) bool {
	one := cp
	one.Dependencies = []config.Dependency{d}
	w := where{s: s}
	if p != nil && p.Phase.Owned() {
		return w.unmet(one, p.Node, func(other config.Package) bool { return !config.Outranks(other, cp) }) == ""
	}
	for _, n := range cp.Nodes {
		if w.unmet(one, n, nil) == "" {
			return true
		}
	}
	return false
}

// Linked returns the packages linked to pkg by a dependency, either way:
// a decision about pkg depends on their state.
func Linked(c *config.Cluster, pkg string) []string {
	rel := relatedTo(c, pkg)
	var out []string
	for _, o := range c.Packages {
		if o.Name != pkg && rel(o) {
			out = append(out, o.Name)
		}
	}
	return out
}

// relatedTo returns whether a package is linked by a dependency (either
// way) to pkg. It looks pkg up once: looked up for every package asked
// about (a scan of the configuration each), a controller's pass over 3,000
// packages took minutes.
func relatedTo(c *config.Cluster, pkg string) func(config.Package) bool {
	self, _ := c.Package(pkg)
	return func(cp config.Package) bool {
		_, uses := cp.Dependency(pkg)
		_, used := self.Dependency(cp.Name)
		return uses || used
	}
}
