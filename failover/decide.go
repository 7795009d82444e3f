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
//   - otherwise nothing: auto_run off, nothing due, no eligible node up
//     (it waits), or none left (failed on every node, or max_relocate
//     reached for a move: failed until `pkg reset`).
//
// The next eligible node is chosen by failover_policy among the nodes of
// the package's list that are up, have switching on for it and where it
// did not fail since its last reset: configured_node takes the first in
// list order, min_package_node the one running the fewest packages (ties
// in list order, counting the placements decided in the same call).
func Decide(s *State, trigger events.Event) []events.Event {
	if s.Config == nil {
		return nil
	}
	var about func(config.Package) bool
	sc, err := events.ScopeOf(trigger.Type())
	switch {
	case err != nil:
		return nil
	case sc == events.ScopeCluster:
		about = func(config.Package) bool { return true }
	case sc == events.ScopeNode:
		about = func(cp config.Package) bool {
			p := s.Packages[cp.Name]
			return slices.Contains(cp.Nodes, trigger.Subject) || (p != nil && p.Node == trigger.Subject)
		}
	default:
		about = func(cp config.Package) bool { return cp.Name == trigger.Subject }
	}
	var out []events.Event
	for _, pl := range s.due(about) {
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
func Reconcile(s *State) []events.Event {
	if s.Config == nil {
		return nil
	}
	var out []events.Event
	for _, pl := range s.due(func(config.Package) bool { return true }) {
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

// due lists the placements due for the configured packages about selects, in
// configuration order.
func (s *State) due(about func(config.Package) bool) []placement {
	load := s.load()
	var out []placement
	for _, cp := range s.Config.Packages {
		if !about(cp) {
			continue
		}
		pl, ok := s.dueFor(cp, load)
		if !ok {
			continue
		}
		if p := s.Packages[cp.Name]; p != nil && p.Phase.active() {
			load[p.Node]--
		}
		if !pl.halt {
			load[pl.node]++
		}
		out = append(out, pl)
	}
	return out
}

// load counts the packages placed, starting or running on each node.
func (s *State) load() map[string]int {
	load := map[string]int{}
	for _, p := range s.Packages {
		if p.Phase.active() {
			load[p.Node]++
		}
	}
	return load
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

func (s *State) dueFor(cp config.Package, load map[string]int) (placement, bool) {
	p := s.Packages[cp.Name]
	if s.frozenOn(p) {
		return placement{}, false
	}
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
func choose(cp config.Package, cands []string, load map[string]int) string {
	if len(cands) == 0 {
		return ""
	}
	if cp.FailoverPolicy != config.MinPackageNode {
		return cands[0]
	}
	best := cands[0]
	for _, n := range cands[1:] {
		if load[n] < load[best] {
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
		var down []string
		for _, n := range left {
			if s.check(cp, p, n) == resourceDown {
				down = append(down, s.resourceDown(cp, n)+" on "+n)
			}
		}
		if len(down) > 0 {
			return fmt.Sprintf("waiting for an eligible node (%s); resources not up: %s", strings.Join(left, ", "), strings.Join(down, ", "))
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
