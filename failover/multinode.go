package failover

import (
	"maps"
	"slices"
	"strings"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// A multi-node package (package_type: multi_node) runs an instance on every
// eligible node of its list at once. Each instance is a placement of its
// own (package.placed on that node, its own epoch: epochs are unique in the
// package, whatever the node) and is folded into PackageState.Instances by
// the same fold as a failover package (applyTo), routed by node or epoch.
// The semantics vmguard chose where Serviceguard is vague:
//   - auto_run on: an instance is placed on each eligible node (up, not
//     drained or frozen, switching on, not failed there since the last
//     reset, its resources up) that has none that occupies it, one at a
//     time (the runner appends one decision per package and decides again
//     when it reads it back);
//   - an instance that fails (its restarts used up on that node) stays
//     failed there until `pkg reset`; a node lost loses its instance, which
//     is placed again when the node joins: nothing fails over;
//   - a node halted or drained halts its instance (reason node_halted or
//     node_drained), placed again when the node runs again;
//   - `pkg halt` halts every instance (one package.halting with no node and
//     epoch 0) and disables auto_run, as for a failover package; `pkg halt
//     -n NODE` halts the instance on NODE and disables the package's
//     switching on NODE (cmhaltpkg -n), so that it is not placed there again
//     until `pkg run -n NODE` or `pkg enable -n NODE`;
//   - `pkg run` places an instance on every eligible node without one,
//     `pkg run -n NODE` on NODE (enabling its switching there first).

// multi reports whether pkg is a multi-node package in the config in force.
func (s *State) multi(pkg string) bool {
	cp, ok := s.configured(pkg)
	return ok && cp.MultiNode()
}

// instance returns p's instance on node, made empty if it has none.
func (p *PackageState) instance(node string) *PackageState {
	if p.Instances == nil {
		p.Instances = map[string]*PackageState{}
	}
	in := p.Instances[node]
	if in == nil {
		in = &PackageState{Name: p.Name, Node: node}
		p.Instances[node] = in
	}
	return in
}

// byEpoch returns p's instance whose current placement has epoch, nil if
// none.
func (p *PackageState) byEpoch(epoch uint64) *PackageState {
	for _, in := range p.Instances {
		if in.Epoch == epoch && epoch != 0 {
			return in
		}
	}
	return nil
}

// epochOf returns the epoch an instance event is about, false for an event
// that is about the whole package.
func epochOf(e events.Event) (uint64, bool) {
	switch d := e.Data.(type) {
	case events.PackageStarting:
		return d.Epoch, true
	case events.PackageStarted:
		return d.Epoch, true
	case events.PackageHalted:
		return d.Epoch, true
	case events.PackageFailed:
		return d.Epoch, true
	case events.GuestStarted:
		return d.Epoch, true
	case events.GuestLost:
		return d.Epoch, true
	case events.GuestStopped:
		return d.Epoch, true
	case events.ServiceRestarting:
		return d.Epoch, true
	case events.ServiceFailed:
		return d.Epoch, true
	case events.ProcessStarted:
		return d.Epoch, true
	case events.ProcessExited:
		return d.Epoch, true
	}
	return 0, false
}

// applyMulti folds an event about multi-node package p: a placement into
// the instance on its node, an instance event into the instance of its
// epoch, a halt of every instance into each, a reset into the package and
// each instance, a switching change into the package.
func (s *State) applyMulti(p *PackageState, e events.Event) {
	p.LastSeq = e.Seq
	switch d := e.Data.(type) {
	case events.PackagePlaced:
		if d.Epoch <= p.Epoch {
			return // epochs are unique in the package
		}
		if p.Node != "" {
			// Its failover placement, of its former package_type: an
			// instance replaces it (typechange.go).
			if p.Phase.Owned() {
				p.Leaving = append(p.Leaving, Instance{Node: p.Node, Epoch: p.Epoch})
			}
			p.Node = ""
		}
		p.Epoch = d.Epoch
		in := p.instance(d.Node)
		s.applyTo(in, e)
		p.lift(in)
	case events.PackageSwitchingChanged:
		s.applyTo(p, e)
	case events.PackageReset:
		s.applyTo(p, e)
		for _, in := range p.Instances {
			s.applyTo(in, e)
		}
	case events.PackageHalting:
		if d.By != "" {
			if d.Node == "" {
				off := false
				p.AutoRun = &off
			} else if !slices.Contains(p.SwitchingOff, d.Node) {
				p.SwitchingOff = append(p.SwitchingOff, d.Node)
			}
		}
		if d.Node == "" && d.Epoch == 0 && p.Node != "" && p.Phase.active() {
			// Its failover placement, of its former package_type, too.
			s.applyTo(p, events.Event{ID: e.ID, Seq: e.Seq, Time: e.Time, Data: events.PackageHalting{Node: p.Node, Epoch: p.Epoch, Reason: d.Reason}})
		}
		for _, in := range p.Instances {
			if (d.Node == "" && d.Epoch == 0) || (in.Epoch == d.Epoch && in.Node == d.Node) || (d.Node == "" && in.Epoch == d.Epoch) {
				h := e
				h.Data = events.PackageHalting{Node: in.Node, Epoch: in.Epoch, Reason: d.Reason}
				s.applyTo(in, h)
				p.lift(in)
			}
		}
	default:
		if epoch, ok := epochOf(e); ok {
			if in := p.byEpoch(epoch); in != nil {
				s.applyTo(in, e)
				p.lift(in)
			}
		}
	}
	p.aggregate()
}

// lift carries what an instance's fold decided for the whole package up to
// p: the nodes it failed on and the cause of the next placement.
func (p *PackageState) lift(in *PackageState) {
	for _, n := range in.FailedNodes {
		p.addFailed(n)
	}
	if in.CauseSeq > p.CauseSeq {
		p.CauseSeq, p.CauseID = in.CauseSeq, in.CauseID
	}
}

// phaseRank orders phases from the most alive: what a multi-node package's
// Phase shows of its instances.
var phaseRank = []Phase{PhaseRunning, PhaseStarting, PhasePlaced, PhaseHalting, PhaseFailing, PhaseFailed, PhaseLost, PhaseHalted, PhaseNone}

// aggregate sets multi-node package p's Phase (the most alive of its
// instances'), its state's and change's events, and its down reason.
func (p *PackageState) aggregate() {
	if p.Node != "" {
		return // a failover placement's, after a change of package_type
	}
	best := len(phaseRank) - 1
	var from *PackageState
	for _, n := range slices.Sorted(maps.Keys(p.Instances)) {
		in := p.Instances[n]
		r := slices.Index(phaseRank, in.Phase)
		if r < 0 {
			r = len(phaseRank) - 1
		}
		if from == nil || r < best {
			best, from = r, in
		}
	}
	if from == nil {
		return
	}
	if p.Phase != phaseRank[best] {
		p.ChangeSeq, p.ChangeID = p.LastSeq, from.ChangeID
	}
	p.Phase, p.DownReason = phaseRank[best], from.DownReason
	p.StateID, p.StateSeq = from.StateID, from.StateSeq
	p.Node = ""
}

// runningOn returns the nodes multi-node package p's instances run on
// (package.started), sorted.
func (p *PackageState) runningOn() []string {
	var out []string
	for n, in := range p.Instances {
		if in.Phase == PhaseRunning {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// RunningOn reports whether package pkg runs (package.started) on node: a
// failover package placed there, or a multi-node package's instance there.
func (s *State) RunningOn(pkg, node string) bool {
	p := s.Packages[pkg]
	if p == nil {
		return false
	}
	if in := p.Instances[node]; in != nil {
		return in.Phase == PhaseRunning
	}
	return p.Instances == nil && p.Node == node && p.Phase == PhaseRunning
}

// dueMulti returns what is due for multi-node package cp: a halt of each
// instance on a node an operator halted or drained, and with auto_run on a
// placement on each eligible node without an instance that occupies it,
// in list order, with epochs after the package's highest.
func (s *State) dueMulti(cp config.Package, p *PackageState) []placement {
	var out []placement
	var epoch uint64
	if p != nil {
		epoch = p.Epoch
	}
	for _, node := range cp.Nodes {
		n := s.Nodes[node]
		var in *PackageState
		if p != nil {
			in = p.Instances[node]
		}
		if in != nil && in.Phase.Owned() {
			if n.Frozen() || !in.Phase.active() {
				continue
			}
			reason := ""
			switch {
			case n != nil && n.Membership == MemberHalted:
				reason = ReasonNodeHalted
			case n.Drained():
				reason = ReasonNodeDrained
			}
			if reason != "" {
				pl := placement{pkg: cp.Name, node: node, epoch: in.Epoch, halt: true, reason: reason}
				pl.causedBy(n.LastSeq, n.EventID)
				if n.Drained() {
					pl.causedBy(n.Drain.Seq, n.Drain.ID)
				}
				out = append(out, pl)
			}
			continue
		}
		if !s.autoRun(cp) || s.check(cp, p, node) != eligibleOK {
			continue
		}
		epoch++
		pl := placement{pkg: cp.Name, node: node, epoch: epoch, reason: ReasonAutoRun}
		if p != nil {
			pl.causedBy(p.CauseSeq, p.CauseID)
		}
		pl.causedBy(s.ConfigSeq, s.ConfigID)
		pl.causedBy(n.EligibleSeq, n.EligibleID)
		out = append(out, pl)
	}
	return out
}

// multiRun is the events of `pkg run` for multi-node package cp: with -n,
// node switching enabled there if it was off, then a placement there; else
// a placement on every eligible node without an instance.
func (s *State) multiRun(cmd Command, cp config.Package, p *PackageState) ([]events.Event, error) {
	src := CLISource(cmd.By)
	var out []events.Event
	nodes := cp.Nodes
	if cmd.Node != "" {
		nodes = []string{cmd.Node}
		if !p.SwitchingEnabled(cmd.Node) {
			out = append(out, events.Event{Source: src, Subject: cp.Name,
				Data: events.PackageSwitchingChanged{Node: cmd.Node, Enabled: true, Reason: cmd.Reason, By: cmd.By}})
			p = p.clone()
			p.SwitchingOff = slices.DeleteFunc(p.SwitchingOff, func(n string) bool { return n == cmd.Node })
		}
	}
	epoch := p.Epoch
	var why []string
	for _, node := range nodes {
		if in := p.Instances[node]; in != nil && in.Phase.Owned() {
			if cmd.Node != "" {
				return nil, refuse("package %s is already %s on node %s", cp.Name, in.Phase.State(), node)
			}
			continue
		}
		if err := s.eligible(cp, p, node); err != nil {
			why = append(why, err.Error())
			continue
		}
		epoch++
		out = append(out, events.Event{Source: src, Subject: cp.Name,
			Data: events.PackagePlaced{Node: node, Epoch: epoch, Reason: withText(ReasonOperatorRun, cmd.Reason), By: cmd.By}})
	}
	if epoch == p.Epoch {
		if len(why) == 0 {
			return nil, refuse("package %s already runs on every node of its list", cp.Name)
		}
		return nil, refuse("run %s: no eligible node without an instance: %s", cp.Name, strings.Join(why, "; "))
	}
	return out, nil
}

// multiHalt is the package.halting of `pkg halt` for multi-node package
// cp: of the instance on -n, else of every instance (no node, epoch 0).
func (s *State) multiHalt(cmd Command, cp config.Package, p *PackageState) (events.PackageHalting, error) {
	reason := orDefault(cmd.Reason, "operator_halt")
	if cmd.Node != "" {
		in := p.Instances[cmd.Node]
		if in == nil || !in.Phase.active() {
			return events.PackageHalting{}, refuse("package %s is not running on node %s", cp.Name, cmd.Node)
		}
		return events.PackageHalting{Node: cmd.Node, Epoch: in.Epoch, Reason: reason, By: cmd.By}, nil
	}
	for _, in := range p.Instances {
		if in.Phase.active() {
			return events.PackageHalting{Epoch: 0, Reason: reason, By: cmd.By}, nil
		}
	}
	if p.Node != "" && p.Phase.active() {
		// Its failover placement, of its former package_type.
		return events.PackageHalting{Epoch: 0, Reason: reason, By: cmd.By}, nil
	}
	return events.PackageHalting{}, refuse("package %s is not running on any node", cp.Name)
}

// multiNote says why multi-node package cp has no instance on nodes of its
// list, "" when it runs on each or auto_run is off after a halt.
func (s *State) multiNote(cp config.Package, p *PackageState) string {
	if !s.autoRun(cp) {
		return ""
	}
	if p == nil {
		p = &PackageState{Name: cp.Name}
	}
	var why []string
	for _, n := range cp.Nodes {
		if in := p.Instances[n]; in != nil && in.Phase.Owned() {
			continue
		}
		switch s.check(cp, p, n) {
		case eligibleOK:
			why = append(why, n+": "+NotePlacementDue)
		case failedThere:
			why = append(why, n+": failed there, until `vmguard pkg reset "+cp.Name+"`")
		case switchingOff:
			why = append(why, n+": switching off, until `vmguard pkg run "+cp.Name+" -n "+n+"`")
		default:
			why = append(why, n+": waiting for the node")
		}
	}
	return strings.Join(why, "; ")
}
