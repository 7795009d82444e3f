package failover

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// ErrRefused is wrapped by every error State.Command returns: the command
// does not fit the state (unknown package, node not in its list, package
// already running, ...) and nothing may be appended.
var ErrRefused = errors.New("command refused")

// Op is an operator command.
type Op string

// Operator commands (DESIGN §6).
const (
	// OpRun: `pkg run PKG [-n NODE]` -> package.placed (operator_run) on
	// NODE, or on the node failover_policy picks. auto_run is unchanged.
	OpRun Op = "run"
	// OpHalt: `pkg halt PKG` -> package.halting with By, which also
	// disables auto_run (as cmhaltpkg does).
	OpHalt Op = "halt"
	// OpEnable: `pkg enable PKG [-n NODE]` -> package.switching_changed
	// enabled: auto_run on (without NODE) or node switching on NODE. A down
	// package with auto_run on is then placed by the controller.
	OpEnable Op = "enable"
	// OpDisable: `pkg disable PKG [-n NODE]` -> package.switching_changed
	// disabled. A running package stays where it is.
	OpDisable Op = "disable"
	// OpMove: `pkg move PKG -n NODE` -> package.placed (operator_move); the
	// old node halts its instance when it sees the higher epoch.
	OpMove Op = "move"
	// OpReset: `pkg reset PKG [-s SERVICE]` -> package.reset: restart
	// counters (of SERVICE or all), failed nodes, relocations and the failed
	// state. A failed package with auto_run on is then placed again.
	OpReset Op = "reset"
	// OpNodeHalt: `node halt NODE` -> node.halted with By. The node is no
	// longer eligible; the controller places its packages elsewhere
	// (node_halted) and its host halts its instances when it sees the higher
	// epochs; a package with no other node (or auto_run off) is halted where
	// it is (the controller's package.halting) and waits down for a node.
	OpNodeHalt Op = "node_halt"
	// OpNodeRun: `node run NODE` -> node.resumed for a drained node (its
	// maintenance ends), and node.joined from the operator for a node an
	// operator halted (its host kept its lease) or that fenced itself for a
	// fail-fast (node.fenced with hold). The node is
	// eligible again: waiting packages may start there and automatic
	// failback may bring packages back. A node that was lost or fenced joins
	// when its host manager takes its lease again, not by this command.
	OpNodeRun Op = "node_run"
	// OpNodeDrain: `node drain NODE` -> node.drained with By: maintenance.
	// The node stays a member but takes no placement; the controller moves
	// each of its packages to the next eligible node by its policy
	// (node_drained), or halts it where it is when there is none (or
	// auto_run is off), until `node run NODE` (node.resumed).
	OpNodeDrain Op = "node_drain"
	// OpNodeFreeze: `node freeze NODE [--for D]` -> node.frozen with By and
	// Until = Now + For (DefaultFreeze without --for): the node's guests keep
	// running, its guard is disarmed until Until, its host manager decides
	// nothing, and the controller neither moves its packages, places on it
	// nor records it lost, until `node thaw NODE` or Until (node.thawed).
	OpNodeFreeze Op = "node_freeze"
	// OpHaltSuccessors: the first step of `pkg halt PKG` when packages
	// depend on PKG: a package.halting with By for each of its successors
	// (transitively) that is placed, starting or running; none if none is.
	// The CLI then waits for them to be down, at most PKG's
	// successor_halt_timeout, before it halts PKG (OpHalt).
	OpHaltSuccessors Op = "halt_successors"
	// OpNodeThaw: `node thaw NODE` -> node.thawed with By.
	OpNodeThaw Op = "node_thaw"
	// OpResourceSet: `resource set NODE NAME up|down|VALUE` ->
	// node.resource_set (Serviceguard's cmsetresource): a whole-number
	// VALUE sets an extended resource, up with that value.
	OpResourceSet Op = "resource_set"
)

// DefaultFreeze is how long `node freeze` lasts without --for. A freeze is
// always bounded: a frozen node whose host manager never comes back must
// end by itself, its guard re-armed, before anything can fail over.
const DefaultFreeze = time.Hour

// Command is one operator command, checked by State.Command.
type Command struct {
	Op      Op
	Package string
	// Node is -n: the node to run or move on, or whose switching changes;
	// for OpNodeHalt and OpNodeRun the node itself.
	Node string
	// Service is -s for OpReset.
	Service string
	// Resource and Value are the resource's name and up, down or a whole
	// number, for OpResourceSet.
	Resource, Value string
	// For is --for of OpNodeFreeze (0: DefaultFreeze); Now is when the
	// command is given, from which the freeze's end is counted.
	For time.Duration
	Now time.Time
	// Reason is the operator's --reason text.
	Reason string
	// By is who asks (the user); the events' Source is CLISource(By).
	By string
}

// CLISource returns the CloudEvents source of an operator's command.
func CLISource(by string) string { return events.OperatorSource(by) }

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// Command checks cmd against the state and returns the events that carry it
// out (no ID, no Time; append each with s.Expect), or an error wrapping
// ErrRefused that says what is wrong, and no events.
func (s *State) Command(cmd Command) ([]events.Event, error) {
	if cmd.By == "" {
		return nil, refuse("%s: who asks (by) is missing", cmd.Op)
	}
	if s.Config == nil {
		return nil, refuse("no configuration in force: record one with `vmguard apply -f cluster.yaml`")
	}
	switch cmd.Op {
	case OpNodeHalt, OpNodeRun, OpNodeDrain, OpNodeFreeze, OpNodeThaw, OpResourceSet:
		return s.nodeCommand(cmd)
	case OpRun, OpHalt, OpEnable, OpDisable, OpMove, OpReset, OpHaltSuccessors:
	default:
		return nil, refuse("unknown command %q", cmd.Op)
	}
	cp, p, err := s.commandTarget(cmd)
	if err != nil {
		return nil, err
	}
	ev := events.Event{Source: CLISource(cmd.By), Subject: cp.Name}
	if cp.MultiNode() {
		switch cmd.Op {
		case OpRun:
			return s.multiRun(cmd, cp, p)
		case OpHalt:
			d, err := s.multiHalt(cmd, cp, p)
			if err != nil {
				return nil, err
			}
			ev.Data = d
			return []events.Event{ev}, nil
		case OpMove:
			return nil, refuse("move %s: a multi-node package runs on every eligible node; it does not move", cp.Name)
		}
	}
	switch cmd.Op {
	case OpHaltSuccessors:
		return s.haltSuccessors(cmd, cp), nil
	case OpRun:
		d, err := s.runPlacement(cmd, cp, p)
		if err != nil {
			return nil, err
		}
		ev.Data = d
	case OpHalt:
		if !p.Phase.active() {
			return nil, refuse("package %s is not running (STATUS %s, STATE %s)", cp.Name, p.Phase.Status(), p.Phase.State())
		}
		ev.Data = events.PackageHalting{Node: p.Node, Epoch: p.Epoch, Reason: orDefault(cmd.Reason, "operator_halt"), By: cmd.By}
	case OpEnable, OpDisable:
		ev.Data = events.PackageSwitchingChanged{Node: cmd.Node, Enabled: cmd.Op == OpEnable, Reason: cmd.Reason, By: cmd.By}
	case OpMove:
		d, err := s.movePlacement(cmd, cp, p)
		if err != nil {
			return nil, err
		}
		ev.Data = d
	case OpReset:
		if cmd.Node != "" {
			return nil, refuse("reset %s: -n does not apply; reset clears the package on every node", cp.Name)
		}
		if cmd.Service != "" {
			if _, ok := cp.Service(cmd.Service); !ok {
				return nil, refuse("reset %s: unknown service %q", cp.Name, cmd.Service)
			}
		}
		ev.Data = events.PackageReset{Service: cmd.Service, Reason: cmd.Reason, By: cmd.By}
	}
	return []events.Event{ev}, nil
}

// commandTarget returns the package a package command is about and its
// state (empty if it has none), or an error wrapping ErrRefused when the
// command cannot apply to it: an unknown package, a node not in its list,
// its node frozen (halt, move), or placements of its former package_type
// still out (run, move).
func (s *State) commandTarget(cmd Command) (config.Package, *PackageState, error) {
	cp, ok := s.Config.Package(cmd.Package)
	if !ok {
		return cp, nil, refuse("unknown package %q (configured: %s)", cmd.Package, packageNames(s.Config))
	}
	p := s.Packages[cmd.Package]
	if p == nil {
		p = &PackageState{Name: cmd.Package}
	}
	if cmd.Node != "" && !slices.Contains(cp.Nodes, cmd.Node) {
		return cp, nil, refuse("node %s is not one of package %s's nodes (%s)", cmd.Node, cp.Name, strings.Join(cp.Nodes, ", "))
	}
	if (cmd.Op == OpHalt || cmd.Op == OpMove) && s.frozenOn(p) {
		return cp, nil, refuse("%s %s: its node %s is frozen; thaw it first with `vmguard node thaw %s`", cmd.Op, cp.Name, p.Node, p.Node)
	}
	if from, nodes := p.otherType(cp); len(nodes) > 0 && (cmd.Op == OpRun || cmd.Op == OpMove) {
		return cp, nil, refuse("%s %s: it still runs as %s on %s, its package_type before the configuration in force; the controller halts it first (design-notes §8)",
			cmd.Op, cp.Name, from, strings.Join(nodes, ", "))
	}
	return cp, p, nil
}

// haltSuccessors is a package.halting of every active package that
// depends on cp (OpHaltSuccessors).
func (s *State) haltSuccessors(cmd Command, cp config.Package) []events.Event {
	var out []events.Event
	for _, name := range s.ActiveSuccessors(cp.Name) {
		o := s.Packages[name]
		out = append(out, events.Event{Source: CLISource(cmd.By), Subject: name,
			Data: events.PackageHalting{Node: o.Node, Epoch: o.Epoch, By: cmd.By,
				Reason: events.Clip(fmt.Sprintf("%s: %s, which it depends on, halts (%s)", ReasonPredecessor, cp.Name, orDefault(cmd.Reason, "operator_halt")), maxReason)}})
	}
	return out
}

// runPlacement is the placement of OpRun: on cmd.Node if it is eligible,
// else on the node the failover policy chooses.
func (s *State) runPlacement(cmd Command, cp config.Package, p *PackageState) (events.PackagePlaced, error) {
	if p.Phase.Owned() {
		return events.PackagePlaced{}, refuse("package %s is already %s on node %s", cp.Name, p.Phase.State(), p.Node)
	}
	node := cmd.Node
	if node != "" {
		if err := s.eligible(cp, p, node); err != nil {
			return events.PackagePlaced{}, refuse("run %s: %v", cp.Name, err)
		}
	} else if node = choose(cp, s.candidates(cp, p), s.loads()); node == "" {
		why := make([]string, 0, len(cp.Nodes))
		for _, n := range cp.Nodes {
			why = append(why, s.eligible(cp, p, n).Error())
		}
		return events.PackagePlaced{}, refuse("run %s: no eligible node among %s: %s", cp.Name, strings.Join(cp.Nodes, ", "), strings.Join(why, "; "))
	}
	return events.PackagePlaced{Node: node, Epoch: p.Epoch + 1, Reason: withText(ReasonOperatorRun, cmd.Reason), PreviousNode: p.Node, By: cmd.By}, nil
}

// movePlacement is the placement of OpMove: on cmd.Node, live if the
// guest runs and its driver can migrate.
func (s *State) movePlacement(cmd Command, cp config.Package, p *PackageState) (events.PackagePlaced, error) {
	switch {
	case cmd.Node == "":
		return events.PackagePlaced{}, refuse("move %s: name the node to move it to with -n", cp.Name)
	case !p.Phase.active():
		return events.PackagePlaced{}, refuse("move %s: package is not running (STATUS %s, STATE %s); use `vmguard pkg run %s -n %s`", cp.Name, p.Phase.Status(), p.Phase.State(), cp.Name, cmd.Node)
	case p.Node == cmd.Node:
		return events.PackagePlaced{}, refuse("move %s: package is already on node %s", cp.Name, cmd.Node)
	}
	if err := s.eligible(cp, p, cmd.Node); err != nil {
		return events.PackagePlaced{}, refuse("move %s: %v", cp.Name, err)
	}
	// A running guest whose driver can migrate moves live (the host
	// manager of p.Node falls back to halt + start if it cannot).
	migrate := cp.Guest.CanMigrate() && p.Phase == PhaseRunning
	return events.PackagePlaced{Node: cmd.Node, Epoch: p.Epoch + 1, Reason: withText(ReasonOperatorMove, cmd.Reason), PreviousNode: p.Node, By: cmd.By,
		Migrate: migrate}, nil
}

// nodeCommand is Command for the node commands (OpNode* and
// OpResourceSet).
func (s *State) nodeCommand(cmd Command) ([]events.Event, error) {
	if !s.Config.HasNode(cmd.Node) {
		return nil, refuse("unknown node %q (configured: %s)", cmd.Node, strings.Join(s.Config.Nodes, ", "))
	}
	n := s.Nodes[cmd.Node]
	ev := events.Event{Source: CLISource(cmd.By), Subject: cmd.Node}
	switch cmd.Op {
	case OpResourceSet:
		d, err := resourceSet(cmd)
		if err != nil {
			return nil, err
		}
		ev.Data = d
		return []events.Event{ev}, nil
	case OpNodeHalt:
		if !n.Up() {
			return nil, refuse("node %s is not up (STATE %s)", cmd.Node, n.State())
		}
		if n.Frozen() {
			return nil, refuse("node %s is frozen; thaw it first with `vmguard node thaw %s`", cmd.Node, cmd.Node)
		}
		ev.Data = events.NodeHalted{Reason: orDefault(cmd.Reason, "operator_halt"), By: cmd.By}
		return []events.Event{ev}, nil
	case OpNodeDrain:
		switch {
		case n.Drained():
			return nil, refuse("node %s is already in maintenance (drained by %s)", cmd.Node, n.Drain.By)
		case n.Frozen():
			return nil, refuse("node %s is frozen; thaw it first with `vmguard node thaw %s`", cmd.Node, cmd.Node)
		}
		ev.Data = events.NodeDrained{Reason: orDefault(cmd.Reason, "maintenance"), By: cmd.By}
		return []events.Event{ev}, nil
	case OpNodeFreeze:
		switch {
		case n.Frozen():
			return nil, refuse("node %s is already frozen (by %s, until %s)", cmd.Node, n.Freeze.By, n.Freeze.Until.UTC().Format(time.RFC3339))
		case !n.Up():
			return nil, refuse("node %s is not up (STATE %s): there is nothing to freeze", cmd.Node, n.State())
		case cmd.For < 0:
			return nil, refuse("freeze %s: --for %s is negative", cmd.Node, cmd.For)
		case cmd.Now.IsZero():
			return nil, refuse("freeze %s: the time of the command is missing", cmd.Node)
		}
		d := cmd.For
		if d == 0 {
			d = DefaultFreeze
		}
		ev.Data = events.NodeFrozen{Until: cmd.Now.Add(d).UTC(), Reason: orDefault(cmd.Reason, "freeze"), By: cmd.By}
		return []events.Event{ev}, nil
	case OpNodeThaw:
		if !n.Frozen() {
			return nil, refuse("node %s is not frozen", cmd.Node)
		}
		ev.Data = events.NodeThawed{Reason: orDefault(cmd.Reason, "operator_thaw"), By: cmd.By}
		return []events.Event{ev}, nil
	}
	return nodeRun(cmd, n, ev)
}

// resourceSet is the node.resource_set of OpResourceSet: up, down or a
// whole number (a resource that is up).
func resourceSet(cmd Command) (events.NodeResourceSet, error) {
	if err := events.CheckName("resource", cmd.Resource); err != nil {
		return events.NodeResourceSet{}, refuse("%v", err)
	}
	d := events.NodeResourceSet{Name: cmd.Resource, Reason: cmd.Reason, By: cmd.By}
	switch cmd.Value {
	case events.ResourceUp, events.ResourceDown:
		d.Status = cmd.Value
	default:
		v, err := strconv.ParseInt(cmd.Value, 10, 64)
		if err != nil {
			return events.NodeResourceSet{}, refuse("resource %s: %q: want up, down or a whole number", cmd.Resource, cmd.Value)
		}
		d.Status, d.Value = events.ResourceUp, strconv.FormatInt(v, 10)
	}
	return d, nil
}

// nodeRun is the events of OpNodeRun (ev is their envelope): the end of
// the node's maintenance, and its join if an operator halted it or a
// fail-fast fence holds it out.
func nodeRun(cmd Command, n *NodeState, ev events.Event) ([]events.Event, error) {
	var out []events.Event
	if n.Drained() {
		// `node run` ends the maintenance; a node an operator also halted
		// joins again below.
		e := ev
		e.Data = events.NodeResumed{Reason: orDefault(cmd.Reason, "operator_run"), By: cmd.By}
		out = append(out, e)
		if n.Up() || !n.HaltedByOperator() {
			return out, nil
		}
	}
	switch {
	case n.Up():
		return nil, refuse("node %s is already running", cmd.Node)
	case n != nil && n.Membership == MemberFenced && n.FenceHold:
		// A fail-fast fence holds the node out until now.
	case !n.HaltedByOperator():
		return nil, refuse("node %s is down (STATE %s) and was not halted by an operator: start its host manager (`vmguard host --node %s`), which joins it", cmd.Node, n.State(), cmd.Node)
	}
	ev.Data = events.NodeJoined{Reason: orDefault(cmd.Reason, "operator_run"), By: cmd.By}
	return append(out, ev), nil
}

func withText(code, text string) string {
	if text == "" {
		return code
	}
	return code + ": " + text
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func packageNames(c *config.Cluster) string {
	out := make([]string, 0, len(c.Packages))
	for _, p := range c.Packages {
		out = append(out, p.Name)
	}
	return strings.Join(out, ", ")
}
