package config

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Dependency conditions (Serviceguard's dependency_condition "pkg = UP" or
// "pkg = DOWN").
const (
	// DependUp: the package depended on must be running.
	DependUp = "up"
	// DependDown: the package depended on must not be running (an
	// exclusion; it must be mutual).
	DependDown = "down"
)

// Dependency locations (Serviceguard's dependency_location).
const (
	// SameNode: on the node this package runs on (up or down).
	SameNode = "same_node"
	// AnyNode: on some node of the cluster (up only).
	AnyNode = "any_node"
	// DifferentNode: on a node other than this package's (up only).
	DifferentNode = "different_node"
	// AllNodes: on no node of the cluster (down only).
	AllNodes = "all_nodes"
)

// Priority bounds (Serviceguard's priority): a lower number is a higher
// priority; 0 in the config means none (no_priority), lower than any number.
const (
	MinPriority = 1
	MaxPriority = 3000
)

// DefaultSuccessorHaltTimeout is how long a halt or move of a package that
// the controller orders waits for the packages that depend on it (its
// successors) to halt first, when successor_halt_timeout is left out.
// Serviceguard's default is to wait forever; every action here ends
// (DESIGN §8), and each successor's own halt is bounded anyway.
const DefaultSuccessorHaltTimeout = 5 * time.Minute

// MaxSuccessorHaltTimeout bounds successor_halt_timeout (Serviceguard allows
// up to 4294 s).
const MaxSuccessorHaltTimeout = time.Hour

// Dependency is a package's need for another package to be up or down
// (Serviceguard's dependency_name, dependency_condition,
// dependency_location). It is named by the package depended on; a package
// lists another at most once.
type Dependency struct {
	// Name is the package depended on.
	Name string `yaml:"name" json:"name"`
	// Condition is up or down.
	Condition string `yaml:"condition" json:"condition"`
	// Location is same_node (the default), any_node or different_node for
	// up, same_node or all_nodes for down.
	Location string `yaml:"location,omitempty" json:"location,omitempty"`
}

// Where returns the dependency's location, same_node when left out.
func (d Dependency) Where() string {
	if d.Location == "" {
		return SameNode
	}
	return d.Location
}

// String renders the dependency as the README writes it: "db up same_node".
func (d Dependency) String() string {
	return d.Name + " " + d.Condition + " " + d.Where()
}

// SuccessorHalt returns how long a controller-ordered halt or move of the
// package waits for its successors to halt first (0: it does not wait).
func (p Package) SuccessorHalt() time.Duration {
	if p.SuccessorHaltTimeout == nil {
		return DefaultSuccessorHaltTimeout
	}
	return p.SuccessorHaltTimeout.D()
}

// Dependency returns p's dependency on package name and whether it has one.
func (p Package) Dependency(name string) (Dependency, bool) {
	for _, d := range p.Dependencies {
		if d.Name == name {
			return d, true
		}
	}
	return Dependency{}, false
}

// Successors returns the packages with an up dependency on pkg, in
// configuration order.
func (c *Cluster) Successors(pkg string) []string {
	var out []string
	for _, p := range c.Packages {
		if d, ok := p.Dependency(pkg); ok && d.Condition == DependUp {
			out = append(out, p.Name)
		}
	}
	return out
}

// Outranks reports whether package a has a higher priority than b: a number
// is higher than none, and a lower number higher than a greater one. Two
// packages without a priority outrank neither.
func Outranks(a, b Package) bool {
	switch {
	case a.Priority == 0:
		return false
	case b.Priority == 0:
		return true
	}
	return a.Priority < b.Priority
}

// PriorityString renders a package's priority as cmviewcl does: the number
// or no_priority.
func (p Package) PriorityString() string {
	if p.Priority == 0 {
		return "no_priority"
	}
	return fmt.Sprint(p.Priority)
}

// validateDependencies checks every package's priority, dependencies and
// successor_halt_timeout, and the rules between packages: a dependency names
// another configured package once; its condition and location fit
// (different_node and any_node only for up, all_nodes only for down); an
// exclusion (down) is mutual, with the same location on both sides, a
// priority on at least one and failover_policy configured_node on both; up
// dependencies have no cycle; priorities are 1 to 3000 and unique.
func validateDependencies(c *Cluster, d *decoder) {
	byName := map[string]int{}
	for i, p := range c.Packages {
		if _, dup := byName[p.Name]; !dup {
			byName[p.Name] = i
		}
	}
	prios := map[int]string{}
	for i := range c.Packages {
		p := &c.Packages[i]
		pp := fmt.Sprintf("packages[%d]", i)
		if p.Priority != 0 || d.set[pp+".priority"] {
			if p.Priority < MinPriority || p.Priority > MaxPriority {
				d.fieldErrorf(pp+".priority", "%d: want %d to %d (a lower number is a higher priority), or leave it out for none", p.Priority, MinPriority, MaxPriority)
			} else if other, dup := prios[p.Priority]; dup {
				d.fieldErrorf(pp+".priority", "%d is also package %s's priority: priorities are unique", p.Priority, other)
			} else {
				prios[p.Priority] = p.Name
			}
		}
		if t := p.SuccessorHaltTimeout; t != nil && (*t < 0 || t.D() > MaxSuccessorHaltTimeout) {
			d.fieldErrorf(pp+".successor_halt_timeout", "%s: want 0 (do not wait) to %s", *t, MaxSuccessorHaltTimeout)
		}
		seen := map[string]bool{}
		for j, dep := range p.Dependencies {
			dp := fmt.Sprintf("%s.dependencies[%d]", pp, j)
			oi, known := byName[dep.Name]
			switch {
			case dep.Name == "":
				d.fieldErrorf(dp+".name", "missing: name the package this one depends on")
				continue
			case dep.Name == p.Name:
				d.fieldErrorf(dp+".name", "%q: a package cannot depend on itself", dep.Name)
				continue
			case !known:
				d.fieldErrorf(dp+".name", "%q is not a configured package (%s)", dep.Name, packageNames(c))
				continue
			case seen[dep.Name]:
				d.fieldErrorf(dp+".name", "%q is listed twice: a package has one dependency on another", dep.Name)
				continue
			}
			seen[dep.Name] = true
			if c.Packages[oi].MultiNode() && (dep.Condition != DependUp || dep.Where() == DifferentNode) {
				d.fieldErrorf(dp+".condition", "package %s is a multi-node package: a package may depend on it only with condition up and location %s or %s", dep.Name, SameNode, AnyNode)
				continue
			}
			validateCondition(c, d, i, j, oi)
		}
	}
	if cyc := upCycle(c); len(cyc) > 0 {
		i := byName[cyc[0]]
		d.fieldErrorf(fmt.Sprintf("packages[%d].dependencies", i), "up dependencies form a cycle (%s): no package of it could ever start", strings.Join(cyc, " -> "))
	}
}

// validateCondition checks dependency j of package i (on package oi): its
// location fits its condition, and an exclusion (down) is mutual, with the
// same location on both sides, a priority on at least one and
// failover_policy configured_node.
func validateCondition(c *Cluster, d *decoder, i, j, oi int) {
	p := &c.Packages[i]
	dep := p.Dependencies[j]
	pp := fmt.Sprintf("packages[%d]", i)
	dp := fmt.Sprintf("%s.dependencies[%d]", pp, j)
	switch dep.Condition {
	case DependUp:
		switch dep.Where() {
		case SameNode, AnyNode, DifferentNode:
		default:
			d.fieldErrorf(dp+".location", "%q: an up dependency wants %s, %s or %s", dep.Location, SameNode, AnyNode, DifferentNode)
		}
	case DependDown:
		switch dep.Where() {
		case SameNode, AllNodes:
		default:
			d.fieldErrorf(dp+".location", "%q: a down dependency (an exclusion) wants %s or %s", dep.Location, SameNode, AllNodes)
			return
		}
		other := c.Packages[oi]
		back, ok := other.Dependency(p.Name)
		switch {
		case !ok || back.Condition != DependDown:
			d.fieldErrorf(dp+".condition", "down: an exclusion must be mutual: package %s must also list %s with condition down and location %s", other.Name, p.Name, dep.Where())
		case back.Where() != dep.Where():
			d.fieldErrorf(dp+".location", "%s: package %s excludes %s with location %s: both sides of an exclusion have the same location", dep.Where(), other.Name, p.Name, back.Where())
		case p.Priority == 0 && other.Priority == 0 && i < oi:
			d.fieldErrorf(pp+".priority", "missing: package %s and %s exclude each other, so at least one needs a priority (it decides which one runs)", p.Name, other.Name)
		}
		if p.FailoverPolicy != ConfiguredNode {
			d.fieldErrorf(pp+".failover_policy", "%s: package %s excludes %s, and packages in an exclusion use %s", p.FailoverPolicy, p.Name, other.Name, ConfiguredNode)
		}
	default:
		d.fieldErrorf(dp+".condition", "%q: want %s or %s", dep.Condition, DependUp, DependDown)
	}
}

// upCycle returns a cycle of up dependencies (the first package repeated at
// the end), nil when there is none.
func upCycle(c *Cluster) []string {
	const (
		unseen = iota
		onPath
		done
	)
	mark := map[string]int{}
	var path []string
	var visit func(string) []string
	visit = func(name string) []string {
		switch mark[name] {
		case onPath:
			i := slices.Index(path, name)
			return append(slices.Clone(path[i:]), name)
		case done:
			return nil
		}
		p, ok := c.Package(name)
		if !ok {
			return nil
		}
		mark[name] = onPath
		path = append(path, name)
		for _, dep := range p.Dependencies {
			if dep.Condition != DependUp {
				continue
			}
			if cyc := visit(dep.Name); cyc != nil {
				return cyc
			}
		}
		path = path[:len(path)-1]
		mark[name] = done
		return nil
	}
	for _, p := range c.Packages {
		if cyc := visit(p.Name); cyc != nil {
			return cyc
		}
	}
	return nil
}

func packageNames(c *Cluster) string {
	names := make([]string, 0, len(c.Packages))
	for _, p := range c.Packages {
		names = append(names, p.Name)
	}
	return strings.Join(names, ", ")
}
