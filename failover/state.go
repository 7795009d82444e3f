package failover

import (
	"slices"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// Phase is where a package is in its life on its current placement. STATUS
// and STATE, as cmviewcl shows them, are derived from it.
type Phase string

// Phases of a package.
const (
	// PhaseNone: never placed (epoch 0).
	PhaseNone Phase = ""
	// PhasePlaced: package.placed seen; the node has not begun starting it
	// (it may be waiting for the previous placement to be released).
	PhasePlaced Phase = "placed"
	// PhaseStarting: package.starting seen.
	PhaseStarting Phase = "starting"
	// PhaseRunning: package.started seen.
	PhaseRunning Phase = "running"
	// PhaseHalting: package.halting seen.
	PhaseHalting Phase = "halting"
	// PhaseFailing: a service failed; the node is halting the package.
	PhaseFailing Phase = "failing"
	// PhaseHalted: package.halted seen: down on purpose.
	PhaseHalted Phase = "halted"
	// PhaseFailed: package.failed seen: down because it failed.
	PhaseFailed Phase = "failed"
	// PhaseLost: its node was lost or fenced while the package was placed
	// there: down, and not halted by anyone.
	PhaseLost Phase = "lost"
)

// Owned reports whether a package in this phase occupies its node.
func (p Phase) Owned() bool {
	switch p {
	case PhasePlaced, PhaseStarting, PhaseRunning, PhaseHalting, PhaseFailing:
		return true
	}
	return false
}

// active reports whether the package is placed, starting or running: what
// min_package_node counts and what a move or node halt takes away.
func (p Phase) active() bool {
	return p == PhasePlaced || p == PhaseStarting || p == PhaseRunning
}

// Status returns the package STATUS cmviewcl shows: up, down, starting,
// halting or failing.
func (p Phase) Status() string {
	switch p {
	case PhasePlaced, PhaseStarting:
		return "starting"
	case PhaseRunning:
		return "up"
	case PhaseHalting:
		return "halting"
	case PhaseFailing:
		return "failing"
	}
	return "down"
}

// State returns the package STATE cmviewcl shows: running, starting,
// halting, halted or failed.
func (p Phase) State() string {
	switch p {
	case PhasePlaced, PhaseStarting:
		return "starting"
	case PhaseRunning:
		return "running"
	case PhaseHalting, PhaseFailing:
		return "halting"
	case PhaseFailed, PhaseLost:
		return "failed"
	}
	return "halted"
}

// Membership is what the log last said about a node being in the cluster.
type Membership string

// Memberships of a node.
const (
	// MemberUnknown: no node event yet; the node counts as down.
	MemberUnknown Membership = ""
	// MemberJoined: node.joined; the node is up.
	MemberJoined Membership = "joined"
	// MemberLost: node.lost; its lease expired.
	MemberLost Membership = "lost"
	// MemberFenced: node.fenced; its host lost its lease and halted its packages.
	MemberFenced Membership = "fenced"
	// MemberHalted: node.halted; it left on purpose (operator `node halt`).
	MemberHalted Membership = "halted"
)

// NodeState is what the log says about one node.
type NodeState struct {
	Name       string     `json:"name"`
	Membership Membership `json:"membership"`
	// HaltedBy is who halted the node (node.halted by), "" otherwise; a
	// node.lost of a halted node keeps it.
	HaltedBy string `json:"halted_by,omitempty"`
	// FenceHold: the node fenced itself and stays out until an operator's
	// `node run` (node.fenced with hold: a fail-fast).
	FenceHold bool `json:"fence_hold,omitempty"`
	// FenceReason is the reason of its last node.fenced.
	FenceReason string `json:"fence_reason,omitempty"`
	// JoinedSeq and JoinedID name its last node.joined.
	JoinedSeq uint64 `json:"joined_seq,omitempty"`
	JoinedID  string `json:"joined_id,omitempty"`
	// EventID is the id of its last membership event.
	EventID string `json:"event_id,omitempty"`
	// LastSeq is the stream sequence of the last event about the node.
	LastSeq uint64 `json:"last_seq,omitempty"`
	// EligibleSeq and EligibleID name the last event that let the node take
	// placements again (node.joined, node.resumed, node.thawed): failback
	// and a waiting package's placement name it as their cause.
	EligibleSeq uint64 `json:"eligible_seq,omitempty"`
	EligibleID  string `json:"eligible_id,omitempty"`
	// Drain is the node's maintenance (node.drained until node.resumed),
	// nil when it is in none. It outlives the node's loss and join: a
	// drained node stays out of placement until an operator runs it.
	Drain *Hold `json:"drain,omitempty"`
	// Freeze is the node's freeze (node.frozen until node.thawed), nil
	// when it is not frozen.
	Freeze *Hold `json:"freeze,omitempty"`
	// FreezeEnd is the Until of the node's last freeze, kept after it is
	// thawed: until FreezeEnd + node_timeout the node's guard and agents may
	// still be disarmed by it, so its lease's absence proves nothing
	// (MayDeclareLost).
	FreezeEnd time.Time `json:"freeze_end,omitzero"`
	// ThawedAt is the time of the node.thawed that ended its last freeze.
	ThawedAt time.Time `json:"thawed_at,omitzero"`
	// Resources holds the generic resources set on the node
	// (node.resource_set), by name; one never set is down.
	Resources map[string]ResourceStatus `json:"resources,omitempty"`
}

// ResourceStatus is a generic resource's last status on a node.
type ResourceStatus struct {
	Status string `json:"status"`
	Value  string `json:"value,omitempty"`
	// Seq and ID name the node.resource_set.
	Seq uint64 `json:"seq"`
	ID  string `json:"id"`
}

// ResourceMet reports whether resource r is up on the node by its
// criterion.
func (n *NodeState) ResourceMet(r config.Resource) bool {
	if n == nil {
		return false
	}
	st := n.Resources[r.Name]
	return r.Met(st.Status, st.Value)
}

// Hold is an operator's drain or freeze of a node.
type Hold struct {
	By     string `json:"by,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Until ends a freeze (its --for); zero for a drain.
	Until time.Time `json:"until,omitzero"`
	// Seq and ID name the node.drained or node.frozen.
	Seq uint64 `json:"seq"`
	ID  string `json:"id"`
}

// Drained reports whether the node is in maintenance (`node drain`).
func (n *NodeState) Drained() bool { return n != nil && n.Drain != nil }

// Frozen reports whether the node is frozen (`node freeze`).
func (n *NodeState) Frozen() bool { return n != nil && n.Freeze != nil }

// MayDeclareLost reports whether the controller may record node.lost for
// the node once its lease is gone, at now with node_timeout ttl; armed is
// the renewal time of the last lease value it saw the node's host manager
// write without frozen_until (zero: none). Never while the node is frozen
// (its guard and agents are disarmed: the lease's absence does not mean its
// guests are stopped). After a thaw, only once the host manager was seen
// renewing unfrozen since the thaw (it re-arms its guard with the usual
// deadline when it reads the thaw, before it writes such a value), or else
// once ttl has passed since the freeze's end (a node thawed while its host
// manager is down: the guard's last deadline was the freeze's end plus the
// usual bound, which the fencing timeline fits in node_timeout).
func (n *NodeState) MayDeclareLost(now time.Time, ttl time.Duration, armed time.Time) bool {
	switch {
	case n.Frozen():
		return false
	case n == nil || n.FreezeEnd.IsZero():
		return true
	case !n.ThawedAt.IsZero() && armed.After(n.ThawedAt):
		return true
	}
	return !now.Before(n.FreezeEnd.Add(ttl))
}

// Up reports whether the node is up: a node.joined after its last
// node.lost, node.fenced or node.halted.
func (n *NodeState) Up() bool { return n != nil && n.Membership == MemberJoined }

// LeaseWatched reports whether the controller records node.lost for the
// node once its lease is gone: it is up, or an operator halted it (what
// still halts there must end if the node goes down: sim finding
// halt_on_halted_node). A node its host manager halted on a clean stop
// gave its lease up on purpose with nothing left running.
func (n *NodeState) LeaseWatched() bool {
	return n.Up() || n != nil && n.Membership == MemberHalted && n.HaltedBy != ""
}

// HaltedByOperator reports whether an operator halted the node and it has
// not joined since: halted, or lost while halted (`node run` lets it join).
func (n *NodeState) HaltedByOperator() bool {
	return n != nil && n.HaltedBy != "" && (n.Membership == MemberHalted || n.Membership == MemberLost)
}

// Status returns the node STATUS cmviewcl shows: up or down.
func (n *NodeState) Status() string {
	if n.Up() {
		return "up"
	}
	return "down"
}

// State returns the node STATE cmviewcl shows: running, frozen or
// maintenance (drained), halted, failed, or unknown before any node event.
func (n *NodeState) State() string {
	if n == nil {
		return "unknown"
	}
	switch n.Membership {
	case MemberJoined:
		switch {
		case n.Frozen():
			return "frozen"
		case n.Drained():
			return "maintenance"
		}
		return "running"
	case MemberHalted:
		return "halted"
	case MemberLost, MemberFenced:
		return "failed"
	}
	return "unknown"
}

// ServiceState is what the log says about one service of a package on its
// current placement.
type ServiceState struct {
	Status ServiceStatus `json:"status"`
	// Restarts is the last service.restarting attempt since the placement or
	// the last reset.
	Restarts int `json:"restarts"`
}

// ServiceStatus is what the log says about a service of a package's current
// placement, as `vmguard status -v` shows it.
type ServiceStatus string

// The service statuses.
const (
	// ServiceDown: not running in the current placement (not started
	// there yet, or its process exited).
	ServiceDown ServiceStatus = "down"
	// ServiceUp: its process is running (process.started, or carried by
	// guest.migrated).
	ServiceUp ServiceStatus = "up"
	// ServiceRestarting: the host manager is restarting it (service.restarting).
	ServiceRestarting ServiceStatus = "restarting"
	// ServiceFailed: it exceeded its restarts (service.failed); an exit
	// does not change it, a new start or a new placement does.
	ServiceFailed ServiceStatus = "failed"
)

// PackageState is what the log says about one package.
type PackageState struct {
	Name string `json:"name"`
	// Node is the node of the current placement ("" if never placed).
	Node string `json:"node,omitempty"`
	// Epoch is the current placement's epoch (0: never placed).
	Epoch uint64 `json:"epoch"`
	Phase Phase  `json:"phase"`
	// AdoptedEpoch is the epoch whose processes the current placement took
	// over by a live migration (guest.migrated; 0: none): they report it.
	AdoptedEpoch uint64 `json:"adopted_epoch,omitempty"`
	// PlacedSeq, PlacedID and PlacedReason describe the current placement.
	PlacedSeq    uint64 `json:"placed_seq,omitempty"`
	PlacedID     string `json:"placed_id,omitempty"`
	PlacedReason string `json:"placed_reason,omitempty"`
	// StateID is the id of the event that last set Phase to a down phase
	// (halted, failed, lost), or PlacedID: where `explain` starts. StateSeq
	// is its stream sequence.
	StateID  string `json:"state_id,omitempty"`
	StateSeq uint64 `json:"state_seq,omitempty"`
	// HaltingAt is the time of the package.halting that began halting the
	// current placement (zero: none): a predecessor's move waits for it at
	// most its successor_halt_timeout.
	HaltingAt time.Time `json:"halting_at,omitzero"`
	// Leaving lists older placements of the package that still occupy
	// their node: replaced by a newer placement (a move, a node halt or
	// drain, failback) but not yet released there (package.halted or
	// package.failed of their epoch, guest.migrated, or their node lost or
	// fenced). An exclusion counts them.
	Leaving []Instance `json:"leaving,omitempty"`
	// ChangeSeq and ChangeID name the last event that changed Phase: what
	// a dependent package's halt names as its cause.
	ChangeSeq uint64 `json:"change_seq,omitempty"`
	ChangeID  string `json:"change_id,omitempty"`
	// DownReason says why the package is down (the halted or failed reason).
	DownReason string `json:"down_reason,omitempty"`
	// AutoRun is the operator's override of the configured auto_run
	// (switching_changed without node, or a halt by an operator); nil: none.
	AutoRun *bool `json:"auto_run,omitempty"`
	// SwitchingOff lists nodes whose switching an operator disabled for the
	// package, in the order they were disabled.
	SwitchingOff []string `json:"switching_off,omitempty"`
	// FailedNodes lists the nodes it failed on since its last reset.
	FailedNodes []string `json:"failed_nodes,omitempty"`
	// Relocations counts automatic moves (failover, node_lost) since its last
	// reset; max_relocate bounds it.
	Relocations int `json:"relocations"`
	// Services holds each service's status and restarts on the placement.
	Services map[string]*ServiceState `json:"services,omitempty"`
	// Guest is the guest's phase on the placement: up, lost or down ("":
	// nothing heard of it yet).
	Guest events.GuestPhase `json:"guest,omitempty"`
	// CauseSeq and CauseID name the event that last made a placement due
	// (failed, node lost or halted, halted, reset, switching enabled).
	CauseSeq uint64 `json:"cause_seq,omitempty"`
	CauseID  string `json:"cause_id,omitempty"`
	// LastSeq is the stream sequence of the last event on the package's
	// subjects, whatever its epoch: what ExpectPackageSeq needs.
	LastSeq uint64 `json:"last_seq,omitempty"`
	// Instances holds a multi-node package's instance on each node it was
	// ever placed on, by node: each the state of that node's placements
	// alone (its Node, Epoch, Phase, Services and restarts). For such a
	// package Epoch is the highest epoch placed on any node (the next
	// placement, wherever, takes the one after), Node is "" and Phase the
	// most alive of its instances' phases (aggregate); AutoRun,
	// SwitchingOff, FailedNodes and the cause are the package's.
	Instances map[string]*PackageState `json:"instances,omitempty"`
}

// Instance is one placement of a package: its node and epoch.
type Instance struct {
	Node  string `json:"node"`
	Epoch uint64 `json:"epoch"`
	// Halting: a package.halting of it was seen while it was leaving (only
	// after a change of package_type, typechange.go: the controller asks
	// once).
	Halting bool `json:"halting,omitempty"`
}

// released drops the leaving placement of epoch (0: those on node).
func (p *PackageState) released(epoch uint64, node string) {
	p.Leaving = slices.DeleteFunc(p.Leaving, func(in Instance) bool {
		return (epoch != 0 && in.Epoch == epoch) || (node != "" && in.Node == node)
	})
	if len(p.Leaving) == 0 {
		p.Leaving = nil
	}
}

// FailedOn reports whether the package failed on node since its last reset.
func (p *PackageState) FailedOn(node string) bool {
	return p != nil && slices.Contains(p.FailedNodes, node)
}

// SwitchingEnabled reports whether node switching is on for node.
func (p *PackageState) SwitchingEnabled(node string) bool {
	return p == nil || !slices.Contains(p.SwitchingOff, node)
}

// State is the failover controller's view of the cluster, folded from every
// event of the log. The zero value is an empty log. Fold into it with Apply;
// read it freely, but do not change it other than through Apply.
type State struct {
	// Seq is the stream sequence of the last applied event.
	Seq uint64 `json:"seq"`
	// Time is the time of the last applied event.
	Time time.Time `json:"time,omitzero"`
	// Config is the configuration in force (the last cluster.config_applied
	// that decoded), nil before any.
	Config *config.Cluster `json:"config,omitempty"`
	// ConfigSeq and ConfigID name the event that put Config in force.
	ConfigSeq uint64 `json:"config_seq,omitempty"`
	ConfigID  string `json:"config_id,omitempty"`
	// ConfigErr says why the last cluster.config_applied was not used.
	ConfigErr string `json:"config_error,omitempty"`
	// Nodes and Packages hold every node and package events named.
	Nodes    map[string]*NodeState    `json:"nodes,omitempty"`
	Packages map[string]*PackageState `json:"packages,omitempty"`

	// plan holds, while due runs, the placements it decided so far
	// (package -> node), for the dependency checks; nil otherwise.
	plan map[string]string
	// cfgIx and pkgIx index Config and Packages (index.go); nil until
	// first used.
	cfgIx *configIndex
	pkgIx *stateIndex
}

// Fold returns the state after evs.
func Fold(evs []events.Event) *State {
	s := &State{}
	for _, e := range evs {
		s.Apply(e)
	}
	return s
}

// FoldUntil returns the state as it was at stream sequence seq: the fold of
// the events of evs with Seq <= seq (`status --at SEQ`).
func FoldUntil(evs []events.Event, seq uint64) *State {
	s := &State{}
	for _, e := range evs {
		if e.Seq > seq {
			continue
		}
		s.Apply(e)
	}
	return s
}

// SeqAt returns the stream sequence of the last event of evs written at or
// before t (0 if none): with FoldUntil, the state at a moment (`status --at
// TIME`). Writers' clocks may disagree a little; the log's order wins, so an
// event stamped after t but stored before one stamped at or before t counts.
func SeqAt(evs []events.Event, t time.Time) uint64 {
	var seq uint64
	for _, e := range evs {
		if !e.Time.After(t) && e.Seq > seq {
			seq = e.Seq
		}
	}
	return seq
}

// Clone returns a deep copy of s.
func (s *State) Clone() *State {
	c := *s
	c.Nodes, c.Packages, c.plan = nil, nil, nil
	if s.Nodes != nil {
		c.Nodes = make(map[string]*NodeState, len(s.Nodes))
	}
	for k, n := range s.Nodes {
		nn := *n
		if n.Drain != nil {
			d := *n.Drain
			nn.Drain = &d
		}
		if n.Freeze != nil {
			f := *n.Freeze
			nn.Freeze = &f
		}
		c.Nodes[k] = &nn
	}
	if s.Packages != nil {
		c.Packages = make(map[string]*PackageState, len(s.Packages))
	}
	for k, p := range s.Packages {
		c.Packages[k] = p.clone()
	}
	// Config is never changed in place, only replaced: its index too.
	c.pkgIx = s.pkgIx.clone()
	return &c
}

// clone returns a deep copy of p.
func (p *PackageState) clone() *PackageState {
	pp := *p
	if p.AutoRun != nil {
		v := *p.AutoRun
		pp.AutoRun = &v
	}
	pp.SwitchingOff = slices.Clone(p.SwitchingOff)
	pp.FailedNodes = slices.Clone(p.FailedNodes)
	pp.Leaving = slices.Clone(p.Leaving)
	if p.Services != nil {
		pp.Services = make(map[string]*ServiceState, len(p.Services))
		for name, sv := range p.Services {
			v := *sv
			pp.Services[name] = &v
		}
	}
	if p.Instances != nil {
		pp.Instances = make(map[string]*PackageState, len(p.Instances))
		for node, in := range p.Instances {
			pp.Instances[node] = in.clone()
		}
	}
	return &pp
}

// Node returns the state of node, or nil if no event named it.
func (s *State) Node(name string) *NodeState { return s.Nodes[name] }

// Package returns the state of package name, or nil if no event named it.
func (s *State) Package(name string) *PackageState { return s.Packages[name] }

// PackageSeq returns the stream sequence of the last event about package
// pkg: the value to append a decision about it with (events.ExpectPackageSeq).
func (s *State) PackageSeq(pkg string) uint64 {
	if p := s.Packages[pkg]; p != nil {
		return p.LastSeq
	}
	return 0
}

// NodeSeq returns the stream sequence of the last event about node.
func (s *State) NodeSeq(node string) uint64 {
	if n := s.Nodes[node]; n != nil {
		return n.LastSeq
	}
	return 0
}

// Expect returns the append condition that guards an event the core returned:
// the expected last sequence of its package's (or node's) subjects as this
// state saw them. The append fails with events.ErrConflict if anything about
// them was written since; then re-read, apply and decide again.
func (s *State) Expect(e events.Event) events.Expect {
	if sc, err := events.ScopeOf(e.Type()); err == nil && sc == events.ScopeNode {
		return events.ExpectLastSeq(events.NodeFilter(e.Subject), s.NodeSeq(e.Subject))
	}
	return events.ExpectPackageSeq(e.Subject, s.PackageSeq(e.Subject))
}

// AutoRunEnabled reports whether auto_run (package switching) is on for
// pkg: the operator's last word, else the configuration.
func (s *State) AutoRunEnabled(pkg string) bool {
	if p := s.Packages[pkg]; p != nil && p.AutoRun != nil {
		return *p.AutoRun
	}
	if s.Config == nil {
		return false
	}
	cp, ok := s.Config.Package(pkg)
	return ok && cp.AutoRunEnabled()
}

// autoRun is AutoRunEnabled for a configured package.
func (s *State) autoRun(cp config.Package) bool {
	if p := s.Packages[cp.Name]; p != nil && p.AutoRun != nil {
		return *p.AutoRun
	}
	return cp.AutoRunEnabled()
}

// PackagesOn returns the packages that occupy node (placed, starting,
// running, halting or failing there), sorted by name.
func (s *State) PackagesOn(node string) []string {
	var out []string
	for name, p := range s.Packages {
		if p.Node == node && p.Phase.Owned() {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// Apply folds e into s and reports whether it was new. An event whose Seq is
// at or below s.Seq (a duplicate, a replay, or one never read from the log:
// Seq 0) changes nothing. Events about an older epoch than the package's
// current placement count only for PackageSeq.
//
// Longer than 80 lines: one switch over event types, a short case each
// (a package's events go on to applyTo); the fold reads best as the one
// place where every event's effect on the cluster is seen
// (docs/design-notes.md §5).
func (s *State) Apply(e events.Event) bool {
	if e.Seq <= s.Seq {
		return false
	}
	s.Seq = e.Seq
	if !e.Time.IsZero() {
		s.Time = e.Time
	}
	switch d := e.Data.(type) {
	case events.ConfigApplied:
		c, err := config.FromJSON(d.Config)
		if err != nil {
			s.ConfigErr = err.Error()
			break
		}
		s.Config, s.ConfigSeq, s.ConfigID, s.ConfigErr = c, e.Seq, e.ID, ""
		s.configIndex()
		s.retireAll()
	case events.NodeJoined:
		n := s.node(e)
		n.Membership, n.HaltedBy, n.EventID, n.FenceHold = MemberJoined, "", e.ID, false
		n.JoinedSeq, n.JoinedID = e.Seq, e.ID
		n.EligibleSeq, n.EligibleID = e.Seq, e.ID
	case events.NodeResourceSet:
		s.node(e).resourceSet(e, d)
	case events.NodeDrained:
		n := s.node(e)
		n.Drain = &Hold{By: d.By, Reason: d.Reason, Seq: e.Seq, ID: e.ID}
		s.nodeHeld(n, e)
	case events.NodeResumed:
		n := s.node(e)
		if n.Drain != nil {
			n.Drain = nil
			n.EligibleSeq, n.EligibleID = e.Seq, e.ID
		}
	case events.NodeFrozen:
		n := s.node(e)
		n.Freeze = &Hold{By: d.By, Reason: d.Reason, Until: d.Until, Seq: e.Seq, ID: e.ID}
		n.FreezeEnd = d.Until
		if d.Until.IsZero() {
			// Unbounded (written by hand: the CLI always sets it): the
			// freeze's end is its thaw, below.
			n.FreezeEnd = e.Time
		}
	case events.NodeThawed:
		n := s.node(e)
		if n.Freeze != nil {
			if n.Freeze.Until.IsZero() {
				n.FreezeEnd = e.Time
			}
			n.Freeze, n.ThawedAt = nil, e.Time
			n.EligibleSeq, n.EligibleID = e.Seq, e.ID
		}
	case events.NodeLost:
		s.nodeDown(e, MemberLost, "")
	case events.NodeFenced:
		s.nodeDown(e, MemberFenced, "")
		s.node(e).FenceHold, s.node(e).FenceReason = d.Hold, d.Reason
	case events.NodeHalted:
		s.nodeDown(e, MemberHalted, d.By)
	case events.PackagePlaced, events.PackageStarting, events.PackageStarted, events.PackageHalting,
		events.PackageHalted, events.PackageFailed, events.PackageSwitchingChanged, events.PackageReset,
		events.GuestStarted, events.GuestLost, events.GuestStopped, events.GuestMigrated,
		events.GuestMigrating, events.GuestMigrationFailed, // only the package's sequence
		events.ServiceRestarting, events.ServiceFailed, events.ProcessStarted, events.ProcessExited:
		if e.Subject != "" {
			s.applyPackage(e)
			s.indexed(e.Subject)
		}
	case events.PackageChecked:
		// A marker of a placement of another package (design-notes §7):
		// only the package's sequence moves.
		if e.Subject != "" {
			s.pkg(e.Subject).LastSeq = e.Seq
			s.indexed(e.Subject)
		}
	default:
		if sc, err := events.ScopeOf(e.Type()); err == nil && sc == events.ScopeNode && e.Subject != "" {
			s.node(e) // node.taken_over: only the node's sequence
		}
	}
	return true
}

// resourceSet folds node.resource_set e (data d) into the node's
// resources.
func (n *NodeState) resourceSet(e events.Event, d events.NodeResourceSet) {
	prev, had := n.Resources[d.Name]
	if n.Resources == nil {
		n.Resources = map[string]ResourceStatus{}
	}
	n.Resources[d.Name] = ResourceStatus{Status: d.Status, Value: d.Value, Seq: e.Seq, ID: e.ID}
	if d.Status == events.ResourceUp && (!had || prev.Status != d.Status || prev.Value != d.Value) {
		// It may make the node eligible for a waiting package, which
		// then names this event as its placement's cause.
		n.EligibleSeq, n.EligibleID = e.Seq, e.ID
	}
}

// nodeHeld notes e (a drain) as the cause of the placements it makes due.
func (s *State) nodeHeld(n *NodeState, e events.Event) {
	for _, p := range s.Packages {
		if p.Node == n.Name && p.Phase.active() {
			p.CauseSeq, p.CauseID = e.Seq, e.ID
		}
	}
}

// Skip records a message at seq on subject that the log skipped as
// malformed (events.ReadOptions.OnSkip): it changes nothing but the last
// sequences, so that an expected-sequence append about that package or node
// does not conflict forever with a message no one can read. Like Apply, it
// ignores a seq at or below s.Seq.
func (s *State) Skip(seq uint64, subject string) {
	if seq <= s.Seq {
		return
	}
	s.Seq = seq
	if pkg := events.PackageOfSubject(subject); pkg != "" {
		s.pkg(pkg).LastSeq = seq
		s.indexed(pkg)
		return
	}
	if node := events.NodeOfSubject(subject); node != "" {
		s.node(events.Event{Subject: node, Seq: seq})
	}
}

func (s *State) node(e events.Event) *NodeState {
	if s.Nodes == nil {
		s.Nodes = map[string]*NodeState{}
	}
	n := s.Nodes[e.Subject]
	if n == nil {
		n = &NodeState{Name: e.Subject}
		s.Nodes[e.Subject] = n
	}
	n.LastSeq = e.Seq
	return n
}

// nodeDown records that a node left. Packages placed on a lost or fenced node
// are down there (its host is gone or halted them itself): lost, or halted if
// an operator was halting them, or failed if they were failing. Packages on a
// halted node keep running until its host halts them; the controller moves
// them (Decide), so only the cause is noted.
func (s *State) nodeDown(e events.Event, m Membership, by string) {
	n := s.node(e)
	if m == MemberLost && n.Membership == MemberHalted {
		// Lost while an operator held it halted: it stays out until `node
		// run`, as its host manager has it (hostmanager.Member).
		by = n.HaltedBy
	}
	n.Membership, n.HaltedBy, n.EventID = m, by, e.ID
	for name, p := range s.Packages {
		// Both its instance there and its failover placement: after a
		// change of package_type it may have both (typechange.go).
		if in := p.Instances[n.Name]; in != nil {
			in.nodeDown(n.Name, m, e)
			p.lift(in)
			p.aggregate()
			if cp, ok := s.configured(name); ok && !cp.MultiNode() {
				p.retire()
			}
		}
		p.nodeDown(n.Name, m, e)
		s.indexed(name)
	}
}

// nodeDown is State.nodeDown for package (or instance) p.
func (p *PackageState) nodeDown(node string, m Membership, e events.Event) {
	if m != MemberHalted && len(p.Leaving) > 0 {
		p.released(0, node)
	}
	if p.Node != node || !p.Phase.Owned() {
		return
	}
	p.CauseSeq, p.CauseID = e.Seq, e.ID
	if m == MemberHalted {
		return
	}
	switch p.Phase {
	case PhaseHalting:
		p.Phase, p.DownReason = PhaseHalted, "node "+string(m)
	case PhaseFailing:
		p.Phase, p.DownReason = PhaseFailed, "node "+string(m)
		p.addFailed(node)
	default:
		p.Phase, p.DownReason = PhaseLost, "node "+string(m)
	}
	p.StateID, p.StateSeq = e.ID, e.Seq
	p.ChangeSeq, p.ChangeID = e.Seq, e.ID
}

func (s *State) pkg(name string) *PackageState {
	if s.Packages == nil {
		s.Packages = map[string]*PackageState{}
	}
	p := s.Packages[name]
	if p == nil {
		p = &PackageState{Name: name}
		s.Packages[name] = p
	}
	return p
}

func (p *PackageState) addFailed(node string) {
	if node != "" && !slices.Contains(p.FailedNodes, node) {
		p.FailedNodes = append(p.FailedNodes, node)
	}
}

func (p *PackageState) service(name string) *ServiceState {
	if p.Services == nil {
		p.Services = map[string]*ServiceState{}
	}
	sv := p.Services[name]
	if sv == nil {
		sv = &ServiceState{Status: ServiceDown}
		p.Services[name] = sv
	}
	return sv
}

// applyPackage folds a package, guest, service or process event: by the
// configuration in force, but an event about a placement of the package's
// former package_type goes to that placement (typechange.go).
func (s *State) applyPackage(e events.Event) {
	p := s.pkg(e.Subject)
	cp, ok := s.configured(e.Subject)
	epoch, one := eventEpoch(e)
	switch {
	case ok && cp.MultiNode() && one && p.holds(epoch):
		s.applyTo(p, e) // its failover placement
		if _, halting := e.Data.(events.PackageHalting); halting {
			for i := range p.Leaving {
				p.Leaving[i].Halting = p.Leaving[i].Halting || p.Leaving[i].Epoch == epoch
			}
		}
	case ok && cp.MultiNode():
		s.applyMulti(p, e)
	case p.Instances != nil && one && p.instanceOf(epoch) != nil:
		in := p.instanceOf(epoch)
		p.LastSeq = e.Seq
		if d, ok := e.Data.(events.PackageHalting); ok && d.By != "" {
			off := false // an operator's halt is the package's, as in applyMulti
			p.AutoRun = &off
		}
		s.applyTo(in, e)
		p.lift(in)
		p.aggregate()
		if ok {
			p.retire()
		}
	default:
		s.applyTo(p, e)
	}
}

// applyTo folds a package, guest, service or process event into p: the
// package, or one instance of a multi-node package (applyMulti).
//
// Longer than 80 lines: one switch over event types, a short case each; the
// fold reads best as the one place where every event's effect on a package
// is seen (docs/design-notes.md §5).
func (s *State) applyTo(p *PackageState, e events.Event) {
	p.LastSeq = e.Seq
	was := p.Phase
	defer func() {
		if p.Phase != was {
			p.ChangeSeq, p.ChangeID = e.Seq, e.ID
		}
	}()
	cur := func(epoch uint64) bool { return p.Epoch != 0 && epoch == p.Epoch }
	switch d := e.Data.(type) {
	case events.PackagePlaced:
		if d.Epoch <= p.Epoch {
			return
		}
		if code := ReasonCode(d.Reason); (code == ReasonFailover || code == ReasonNodeLost) && d.Node != p.Node {
			p.Relocations++
		}
		if p.Phase.Owned() && p.Node != "" {
			p.Leaving = append(p.Leaving, Instance{Node: p.Node, Epoch: p.Epoch})
		}
		p.Node, p.Epoch, p.Phase = d.Node, d.Epoch, PhasePlaced
		p.PlacedSeq, p.PlacedID, p.PlacedReason = e.Seq, e.ID, d.Reason
		p.StateID, p.StateSeq, p.DownReason, p.Guest, p.AdoptedEpoch, p.HaltingAt = e.ID, e.Seq, "", "", 0, time.Time{}
		for _, sv := range p.Services {
			sv.Status, sv.Restarts = ServiceDown, 0
		}
		if n := s.Nodes[d.Node]; n != nil && (n.Membership == MemberLost || n.Membership == MemberFenced) {
			// Placed on a node the log already had down (a decision made
			// from a state that had not read the loss yet): nothing on
			// that node will start or release it, so it is lost at once
			// and placed again.
			p.Phase, p.DownReason = PhaseLost, "node "+string(n.Membership)
			p.CauseSeq, p.CauseID = e.Seq, e.ID
		}
	case events.PackageStarting:
		if cur(d.Epoch) && (p.Phase == PhasePlaced || p.Phase == PhaseStarting) {
			p.Phase = PhaseStarting
		}
	case events.PackageStarted:
		if cur(d.Epoch) && (p.Phase == PhasePlaced || p.Phase == PhaseStarting) {
			p.Phase = PhaseRunning
		}
	case events.PackageHalting:
		if d.By != "" {
			// An operator halt disables auto_run, as cmhaltpkg does.
			off := false
			p.AutoRun = &off
		}
		if cur(d.Epoch) && p.Phase.active() {
			p.Phase, p.HaltingAt = PhaseHalting, e.Time
		}
	case events.PackageHalted:
		p.released(d.Epoch, "")
		if cur(d.Epoch) && p.Phase != PhaseHalted && p.Phase != PhaseFailed {
			p.Phase, p.DownReason, p.StateID, p.StateSeq = PhaseHalted, d.Reason, e.ID, e.Seq
			p.CauseSeq, p.CauseID = e.Seq, e.ID
		}
	case events.PackageFailed:
		p.released(d.Epoch, "")
		if cur(d.Epoch) && p.Phase != PhaseFailed {
			node := d.Node
			if node == "" {
				node = p.Node
			}
			p.addFailed(node)
			reason := d.Reason
			if d.Service != "" {
				reason += " (service " + d.Service + ")"
			}
			p.Phase, p.DownReason, p.StateID, p.StateSeq = PhaseFailed, reason, e.ID, e.Seq
			p.CauseSeq, p.CauseID = e.Seq, e.ID
		}
	case events.PackageSwitchingChanged:
		if d.Node == "" {
			v := d.Enabled
			p.AutoRun = &v
		} else {
			p.SwitchingOff = slices.DeleteFunc(p.SwitchingOff, func(n string) bool { return n == d.Node })
			if !d.Enabled {
				p.SwitchingOff = append(p.SwitchingOff, d.Node)
			}
		}
		if d.Enabled {
			p.CauseSeq, p.CauseID = e.Seq, e.ID
		}
	case events.PackageReset:
		p.FailedNodes, p.Relocations = nil, 0
		for name, sv := range p.Services {
			if d.Service == "" || d.Service == name {
				sv.Restarts = 0
			}
		}
		if p.Phase == PhaseFailed || p.Phase == PhaseLost {
			p.Phase, p.StateID, p.StateSeq, p.DownReason = PhaseHalted, e.ID, e.Seq, "reset"

		}
		p.CauseSeq, p.CauseID = e.Seq, e.ID
	case events.GuestStarted:
		if cur(d.Epoch) {
			p.Guest = events.GuestPhaseUp
		}
	case events.GuestLost:
		if cur(d.Epoch) {
			p.Guest = events.GuestPhaseLost
		}
	case events.GuestStopped:
		if cur(d.Epoch) {
			p.Guest = events.GuestPhaseDown
		}
	case events.ServiceRestarting:
		if cur(d.Epoch) {
			sv := p.service(d.Service)
			sv.Status, sv.Restarts = ServiceRestarting, d.Attempt
		}
	case events.ServiceFailed:
		if cur(d.Epoch) {
			p.service(d.Service).Status = ServiceFailed
			if p.Phase.active() {
				p.Phase = PhaseFailing
			}
		}
	case events.GuestMigrated:
		p.released(d.Epoch, "")
		if cur(d.TargetEpoch) {
			// The guest and its processes go on under the new placement.
			p.AdoptedEpoch, p.Guest = d.Epoch, events.GuestPhaseUp
			for _, mp := range d.Processes {
				p.service(mp.Service).Status = ServiceUp
			}
		}
	case events.ProcessStarted:
		if cur(d.Epoch) || (p.AdoptedEpoch != 0 && d.Epoch == p.AdoptedEpoch) {
			p.service(d.Service).Status = ServiceUp
		}
	case events.ProcessExited:
		if cur(d.Epoch) || (p.AdoptedEpoch != 0 && d.Epoch == p.AdoptedEpoch) {
			if sv := p.service(d.Service); sv.Status != ServiceFailed {
				sv.Status = ServiceDown
			}
		}
	}
}
