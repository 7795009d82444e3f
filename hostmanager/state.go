package hostmanager

import (
	"maps"
	"slices"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// State is one node's host manager view of the log: the configuration in
// force, every package's placements and the instance of each package on
// this node. Build it with NewState and change it only through Apply.
//
// Idempotence is per subject space: an event about a package whose Seq is
// at or below the last one applied for that package changes nothing (and
// likewise per node and for cluster events). That lets a runner apply an
// event it appended with events.ExpectPackageSeq at once, before the log
// delivers it back. Events with Seq 0 (never read from the log) are ignored.
type State struct {
	// Node is the node this host manager runs on.
	Node string `json:"node"`
	// Seq is the highest stream sequence applied.
	Seq uint64 `json:"seq"`
	// Config is the configuration in force, nil before the first
	// cluster.config_applied that decoded.
	Config *config.Cluster `json:"config,omitempty"`
	// ConfigID names the event that put Config in force.
	ConfigID string `json:"config_id,omitempty"`
	// ConfigErr says why the last cluster.config_applied was not used.
	ConfigErr string `json:"config_error,omitempty"`
	// ClusterSeq is the sequence of the last cluster event applied.
	ClusterSeq uint64 `json:"cluster_seq,omitempty"`
	// NodeSeqs holds the sequence of the last event applied per node.
	NodeSeqs map[string]uint64 `json:"node_seqs,omitempty"`
	// NodeDown holds, per node, the sequence of its last node.lost or
	// node.fenced: every placement on it older than that is released.
	NodeDown map[string]uint64 `json:"node_down,omitempty"`
	// NodeJoined holds, per node, the sequence of its last node.joined: a
	// placement on a node whose last loss or fence is later than its last
	// join is void (released at once), as the controller's fold has it.
	NodeJoined map[string]uint64 `json:"node_joined,omitempty"`
	// Packages holds every package an event or the config named.
	Packages map[string]*PackageState `json:"packages,omitempty"`
	// FailFast is set when a fail-fast service or package failed on this
	// node and the log does not yet show the node fenced, lost or halted
	// since: the runner fences the node (also after a restart in between).
	FailFast *FailFast `json:"fail_fast,omitempty"`
	// Resources holds this node's generic resources (node.resource_set),
	// by name; one never set is down.
	Resources map[string]events.NodeResourceSet `json:"resources,omitempty"`

	cache   localCache   // package names, sorted, and those that concern this node (local.go)
	configs *ConfigCache // shared parsed configurations (Config.Configs), nil: none
}

// FailFast is a failure on this node that fences it (service_fail_fast,
// node_fail_fast).
type FailFast struct {
	Package string `json:"package"`
	Reason  string `json:"reason"`
	// Seq is the failure's sequence: a node.fenced, node.lost or
	// node.halted after it ends the fail-fast.
	Seq uint64 `json:"seq"`
}

// NewState returns the empty state of the host manager of node.
func NewState(node string) *State {
	return &State{Node: node, NodeSeqs: map[string]uint64{}, NodeDown: map[string]uint64{}, NodeJoined: map[string]uint64{}, Packages: map[string]*PackageState{}}
}

// PackageState is what the log says about one package, from this node's side.
type PackageState struct {
	Name string `json:"name"`
	// Seq is the stream sequence of the last event about the package: the
	// value to append a decision with (events.ExpectPackageSeq).
	Seq uint64 `json:"seq"`
	// Current is the package's latest placement (Epoch 0: never placed).
	Current Placement `json:"current"`
	// Prior lists older placements not yet released, oldest first. A
	// placement starts only when every older one is released.
	Prior []Placement `json:"prior,omitempty"`
	// ReadyID is the event that last moved Current closer to being
	// startable: its package.placed or the release of an older placement.
	ReadyID string `json:"ready_id,omitempty"`
	// Inst is the package's instance on this node, from package.starting
	// until this node records package.halted or package.failed for it (or
	// guest.migrated takes it elsewhere).
	Inst *Instance `json:"instance,omitempty"`
	// Adopt is a guest that a live migration brought to this node for
	// Current (guest.migrated), until this node's package.starting of that
	// epoch adopts it.
	Adopt *Adoption `json:"adopt,omitempty"`
}

// Adoption is a guest a live migration carried to this node: the instance
// of placement Epoch takes over its processes, which ran under FromEpoch.
type Adoption struct {
	Epoch     uint64    `json:"epoch"`
	FromEpoch uint64    `json:"from_epoch"`
	Procs     []Process `json:"procs,omitempty"`
	// ID is the guest.migrated.
	ID string `json:"id"`
}

// Migration is a live migration of an instance's guest to the node of a
// newer placement, from the package.placed that asked for it (migrate set)
// until guest.migrated or guest.migration_failed.
type Migration struct {
	TargetNode  string `json:"target_node"`
	TargetEpoch uint64 `json:"target_epoch"`
	// PlacedID is the package.placed; MigratingID the guest.migrating this
	// node appended ("" until then).
	PlacedID    string `json:"placed_id"`
	MigratingID string `json:"migrating_id,omitempty"`
}

// Placement is one package.placed: the package is to run on Node under Epoch.
type Placement struct {
	Epoch  uint64 `json:"epoch"`
	Node   string `json:"node,omitempty"`
	Reason string `json:"reason,omitempty"`
	Seq    uint64 `json:"seq,omitempty"`
	ID     string `json:"id,omitempty"`
	// Released is set once the placement can no longer run: a
	// package.halted or package.failed of its epoch, or a node.lost or
	// node.fenced of its node after it; or at once, for a placement on a
	// node the log shows lost or fenced (void: a decision that raced the
	// loss, sim finding place_on_lost_node).
	Released bool `json:"released,omitempty"`
	// Halt is an operator halt asked for before this node started the
	// placement (only kept for placements on this node).
	Halt *Halt `json:"halt,omitempty"`
}

// Halt says why an instance is being halted.
type Halt struct {
	Reason string `json:"reason"`
	By     string `json:"by,omitempty"`
	// ID is the event that asked: package.halting, the package.placed that
	// moved the package, or the node.lost or node.fenced of this node.
	ID string `json:"id"`
}

// Failure says why an instance is failing: it halts, then the node records
// package.failed.
type Failure struct {
	Reason  string `json:"reason"`
	Service string `json:"service,omitempty"`
	// ID is the event that made it fail (service.failed, guest.lost, guest.stopped).
	ID string `json:"id"`
	// At is that event's time: the packages that depend on this one halt
	// first, at most its successor_halt_timeout from At (Pending).
	At time.Time `json:"at,omitzero"`
}

// Instance is a package's life on this node under one epoch: its guest, its
// services and whether it is halting or failing.
type Instance struct {
	Epoch uint64 `json:"epoch"`
	// StartingID is the package.starting that began it.
	StartingID string `json:"starting_id"`
	// Config is the package's configuration when it started; the set of
	// services and the guest come from it, restart policies from the config
	// in force.
	Config config.Package `json:"config"`
	// Started is set by package.started: every service ran at once.
	Started  bool            `json:"started,omitempty"`
	Guest    GuestState      `json:"guest"`
	Services []*ServiceState `json:"services"`
	// Strays are processes of this epoch nobody asked for (a request id no
	// decision names); they are stopped.
	Strays []Process `json:"strays,omitempty"`
	// Halt is set when the instance is halting; Failure when it is failing.
	Halt    *Halt    `json:"halt,omitempty"`
	Failure *Failure `json:"failure,omitempty"`
	// LastID is the last event that changed the instance, the cause of the
	// package.halted or package.failed that ends it.
	LastID string `json:"last_id,omitempty"`
	// LastStartID is the last process.started, the cause of package.started.
	LastStartID string `json:"last_start_id,omitempty"`
	// Migration is a live migration of the guest away from this node.
	Migration *Migration `json:"migration,omitempty"`
	// FromEpoch is the epoch of the placement whose guest and processes
	// this instance adopted after a live migration (0: none); those
	// processes report that epoch.
	FromEpoch uint64 `json:"from_epoch,omitempty"`
}

// GuestPhase is what the log says about an instance's guest
// (events.GuestPhase, shared with the failover core).
type GuestPhase = events.GuestPhase

// Guest phases (events.GuestPhaseStarting and the rest).
const (
	GuestStarting = events.GuestPhaseStarting
	GuestUp       = events.GuestPhaseUp
	GuestLost     = events.GuestPhaseLost
	GuestDown     = events.GuestPhaseDown
)

// GuestState is an instance's guest.
type GuestState struct {
	Phase GuestPhase `json:"phase"`
	// StartedID is the guest.started in force; services' first run
	// requests are "<StartedID>/<service>".
	StartedID string `json:"started_id,omitempty"`
	// Starts counts guest.started events; Restarts the guest restarts used
	// (guest.restart), since the start or a package.reset.
	Starts   int `json:"starts,omitempty"`
	Restarts int `json:"restarts,omitempty"`
	// CauseID is the event the wanted start (or the stop before a restart)
	// answers: package.starting, guest.lost or guest.stopped.
	CauseID string `json:"cause_id,omitempty"`
	// StartedCause and StoppedCause are the cause ids of the last
	// guest.started and guest.stopped, to ignore a result appended twice.
	StartedCause string `json:"started_cause,omitempty"`
	StoppedCause string `json:"stopped_cause,omitempty"`
}

// ServiceState is one service of an instance.
type ServiceState struct {
	Name string `json:"name"`
	// Proc is its running process, nil if none.
	Proc *Process `json:"process,omitempty"`
	// Run is a run request decided and not yet seen started.
	Run *RunRequest `json:"run,omitempty"`
	// Exit is an exit that counts as a failure and awaits a decision
	// (service.restarting or service.failed).
	Exit *Exit `json:"exit,omitempty"`
	// Restarts counts restarts since the start or a package.reset.
	Restarts int `json:"restarts,omitempty"`
	// RestartTimes are the times of the exits that led to restarts, kept
	// while a restart_window is set and pruned to it.
	RestartTimes []time.Time `json:"restart_times,omitempty"`
	// Failed is set by service.failed.
	Failed bool `json:"failed,omitempty"`
}

// Process is a process a guest agent started.
type Process struct {
	Service   string `json:"service"`
	RequestID string `json:"request_id"`
	PID       int    `json:"pid"`
	// StartedID is its process.started.
	StartedID string `json:"started_id"`
}

// RunRequest is a decided run of a service: the agent run request id and
// the earliest time to send it.
type RunRequest struct {
	ID        string    `json:"id"`
	CauseID   string    `json:"cause_id"`
	NotBefore time.Time `json:"not_before,omitzero"`
}

// Exit is a process.exited that counts as a failure.
type Exit struct {
	ID        string    `json:"id"`
	Time      time.Time `json:"time"`
	ExitCode  int       `json:"exit_code"`
	Signal    string    `json:"signal,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	RequestID string    `json:"request_id"`
}

// Stopping reports whether the instance is halting or failing.
func (in *Instance) Stopping() bool { return in.Halt != nil || in.Failure != nil }

// Down reports whether nothing of the instance runs: its guest is known to
// be down and no process is left.
func (in *Instance) Down() bool {
	if in.Guest.Phase != GuestDown || len(in.Strays) > 0 {
		return false
	}
	for _, sv := range in.Services {
		if sv.Proc != nil {
			return false
		}
	}
	return true
}

// Service returns the instance's service name, nil if it has none.
func (in *Instance) Service(name string) *ServiceState {
	for _, sv := range in.Services {
		if sv.Name == name {
			return sv
		}
	}
	return nil
}

// Package returns the state of package name, nil if nothing named it.
func (s *State) Package(name string) *PackageState { return s.Packages[name] }

// PackageNames returns the names of every known package, sorted. The
// slice is shared (kept until a package is added): callers must not
// change it.
func (s *State) PackageNames() []string {
	if s.cache.names == nil || len(s.cache.names) != len(s.Packages) {
		s.cache.names = slices.Sorted(maps.Keys(s.Packages))
	}
	return slices.Clip(s.cache.names)
}

// PackageSeq returns the stream sequence of the last event about pkg.
func (s *State) PackageSeq(pkg string) uint64 {
	if p := s.Packages[pkg]; p != nil {
		return p.Seq
	}
	return 0
}

// Expect returns the append condition for a decision about pkg: it fails with
// events.ErrConflict if anything about pkg was written since this state.
func (s *State) Expect(pkg string) events.Expect {
	return events.ExpectPackageSeq(pkg, s.PackageSeq(pkg))
}

// Source returns the CloudEvents source of this node's host manager.
func (s *State) Source() string { return HostSource(s.Node) }

// HostSource returns the CloudEvents source of node's host manager.
func HostSource(node string) string { return events.HostSource(node) }

// Affected returns the packages whose decisions or actions may have changed
// after e: for a package event its package and the packages it needs up (a
// failing one waits for it to halt first, Pending), every package that
// concerns this node otherwise (LocalNames).
func Affected(s *State, e events.Event) []string {
	if sc, ok := scopeOf(e); ok && sc == events.ScopePackage {
		if _, ok := s.Packages[e.Subject]; !ok {
			return nil
		}
		return append([]string{e.Subject}, upDependencies(s, e.Subject)...)
	}
	return s.LocalNames()
}

// upDependencies returns the known packages pkg has an up dependency on:
// their stops may wait for pkg to halt.
func upDependencies(s *State, pkg string) []string {
	if s.Config == nil {
		return nil
	}
	cp, ok := s.Config.Package(pkg)
	if !ok {
		return nil
	}
	var out []string
	for _, d := range cp.Dependencies {
		if _, known := s.Packages[d.Name]; known && d.Condition == config.DependUp {
			out = append(out, d.Name)
		}
	}
	return out
}

func (s *State) pkg(name string) *PackageState {
	p := s.Packages[name]
	if p == nil {
		p = &PackageState{Name: name}
		s.Packages[name] = p
		s.cache.names = nil
	}
	return p
}
