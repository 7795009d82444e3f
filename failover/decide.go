package failover

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// Source is the CloudEvents source of the controller's decisions.
const Source = events.ControllerSource

// Reasons of a package.placed. An operator's --reason text follows the code
// after ": " (see ReasonCode).
const (
	// ReasonAutoRun: an auto_run package placed because it was never placed
	// or is down (halted by its node, reset) and a node it may run on is up.
	ReasonAutoRun = "auto_run"
	// ReasonFailover: the package failed on its node (package.failed).
	ReasonFailover = "failover"
	// ReasonNodeLost: its node was lost or fenced.
	ReasonNodeLost = "node_lost"
	// ReasonNodeHalted: an operator halted its node (`node halt`).
	ReasonNodeHalted = "node_halted"
	// ReasonNodeDrained: an operator put its node in maintenance (`node
	// drain`).
	ReasonNodeDrained = "node_drained"
	// ReasonFailback: failback_policy automatic, a higher node came back.
	ReasonFailback = "failback"
	// ReasonOperatorRun: `pkg run`.
	ReasonOperatorRun = "operator_run"
	// ReasonOperatorMove: `pkg move`.
	ReasonOperatorMove = "operator_move"
)

// ReasonCode returns the code of a placement reason: the text before the
// first ':' ("operator_move: maintenance" -> "operator_move").
func ReasonCode(reason string) string {
	code, _, _ := strings.Cut(reason, ":")
	return strings.TrimSpace(code)
}

// Decide returns the decisions due now that trigger concerns: each a
// package.placed (or the package.halting below) with CauseID = trigger.ID,
// Source = Source, no ID and no Time. The caller applies trigger to s first. Decide is Reconcile limited
// to the packages trigger is about: every package for a
// cluster.config_applied, the packages that list or occupy the node for a
// node event, the package itself for a package event. Outcomes per package:
//   - never placed, or halted on its node, auto_run on, a node it may run
//     on up: placed there (auto_run);
//   - failed on its node (package.failed of its epoch): placed on the next
//     eligible node (failover), the node added to its failed nodes;
//   - its node lost or fenced: placed on the next eligible node (node_lost);
//   - its node halted by an operator: placed on the next eligible node
//     (node_halted); the halted node's host halts its instance when it sees
//     the higher epoch. With no eligible node, or auto_run off, the
//     decision is a package.halting{node, epoch, reason node_halted}
//     without By (auto_run stays as it is): it waits down for a node;
//   - its node drained (maintenance): as for a halted node, with reason
//     node_drained; a running package whose guest can migrate
//     (config Guest.CanMigrate) is placed with migrate, so that its guest
//     moves live;
//   - on a frozen node (placed, starting, running, halting or failing
//     there): nothing, whatever else is due, until the node is thawed;
//   - running, failback_policy automatic, a higher node of its list joined
//     after the placement and is eligible: placed there (failback);
//   - placed, starting or running while a dependency no longer holds on
//     its node (a package it needs up is not running where it must, or one
//     it excludes with a higher priority occupies the node or, all_nodes,
//     any node): a package.halting (reason dependency, naming it) without
//     By, so it comes back once the dependency holds again;
//   - down, due and with no eligible node only because packages it
//     excludes and outranks (priority) are in the way: a package.halting
//     of each (reason displaced, naming it and both priorities);
//   - about to leave its node (node halt or drain, failback) while
//     packages that depend on it (its successors) occupy a node: their
//     package.halting (reason predecessor) first, and its own decision
//     only once they are down or successor_halt_timeout has passed since
//     their halting (ReconcileAt; Decide has no clock and waits);
//   - otherwise nothing: auto_run off, nothing due, no eligible node up
//     (it waits), or none left (failed on every node, or max_relocate
//     reached for a move: failed until `pkg reset`).
//
// A package event also concerns the packages linked to it by a
// dependency, and a node event every package with dependencies.
// Packages are decided highest priority first (none last, in
// configuration order), and a node is eligible only where the package's
// dependencies hold (placements decided earlier in the same call count).
//
// The next eligible node is chosen by failover_policy among the nodes of
// the package's list that are up, have switching on for it and where it
// did not fail since its last reset, where its generic resources are up and
// its dependencies hold: configured_node takes the first in
// list order, min_package_node the one running the fewest packages (ties
// in list order, counting the placements decided in the same call).
func Decide(s *State, trigger events.Event) []events.Event {
	if s.Config == nil {
		return nil
	}
	ix := s.configIndex()
	var sel []int
	sc, err := events.ScopeOf(trigger.Type())
	switch {
	case err != nil:
		return nil
	case sc == events.ScopePlacement:
		return nil // a placement's marker: the placement after it decides
	case sc == events.ScopeCluster:
		sel = ix.order
	case sc == events.ScopeNode:
		// The packages that list the node or are placed on it, and those
		// with a dependency (one on this node may concern them).
		sel = slices.Concat(ix.listedOn[trigger.Subject], ix.dependent)
		for name := range s.stateIndex().onNode[trigger.Subject] {
			sel = append(sel, ix.byName[name]...)
		}
		sel = ix.inOrder(sel)
	default:
		sel = ix.inOrder(ix.related(trigger.Subject))
	}
	var out []events.Event
	for _, pl := range s.due(sel, time.Time{}) {
		out = append(out, pl.event(trigger.ID))
	}
	return out
}

// Reconcile returns every placement due now, as Decide would for each
// package, each caused by the event that made it due (the latest of the
// package's failure, halt, loss of its node, reset or switching change, the
// config in force and the chosen node's join). The runner calls it when it
// becomes leader and after it caught up with the log, to finish what a
// previous leader decided on but did not append.
func Reconcile(s *State) []events.Event { return ReconcileAt(s, time.Time{}) }

// ReconcileAt is Reconcile at now, the controller's clock: a predecessor
// whose successors have not halted within its successor_halt_timeout of
// their package.halting moves or halts all the same (Reconcile, with no
// clock, waits for them).
func ReconcileAt(s *State, now time.Time) []events.Event {
	if s.Config == nil {
		return nil
	}
	var out []events.Event
	for _, pl := range s.due(s.configIndex().order, now) {
		out = append(out, pl.event(pl.causeID))
	}
	return out
}

// placement is one decision before it becomes an event: a placement, or
// with halt a request to halt the package where it is.
type placement struct {
	pkg, node, prev, reason string
	epoch                   uint64
	halt                    bool
	migrate                 bool // a live migration of the running guest
	causeSeq                uint64
	causeID                 string
}

func (pl placement) event(cause string) events.Event {
	e := events.Event{Source: Source, Subject: pl.pkg, CauseID: cause}
	if pl.halt {
		e.Data = events.PackageHalting{Node: pl.node, Epoch: pl.epoch, Reason: pl.reason}
	} else {
		e.Data = events.PackagePlaced{Node: pl.node, Epoch: pl.epoch, Reason: pl.reason, PreviousNode: pl.prev, Migrate: pl.migrate}
	}
	return e
}

func (pl *placement) causedBy(seq uint64, id string) {
	if id != "" && seq > pl.causeSeq {
		pl.causeSeq, pl.causeID = seq, id
	}
}

// due lists the placements due for the configured packages sel (indexes
// in s.Config.Packages, in the order to decide them: configIndex.order, or
// a part of it by configIndex.inOrder); a placement decided for one counts
// for the dependencies of those decided after it.
func (s *State) due(sel []int, now time.Time) []placement {
	load := s.loads()
	s.plan = map[string]string{}
	defer func() { s.plan = nil }()
	halting := map[string]bool{}
	var out []placement
	for _, i := range sel {
		cp := s.Config.Packages[i]
		if halting[cp.Name] {
			continue
		}
		p := s.Packages[cp.Name]
		if halts, wait := s.leftovers(cp, p); wait {
			out = append(out, halts...)
			continue
		}
		if cp.MultiNode() {
			out = append(out, s.dueMulti(cp, p)...)
			continue
		}
		for _, pl := range s.dueAll(cp, p, load, now) {
			if pl.halt {
				if halting[pl.pkg] {
					continue
				}
				halting[pl.pkg] = true
				s.plan[pl.pkg] = "" // it runs no more
			}
			if pl.pkg == cp.Name {
				if p != nil && p.Phase.active() {
					load.delta[p.Node]--
				}
				if !pl.halt {
					load.delta[pl.node]++
					s.plan[pl.pkg] = pl.node
				}
			}
			out = append(out, pl)
		}
	}
	return out
}

// dueAll returns what is due for cp: nothing on a frozen node; a halt when
// its dependencies no longer hold where it runs; else its placement (or
// halt) by dueFor, preceded by its successors' halts when it leaves a node
// they depend on it at (it then waits for them, successorHalts); and when
// nothing is due because no node is eligible, the halts that displace
// lower-priority packages in its way.
func (s *State) dueAll(cp config.Package, p *PackageState, load loads, now time.Time) []placement {
	if s.frozenOn(p) {
		return nil
	}
	if pl, ok := s.dependencyHalt(cp, p); ok {
		return []placement{pl}
	}
	pl, ok := s.dueFor(cp, load)
	if !ok {
		if s.need(cp, p) != "" && s.autoRun(cp) {
			return s.displace(cp, p)
		}
		return nil
	}
	if p != nil && p.Phase.active() && (pl.halt || pl.node != p.Node) {
		if halts, wait := s.successorHalts(cp, now); wait {
			for i := range halts {
				halts[i].causedBy(pl.causeSeq, pl.causeID)
			}
			return halts
		}
	}
	if !pl.halt {
		s.dependencyCause(cp, &pl)
	}
	return []placement{pl}
}

// need returns why package p needs a new placement, "" if it does not.
func (s *State) need(cp config.Package, p *PackageState) string {
	if p == nil || p.Epoch == 0 {
		return ReasonAutoRun
	}
	switch p.Phase {
	case PhaseFailed:
		return ReasonFailover
	case PhaseLost:
		return ReasonNodeLost
	case PhaseHalted:
		return ReasonAutoRun
	}
	if p.Phase.active() {
		if n := s.Nodes[p.Node]; n != nil && n.Membership == MemberHalted {
			return ReasonNodeHalted
		}
		if s.Nodes[p.Node].Drained() {
			return ReasonNodeDrained
		}
	}
	return ""
}

// frozenOn reports whether p occupies a frozen node: nothing is decided
// about it until the node is thawed.
func (s *State) frozenOn(p *PackageState) bool {
	return p != nil && p.Phase.Owned() && s.Nodes[p.Node].Frozen()
}

func (s *State) dueFor(cp config.Package, load loads) (placement, bool) {
	p := s.Packages[cp.Name]
	pl := placement{pkg: cp.Name}
	if p != nil {
		pl.prev, pl.epoch = p.Node, p.Epoch
		pl.causedBy(p.CauseSeq, p.CauseID)
	}
	pl.reason = s.need(cp, p)
	autoRun := s.autoRun(cp)
	if (pl.reason == ReasonNodeHalted || pl.reason == ReasonNodeDrained) && (!autoRun || len(s.candidates(cp, p)) == 0) {
		// Nowhere to go: halt it on the halted or drained node, as
		// cmhaltnode does.
		pl.node, pl.halt = p.Node, true
		return pl, true
	}
	if !autoRun {
		return placement{}, false
	}
	pl.epoch++
	pl.causedBy(s.ConfigSeq, s.ConfigID)
	switch {
	case pl.reason != "":
		cands := s.candidates(cp, p)
		if (pl.reason == ReasonFailover || pl.reason == ReasonNodeLost) && !cp.MaxRelocate.Allows(p.Relocations) {
			// No relocation left: only its own node, should it be back.
			cands = slices.DeleteFunc(cands, func(n string) bool { return n != p.Node })
		}
		pl.node = choose(cp, cands, load)
	case p.Phase == PhaseRunning && cp.FailbackPolicy == config.FailbackAutomatic:
		pl.node, pl.reason = s.failbackTarget(cp, p), ReasonFailback
	}
	if pl.node == "" {
		return placement{}, false
	}
	// A drain moves a running guest live where its driver can: the
	// drained node's host manager migrates it, or halts it if that fails.
	pl.migrate = pl.reason == ReasonNodeDrained && p.Phase == PhaseRunning && cp.Guest.CanMigrate()
	if n := s.Nodes[pl.node]; n != nil {
		pl.causedBy(n.EligibleSeq, n.EligibleID)
	}
	return pl, true
}

// failbackTarget returns the first node of the list above p's node that is
// eligible and joined after p was placed, "" if none.
func (s *State) failbackTarget(cp config.Package, p *PackageState) string {
	i := slices.Index(cp.Nodes, p.Node)
	if i < 0 {
		i = len(cp.Nodes)
	}
	for _, n := range cp.Nodes[:i] {
		if s.check(cp, p, n) == eligibleOK && s.Nodes[n].EligibleSeq > p.PlacedSeq {
			return n
		}
	}
	return ""
}

// candidates returns the eligible nodes of cp's list, in list order.
func (s *State) candidates(cp config.Package, p *PackageState) []string {
	var out []string
	for _, n := range cp.Nodes {
		if s.check(cp, p, n) == eligibleOK {
			out = append(out, n)
		}
	}
	return out
}

// choose picks a node of cands (in list order) by cp's failover_policy.
func choose(cp config.Package, cands []string, load loads) string {
	if len(cands) == 0 {
		return ""
	}
	if cp.FailoverPolicy != config.MinPackageNode {
		return cands[0]
	}
	best := cands[0]
	for _, n := range cands[1:] {
		if load.of(n) < load.of(best) {
			best = n
		}
	}
	return best
}

// Why a node is not eligible for a package.
const (
	eligibleOK = iota
	notListed
	nodeDown
	nodeDrained
	nodeFrozen
	switchingOff
	failedThere
	resourceDown
	dependencyBlocked
)

// check returns eligibleOK if package p may be placed on node, else why not.
func (s *State) check(cp config.Package, p *PackageState, node string) int {
	switch {
	case !slices.Contains(cp.Nodes, node):
		return notListed
	case !s.Nodes[node].Up():
		return nodeDown
	case s.Nodes[node].Frozen():
		return nodeFrozen
	case s.Nodes[node].Drained():
		return nodeDrained
	case !p.SwitchingEnabled(node):
		return switchingOff
	case p.FailedOn(node):
		return failedThere
	case s.resourceDown(cp, node) != "":
		return resourceDown
	case s.dependencyUnmet(cp, node) != "":
		return dependencyBlocked
	}
	return eligibleOK
}

// eligible returns nil if package p may be placed on node, else why not.
func (s *State) eligible(cp config.Package, p *PackageState, node string) error {
	switch s.check(cp, p, node) {
	case notListed:
		return fmt.Errorf("node %s is not one of package %s's nodes (%s)", node, cp.Name, strings.Join(cp.Nodes, ", "))
	case nodeDown:
		return fmt.Errorf("node %s is down (%s)", node, s.Nodes[node].State())
	case nodeDrained:
		d := s.Nodes[node].Drain
		return fmt.Errorf("node %s is in maintenance (drained by %s); end it with `vmguard node run %s`", node, orDefault(d.By, "?"), node)
	case nodeFrozen:
		return fmt.Errorf("node %s is frozen (by %s); end it with `vmguard node thaw %s`", node, orDefault(s.Nodes[node].Freeze.By, "?"), node)
	case switchingOff:
		return fmt.Errorf("node switching of package %s on node %s is disabled; enable it with `vmguard pkg enable %s -n %s`", cp.Name, node, cp.Name, node)
	case failedThere:
		return fmt.Errorf("package %s failed on node %s; clear that with `vmguard pkg reset %s`", cp.Name, node, cp.Name)
	case resourceDown:
		r := s.resourceDown(cp, node)
		return fmt.Errorf("resource %s is not up on node %s by package %s's criterion; monitors set it with `vmguard resource set %s %s up|down|VALUE`", r, node, cp.Name, node, r)
	case dependencyBlocked:
		return fmt.Errorf("node %s does not meet package %s's %s", node, cp.Name, s.dependencyUnmet(cp, node))
	}
	return nil
}

// resourceDown returns the first resource of cp that is not up on node by
// its criterion, "" when every one is.
func (s *State) resourceDown(cp config.Package, node string) string {
	for _, r := range cp.Resources {
		if !s.Nodes[node].ResourceMet(r) {
			return r.Name
		}
	}
	return ""
}

// Eligible returns nil if package pkg may be placed on node now, else an
// error saying why not (not in its list, down, switching off, failed there).
func (s *State) Eligible(pkg, node string) error {
	cp, ok := s.configured(pkg)
	if !ok {
		return fmt.Errorf("package %s is not in the configuration", pkg)
	}
	return s.eligible(cp, s.Packages[pkg], node)
}

func (s *State) configured(pkg string) (config.Package, bool) {
	if s.Config == nil {
		return config.Package{}, false
	}
	if ix := s.cfgIx; ix != nil && ix.cfg == s.Config {
		if i := ix.byName[pkg]; len(i) > 0 {
			return s.Config.Packages[i[0]], true
		}
		return config.Package{}, false
	}
	return s.Config.Package(pkg)
}

// Note says why a down package is not being placed, "" when nothing holds it
// back: auto_run off, no node left (failed until reset), or waiting for an
// eligible node.
func (s *State) Note(pkg string) string {
	cp, ok := s.configured(pkg)
	if !ok {
		return ""
	}
	return s.note(cp)
}

func (s *State) note(cp config.Package) string {
	pkg := cp.Name
	p := s.Packages[pkg]
	if cp.MultiNode() {
		return s.multiNote(cp, p)
	}
	reason := s.need(cp, p)
	if s.frozenOn(p) {
		return fmt.Sprintf("node %s is frozen: nothing is decided about this package until `vmguard node thaw %s`", p.Node, p.Node)
	}
	if reason == "" || reason == ReasonNodeHalted || reason == ReasonNodeDrained {
		return ""
	}
	if !s.autoRun(cp) {
		if p == nil || p.Phase == PhaseNone || p.Phase == PhaseHalted {
			return ""
		}
		return fmt.Sprintf("auto_run disabled: start it with `vmguard pkg run %s`", pkg)
	}
	relocating := reason == ReasonFailover || reason == ReasonNodeLost
	if relocating && !cp.MaxRelocate.Allows(p.Relocations) {
		return fmt.Sprintf("max_relocate %s reached: failed until `vmguard pkg reset %s`", cp.MaxRelocate, pkg)
	}
	left := slices.DeleteFunc(slices.Clone(cp.Nodes), p.FailedOn)
	if len(left) == 0 {
		return fmt.Sprintf("failed on every node (%s): failed until `vmguard pkg reset %s`", strings.Join(p.FailedNodes, ", "), pkg)
	}
	if len(s.candidates(cp, p)) == 0 {
		var down, deps []string
		for _, n := range left {
			switch s.check(cp, p, n) {
			case resourceDown:
				down = append(down, s.resourceDown(cp, n)+" on "+n)
			case dependencyBlocked:
				if why := s.dependencyUnmet(cp, n); !slices.Contains(deps, why) {
					deps = append(deps, why)
				}
			}
		}
		if len(down) > 0 {
			return fmt.Sprintf("waiting for an eligible node (%s); resources not up: %s", strings.Join(left, ", "), strings.Join(down, ", "))
		}
		if len(deps) > 0 {
			return fmt.Sprintf("waiting for an eligible node (%s); %s", strings.Join(left, ", "), strings.Join(deps, "; "))
		}
		return fmt.Sprintf("waiting for an eligible node (%s)", strings.Join(left, ", "))
	}
	return NotePlacementDue
}

// NotePlacementDue is the note of a package the controller will place as
// soon as it runs.
const NotePlacementDue = "placement due"

// ReasonFreezeExpired is the reason of the node.thawed the controller
// records when a freeze's --for ran out.
const ReasonFreezeExpired = "expired"

// Expired returns a node.thawed (reason expired, caused by the node.frozen)
// for every node whose freeze ended at or before now: a freeze's --for
// becomes an event like any other observation of time. now is the
// controller's clock; the freeze's end was computed by the operator's.
func Expired(s *State, now time.Time) []events.Event {
	var names []string
	for name, n := range s.Nodes {
		if n.Frozen() && !n.Freeze.Until.IsZero() && !now.Before(n.Freeze.Until) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	out := make([]events.Event, 0, len(names))
	for _, name := range names {
		out = append(out, events.Event{Source: Source, Subject: name, CauseID: s.Nodes[name].Freeze.ID,
			Data: events.NodeThawed{Reason: ReasonFreezeExpired}})
	}
	return out
}
