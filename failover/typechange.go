package failover

import (
	"slices"

	"github.com/vmguard/vmguard/config"
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
		p := s.Packages[cp.Name]
		if p == nil {
			continue
		}
		from, nodes := config.TypeMultiNode, p.instanceNodes()
		if cp.MultiNode() {
			from, nodes = config.TypeFailover, p.singleNodes()
		}
		if len(nodes) > 0 {
			to := orDefault(cp.Type, config.TypeFailover)
			out = append(out, TypeChange{Package: cp.Name, From: from, To: to, Nodes: nodes})
		}
	}
	return out
}

// singleNodes returns the nodes p's failover placements occupy (the current
// one and those leaving), sorted; a multi-node package's has none.
func (p *PackageState) singleNodes() []string {
	var out []string
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
// current placement or one leaving), sorted.
func (p *PackageState) instanceNodes() []string {
	var out []string
	for _, in := range p.Instances {
		out = append(out, in.singleNodes()...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
