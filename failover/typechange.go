package failover

import (
	"maps"
	"slices"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// TypeChange is a package whose package_type a configuration would change
// while the package still occupies a node (design-notes §8): `vmguard
// apply` refuses it, as Serviceguard refuses to change the type of a
// running package.
type TypeChange struct {
	Package string
	// From is the type the package runs as (its placements' kind), To the
	// type the new configuration gives it.
	From, To string
	// Nodes are the nodes its placements of type From occupy, sorted.
	Nodes []string
}

// TypeChanges returns, in cl's package order, the packages of cl that
// occupy a node (placed, starting, running, halting or failing there, or a
// replaced placement not yet released) as the other package_type than cl
// gives them. What runs is judged by the placements, not by the
// configuration in force: a package removed and added again with the other
// type is refused too until what it ran is halted.
func (s *State) TypeChanges(cl *config.Cluster) []TypeChange {
	var out []TypeChange
	for _, cp := range cl.Packages {
		if from, nodes := s.Packages[cp.Name].otherType(cp); len(nodes) > 0 {
			out = append(out, TypeChange{Package: cp.Name, From: from, To: orDefault(cp.Type, config.TypeFailover), Nodes: nodes})
		}
	}
	return out
}

// otherType returns the type cp does not give package p and the nodes p's
// placements of that type occupy, sorted (none: p runs as cp says, or not
// at all).
func (p *PackageState) otherType(cp config.Package) (string, []string) {
	if cp.MultiNode() {
		return config.TypeFailover, p.singleNodes()
	}
	return config.TypeMultiNode, p.instanceNodes()
}

// singleNodes returns the nodes p's failover placements occupy (the current
// one and those leaving), sorted; a multi-node package's has none. p may
// be nil.
func (p *PackageState) singleNodes() []string {
	var out []string
	if p == nil {
		return nil
	}
	if p.Node != "" && p.Phase.Owned() {
		out = append(out, p.Node)
	}
	for _, in := range p.Leaving {
		out = append(out, in.Node)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// instanceNodes returns the nodes p's multi-node instances occupy (their
// current placement or one leaving), sorted. p may be nil.
func (p *PackageState) instanceNodes() []string {
	var out []string
	if p == nil {
		return nil
	}
	for _, in := range p.Instances {
		out = append(out, in.singleNodes()...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// ReasonTypeChanged is the reason of the package.halting the controller
// records for a placement of the package's former package_type.
const ReasonTypeChanged = "package_type_changed"

// A package's package_type changed while it occupied a node (a log written
// by hand, an older vmguard, an apply that raced a placement: `vmguard
// apply` refuses it otherwise). The semantics (design-notes §8):
//   - the fold routes each event by what was placed: an event about the
//     epoch of an instance goes to that instance, one about the epoch of
//     the package's failover placement (current or leaving) to the
//     package, whatever the configuration in force says; new placements
//     follow the configuration in force;
//   - an instance placed while a failover placement occupies its node
//     makes that placement leaving (it is replaced, not yet released: the
//     host manager of its node halts it, hostmanager.State.placed);
//   - a node lost, fenced or halted is folded into the instance there and
//     into the failover placement both;
//   - a package made failover whose instances no longer occupy any node
//     drops them: it is then a failover package, halted (reason
//     package_type_changed) if it has no failover placement yet;
//   - the controller (due) halts the placements of the former type that
//     are placed, starting or running (or leaving, once) and places
//     nothing of the new type until none of them occupies a node.

// eventEpoch returns the epoch a package event is about, false for one
// about the whole package (a placement, a reset, a switching change, a
// halt of every instance).
func eventEpoch(e events.Event) (uint64, bool) {
	switch d := e.Data.(type) {
	case events.PackageHalting:
		return d.Epoch, d.Epoch != 0
	case events.GuestMigrated:
		return d.Epoch, true
	}
	return epochOf(e)
}

// holds reports whether epoch is p's failover placement: its current one
// (p.Node set: an instance's package has none) or one leaving.
func (p *PackageState) holds(epoch uint64) bool {
	return p.Node != "" && p.Epoch == epoch || slices.ContainsFunc(p.Leaving, func(in Instance) bool { return in.Epoch == epoch })
}

// instanceOf returns p's instance that holds epoch, nil if none.
func (p *PackageState) instanceOf(epoch uint64) *PackageState {
	for _, in := range p.Instances {
		if in.holds(epoch) {
			return in
		}
	}
	return nil
}

// retire drops the instances of p, a package the configuration in force
// makes failover, once none occupies a node: p is a failover package from
// then on, halted if it has no failover placement.
func (p *PackageState) retire() {
	if p.Instances == nil || len(p.instanceNodes()) > 0 {
		return
	}
	p.Instances = nil
	if p.Node == "" && p.Phase != PhaseNone && p.Phase != PhaseHalted {
		p.Phase, p.DownReason = PhaseHalted, ReasonTypeChanged
	}
}

// leftovers returns what is due for package p while placements of the
// type cp no longer has occupy a node: a halt of each that is placed,
// starting or running (but on a frozen node), and true; nothing and false
// when there are none.
func (s *State) leftovers(cp config.Package, p *PackageState) ([]placement, bool) {
	if p == nil {
		return nil, false
	}
	var out []placement
	halt := func(node string, epoch uint64) {
		pl := placement{pkg: cp.Name, node: node, epoch: epoch, halt: true, reason: ReasonTypeChanged}
		pl.causedBy(s.ConfigSeq, s.ConfigID)
		out = append(out, pl)
	}
	if _, nodes := p.otherType(cp); len(nodes) == 0 {
		return nil, false
	}
	if cp.MultiNode() {
		if p.Node != "" && p.Phase.active() && !s.Nodes[p.Node].Frozen() {
			halt(p.Node, p.Epoch)
		}
		for _, in := range p.Leaving {
			// Replaced by an instance elsewhere: its host manager halts
			// it if it started; one that did not is halted here.
			if !in.Halting && !s.Nodes[in.Node].Frozen() {
				halt(in.Node, in.Epoch)
			}
		}
		return out, true
	}
	for _, n := range slices.Sorted(maps.Keys(p.Instances)) {
		if in := p.Instances[n]; in.Phase.active() && !s.Nodes[n].Frozen() {
			halt(n, in.Epoch)
		}
	}
	return out, true
}

// retireAll retires the instances of every package the configuration in
// force makes failover (retire).
func (s *State) retireAll() {
	for name, p := range s.Packages {
		if p.Instances == nil {
			continue
		}
		if cp, ok := s.configured(name); ok && !cp.MultiNode() {
			p.retire()
			s.indexed(name)
		}
	}
}
