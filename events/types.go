package events

import (
	"encoding/json"

	"fmt"
	gojson "github.com/goccy/go-json"
	"strings"
	"time"
)

// Event types of the v1 catalog, as `io.vmguard.<entity>.<verb>.v1`.
const (
	TypeConfigApplied = "io.vmguard.cluster.config_applied.v1"

	TypeNodeJoined = "io.vmguard.node.joined.v1"
	TypeNodeLost   = "io.vmguard.node.lost.v1"
	TypeNodeHalted = "io.vmguard.node.halted.v1"
	TypeNodeFenced = "io.vmguard.node.fenced.v1"
	// TypeNodeTakenOver: a host manager took its node's lease from a live
	// holder because an operator said so (`vmguard host --takeover`).
	TypeNodeTakenOver = "io.vmguard.node.taken_over.v1"
	// TypeNodeLeaseTaken: a host manager took its node's lease (at start,
	// or again after a lapse) while the log showed the node joined: it
	// writes this, guarded by the node's last sequence, before it acts, so
	// that a node.lost judged before it conflicts (docs/design-notes.md,
	// "A lease take is recorded").
	TypeNodeLeaseTaken = "io.vmguard.node.lease_taken.v1"
	// TypeNodeDrained: an operator put a node in maintenance (`node
	// drain`): its packages move away and nothing is placed on it until
	// TypeNodeResumed (`node run`).
	TypeNodeDrained = "io.vmguard.node.drained.v1"
	// TypeNodeResourceSet: a monitor (or an operator) set a generic
	// resource's status on a node (`vmguard resource set`, Serviceguard's
	// cmsetresource).
	TypeNodeResourceSet = "io.vmguard.node.resource_set.v1"
	// TypeNodeResumed: an operator ended a node's maintenance (`node run`).
	TypeNodeResumed = "io.vmguard.node.resumed.v1"
	// TypeNodeFrozen: an operator froze a node (`node freeze`): its guests
	// keep running where they are, its guard is disarmed and no decision is
	// made about it until TypeNodeThawed.
	TypeNodeFrozen = "io.vmguard.node.frozen.v1"
	// TypeNodeThawed: a freeze ended (`node thaw`, or its --for expired).
	TypeNodeThawed = "io.vmguard.node.thawed.v1"

	TypePackagePlaced           = "io.vmguard.package.placed.v1"
	TypePackageStarting         = "io.vmguard.package.starting.v1"
	TypePackageStarted          = "io.vmguard.package.started.v1"
	TypePackageHalting          = "io.vmguard.package.halting.v1"
	TypePackageHalted           = "io.vmguard.package.halted.v1"
	TypePackageFailed           = "io.vmguard.package.failed.v1"
	TypePackageSwitchingChanged = "io.vmguard.package.switching_changed.v1"
	TypePackageReset            = "io.vmguard.package.reset.v1"
	// TypePackageChecked: the controller placed another package on the
	// strength of this package's state; appended in one atomic batch with
	// the placement, guarded by this package's last sequence as the
	// controller read it, so that a placement decided from a stale view of
	// a linked package is refused (docs/design-notes.md §7).
	TypePackageChecked = "io.vmguard.package.checked.v1"

	// TypePlacementNoted: a package was placed on the node the event is
	// about; appended in one atomic batch with every package.placed, on the
	// node's own placement subject (vmguard.events.placement.<node>.noted),
	// so that a host manager learns of its placements by reading that
	// subject alone instead of every placement of the cluster
	// (docs/design-notes.md §10).
	TypePlacementNoted = "io.vmguard.placement.noted.v1"

	TypeGuestStarted = "io.vmguard.guest.started.v1"
	TypeGuestLost    = "io.vmguard.guest.lost.v1"
	TypeGuestStopped = "io.vmguard.guest.stopped.v1"
	// TypeGuestMigrating, TypeGuestMigrated, TypeGuestMigrationFailed: a
	// live migration of the guest to the node of a newer placement began,
	// ended with the guest running there, or failed (the package then halts
	// and starts on the target the ordinary way).
	TypeGuestMigrating       = "io.vmguard.guest.migrating.v1"
	TypeGuestMigrated        = "io.vmguard.guest.migrated.v1"
	TypeGuestMigrationFailed = "io.vmguard.guest.migration_failed.v1"

	TypeServiceRestarting = "io.vmguard.service.restarting.v1"
	TypeServiceFailed     = "io.vmguard.service.failed.v1"

	TypeProcessStarted = "io.vmguard.process.started.v1"
	TypeProcessExited  = "io.vmguard.process.exited.v1"
)

// Types lists every event type this build knows, in catalog order.
func Types() []string {
	return []string{
		TypeConfigApplied,
		TypeNodeJoined, TypeNodeLost, TypeNodeHalted, TypeNodeFenced, TypeNodeTakenOver, TypeNodeLeaseTaken,
		TypeNodeDrained, TypeNodeResumed, TypeNodeFrozen, TypeNodeThawed, TypeNodeResourceSet,
		TypePackagePlaced, TypePackageStarting, TypePackageStarted, TypePackageHalting,
		TypePackageHalted, TypePackageFailed, TypePackageSwitchingChanged, TypePackageReset,
		TypePackageChecked, TypePlacementNoted,
		TypeGuestStarted, TypeGuestLost, TypeGuestStopped,
		TypeGuestMigrating, TypeGuestMigrated, TypeGuestMigrationFailed,
		TypeServiceRestarting, TypeServiceFailed,
		TypeProcessStarted, TypeProcessExited,
	}
}

// Scope says what an event's CloudEvents subject names, and so which part of
// the subject space it is stored under.
type Scope int

// Scopes of events.
const (
	ScopeCluster   Scope = iota // vmguard.events.cluster.<verb>
	ScopeNode                   // vmguard.events.node.<node>.<verb>
	ScopePackage                // vmguard.events.pkg.<package>.<entity>.<verb>
	ScopePlacement              // vmguard.events.placement.<node>.<verb>
)

// ParseType splits a type such as io.vmguard.process.exited.v1 into its
// entity, verb and version.
func ParseType(typ string) (entity, verb, version string, err error) {
	// Cut, not Split: this runs for every event encoded and decoded.
	if rest, ok := strings.CutPrefix(typ, "io.vmguard."); ok {
		var ok1, ok2 bool
		entity, rest, ok1 = strings.Cut(rest, ".")
		verb, version, ok2 = strings.Cut(rest, ".")
		if ok1 && ok2 && !strings.Contains(version, ".") {
			return entity, verb, version, nil
		}
	}
	return "", "", "", fmt.Errorf("type %q: want io.vmguard.<entity>.<verb>.<version>", typ)
}

// ScopeOf returns the scope of an event type.
func ScopeOf(typ string) (Scope, error) {
	entity, _, _, err := ParseType(typ)
	if err != nil {
		return 0, err
	}
	switch entity {
	case "cluster":
		return ScopeCluster, nil
	case "node":
		return ScopeNode, nil
	case "package", "guest", "service", "process":
		return ScopePackage, nil
	case "placement":
		return ScopePlacement, nil
	}
	return 0, fmt.Errorf("type %q: unknown entity %q", typ, entity)
}

// Payload is the typed data of one event. Each catalog type has one.
type Payload interface {
	// EventType is the CloudEvents type the payload is stored under.
	EventType() string
}

// newPayload decodes data of the given type into its Go struct.
func newPayload(typ string, data []byte) (Payload, error) {
	switch typ {
	case TypeConfigApplied:
		return decodeAs[ConfigApplied](data)
	case TypeNodeJoined:
		return decodeAs[NodeJoined](data)
	case TypeNodeLost:
		return decodeAs[NodeLost](data)
	case TypeNodeHalted:
		return decodeAs[NodeHalted](data)
	case TypeNodeFenced:
		return decodeAs[NodeFenced](data)
	case TypeNodeTakenOver:
		return decodeAs[NodeTakenOver](data)
	case TypeNodeLeaseTaken:
		return decodeAs[NodeLeaseTaken](data)
	case TypeNodeDrained:
		return decodeAs[NodeDrained](data)
	case TypeNodeResumed:
		return decodeAs[NodeResumed](data)
	case TypeNodeResourceSet:
		return decodeAs[NodeResourceSet](data)
	case TypeNodeFrozen:
		return decodeAs[NodeFrozen](data)
	case TypeNodeThawed:
		return decodeAs[NodeThawed](data)
	case TypePackagePlaced:
		return decodeAs[PackagePlaced](data)
	case TypePackageStarting:
		return decodeAs[PackageStarting](data)
	case TypePackageStarted:
		return decodeAs[PackageStarted](data)
	case TypePackageHalting:
		return decodeAs[PackageHalting](data)
	case TypePackageHalted:
		return decodeAs[PackageHalted](data)
	case TypePackageFailed:
		return decodeAs[PackageFailed](data)
	case TypePackageSwitchingChanged:
		return decodeAs[PackageSwitchingChanged](data)
	case TypePackageReset:
		return decodeAs[PackageReset](data)
	case TypePackageChecked:
		return decodeAs[PackageChecked](data)
	case TypePlacementNoted:
		return decodeAs[PlacementNoted](data)
	case TypeGuestStarted:
		return decodeAs[GuestStarted](data)
	case TypeGuestLost:
		return decodeAs[GuestLost](data)
	case TypeGuestStopped:
		return decodeAs[GuestStopped](data)
	case TypeGuestMigrating:
		return decodeAs[GuestMigrating](data)
	case TypeGuestMigrated:
		return decodeAs[GuestMigrated](data)
	case TypeGuestMigrationFailed:
		return decodeAs[GuestMigrationFailed](data)
	case TypeServiceRestarting:
		return decodeAs[ServiceRestarting](data)
	case TypeServiceFailed:
		return decodeAs[ServiceFailed](data)
	case TypeProcessStarted:
		return decodeAs[ProcessStarted](data)
	case TypeProcessExited:
		return decodeAs[ProcessExited](data)
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownType, typ)
}

func decodeAs[T Payload](data []byte) (Payload, error) {
	var v T
	if err := gojson.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("decode %s data: %w", v.EventType(), err)
	}
	return v, nil
}

// ConfigApplied records a cluster configuration put in force by `vmguard apply`.
// Config is the configuration as JSON; every component reads the config in
// force from the last of these events.
type ConfigApplied struct {
	Config json.RawMessage `json:"config"`
	Hash   string          `json:"hash"`
	File   string          `json:"file,omitempty"`
	By     string          `json:"by,omitempty"`
	Reason string          `json:"reason,omitempty"`
}

// NodeJoined records that a node's host manager took its lease, or that an
// operator let a halted node run again (`node run`, By and Reason set).
type NodeJoined struct {
	Version string `json:"version,omitempty"`
	By      string `json:"by,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// NodeTakenOver records that a host manager took its node's lease while
// another instance (Holder) still renewed it, because an operator asked
// (`vmguard host --takeover`): the old instance steps down and the new one
// adopts the node's guests. It changes no membership.
type NodeTakenOver struct {
	Holder    string `json:"holder"`
	NewHolder string `json:"new_holder"`
	By        string `json:"by,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// NodeLeaseTaken records that a host manager instance (Holder) took its
// node's lease while the log showed the node joined (a restart, or a lease
// taken again after a lapse without a fence). It is appended with the
// node's last sequence as the host manager read it, and the host manager
// acts on no package before it is stored: a node.lost the controller
// judged before it then conflicts, and a loss stored first makes this
// append conflict, so the host manager reads the loss before it acts. It
// changes no membership.
type NodeLeaseTaken struct {
	Holder  string `json:"holder"`
	Version string `json:"version,omitempty"`
}

// NodeLost records that a node's lease expired: the node is gone and its
// packages may be placed elsewhere.
type NodeLost struct {
	Reason   string    `json:"reason"`
	LastSeen time.Time `json:"last_seen,omitzero"`
}

// NodeHalted records that a node left the cluster on purpose (`node halt`).
type NodeHalted struct {
	Reason string `json:"reason,omitempty"`
	By     string `json:"by,omitempty"`
}

// NodeFenced records that a node's host manager lost its lease and halted its
// packages by itself.
type NodeFenced struct {
	Reason string    `json:"reason"`
	Since  time.Time `json:"since,omitzero"`
	// Hold: the node stays out of the cluster until an operator's `node
	// run` (a fail-fast fence, as Serviceguard halts the node); without it
	// the host manager joins the node again by itself.
	Hold bool `json:"hold,omitempty"`
}

// NodeDrained records that an operator put a node in maintenance (`vmguard
// node drain`, Serviceguard's cmhaltnode without leaving the cluster,
// Proxmox's node maintenance): the controller moves each of its packages to
// the next eligible node by its policy (or halts it where it is when there is
// none), and places nothing on it until a NodeResumed. The node stays a
// member: its host manager keeps its lease and guard.
type NodeDrained struct {
	Reason string `json:"reason,omitempty"`
	By     string `json:"by,omitempty"`
}

// NodeResourceSet records a generic resource's status on a node (Serviceguard's
// cmsetresource): Status is up or down; Value, for an extended resource, is
// its whole-number value as text ("42"), which a package's up criterion
// (">= 10") is checked against. A resource never set is down.
type NodeResourceSet struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	Value  string `json:"value,omitempty"`
	Reason string `json:"reason,omitempty"`
	By     string `json:"by,omitempty"`
}

// Resource statuses.
const (
	ResourceUp   = "up"
	ResourceDown = "down"
)

// NodeResumed records that an operator ended a node's maintenance (`vmguard
// node run`): it is eligible for placements again.
type NodeResumed struct {
	Reason string `json:"reason,omitempty"`
	By     string `json:"by,omitempty"`
}

// NodeFrozen records that an operator froze a node (`vmguard node freeze`),
// e.g. to upgrade vmguard itself: its guests keep running where they are,
// its guard is disarmed, its host manager decides nothing, the controller
// neither moves its packages nor records it lost, and nothing new is placed
// on it, until a NodeThawed. Until (required: now + --for, 1 h by default)
// bounds every freeze: the controller records NodeThawed (reason "expired")
// once it passed, and the node's guard and agents re-arm by then.
type NodeFrozen struct {
	Until  time.Time `json:"until,omitzero"`
	Reason string    `json:"reason,omitempty"`
	By     string    `json:"by,omitempty"`
}

// NodeThawed records that a node's freeze ended: an operator's `vmguard node
// thaw` (By set), or its --for expired (reason "expired", written by the
// controller).
type NodeThawed struct {
	Reason string `json:"reason,omitempty"`
	By     string `json:"by,omitempty"`
}

// PackagePlaced records that a package is to run on Node under a new Epoch.
type PackagePlaced struct {
	Node         string `json:"node"`
	Epoch        uint64 `json:"epoch"`
	Reason       string `json:"reason"`
	PreviousNode string `json:"previous_node,omitempty"`
	By           string `json:"by,omitempty"`
	// Migrate asks the host manager of PreviousNode to migrate the running
	// guest to Node live (guest.migrating, guest.migrated) instead of
	// halting it there and starting it here; set only when the package's
	// guest driver can migrate (config Guest.CanMigrate).
	Migrate bool `json:"migrate,omitempty"`
}

// PackageStarting records that a node began the package's start sequence.
type PackageStarting struct {
	Node  string `json:"node"`
	Epoch uint64 `json:"epoch"`
}

// PackageStarted records that the package's guest and every service run.
type PackageStarted struct {
	Node  string `json:"node"`
	Epoch uint64 `json:"epoch"`
}

// PackageHalting records that the package's halt sequence began (or was asked
// for by an operator, then By is set).
type PackageHalting struct {
	Node   string `json:"node,omitempty"`
	Epoch  uint64 `json:"epoch"`
	Reason string `json:"reason"`
	By     string `json:"by,omitempty"`
}

// PackageHalted records that the package is down on Node: every process has
// stopped and its guest is down.
type PackageHalted struct {
	Node   string `json:"node"`
	Epoch  uint64 `json:"epoch"`
	Reason string `json:"reason"`
}

// PackageFailed records that the package could not be kept running on Node;
// like PackageHalted it is written only once the package is down there.
type PackageFailed struct {
	Node    string `json:"node"`
	Epoch   uint64 `json:"epoch"`
	Reason  string `json:"reason"`
	Service string `json:"service,omitempty"`
}

// PackageSwitchingChanged records an operator enabling or disabling package
// switching (auto_run, Node empty) or node switching (Node set).
type PackageSwitchingChanged struct {
	Node    string `json:"node,omitempty"`
	Enabled bool   `json:"enabled"`
	Reason  string `json:"reason,omitempty"`
	By      string `json:"by,omitempty"`
}

// PackageChecked is the marker the controller appends on a package's
// subjects in the same atomic batch as a placement of another package (For)
// that depends on it or excludes it: guarded by this package's last
// sequence (Seq) as the controller read it, it makes the whole batch fail
// if anything about this package was written since, e.g. a newer leader
// placed it beside For's target while a deposed one paused before its
// append. It changes no state: the folds only advance the package's
// sequence, and vmguard verify ignores it.
type PackageChecked struct {
	For string `json:"for"`
	Seq uint64 `json:"seq"`
}

// PlacementNoted is the marker of a placement on the node the event is
// about (its subject): whoever appends a package.placed (the controller,
// an operator's command) appends it first in the same atomic batch, so
// the log holds both or neither. It changes no state; a host manager's
// index of the packages placed on its node reads its node's markers only
// (hostmanager/concern.go).
type PlacementNoted struct {
	Package string `json:"package"`
	Epoch   uint64 `json:"epoch"`
}

// PackageReset records an operator clearing restart counters (of Service, or
// of every service), the failed nodes and the failed state.
type PackageReset struct {
	Service string `json:"service,omitempty"`
	Reason  string `json:"reason,omitempty"`
	By      string `json:"by,omitempty"`
}

// GuestStarted records that the package's guest came up on Node.
type GuestStarted struct {
	Guest string `json:"guest"`
	Node  string `json:"node"`
	Epoch uint64 `json:"epoch"`
}

// GuestLost records that the guest's heartbeats stopped for guest_timeout.
type GuestLost struct {
	Guest         string    `json:"guest"`
	Node          string    `json:"node"`
	Epoch         uint64    `json:"epoch"`
	LastHeartbeat time.Time `json:"last_heartbeat,omitzero"`
}

// GuestStopped records that the guest is down on Node.
type GuestStopped struct {
	Guest  string `json:"guest"`
	Node   string `json:"node"`
	Epoch  uint64 `json:"epoch"`
	Reason string `json:"reason,omitempty"`
}

// GuestMigrating records the decision of the host manager of Node, where
// the guest runs under Epoch, to migrate it live to TargetNode for the
// newer placement TargetEpoch.
type GuestMigrating struct {
	Guest       string `json:"guest"`
	Node        string `json:"node"`
	Epoch       uint64 `json:"epoch"`
	TargetNode  string `json:"target_node"`
	TargetEpoch uint64 `json:"target_epoch"`
}

// GuestMigrated records that the guest now runs on TargetNode: placement
// Epoch is released, and Processes, which ran under it, go on under
// TargetEpoch (its host manager adopts them).
type GuestMigrated struct {
	Guest       string            `json:"guest"`
	Node        string            `json:"node"`
	Epoch       uint64            `json:"epoch"`
	TargetNode  string            `json:"target_node"`
	TargetEpoch uint64            `json:"target_epoch"`
	Processes   []MigratedProcess `json:"processes,omitempty"`
}

// MigratedProcess is a service's process that a migration carried over.
type MigratedProcess struct {
	Service   string `json:"service"`
	RequestID string `json:"request_id"`
	PID       int    `json:"pid,omitempty"`
	StartedID string `json:"started_id,omitempty"`
}

// GuestMigrationFailed records that a migration did not happen (Reason
// says why); the guest still runs on Node under Epoch, which then halts.
type GuestMigrationFailed struct {
	Guest       string `json:"guest"`
	Node        string `json:"node"`
	Epoch       uint64 `json:"epoch"`
	TargetNode  string `json:"target_node"`
	TargetEpoch uint64 `json:"target_epoch"`
	Reason      string `json:"reason,omitempty"`
}

// ServiceRestarting records the decision to restart a service after an exit.
// RestartsLeft is -1 when restarts are unlimited.
type ServiceRestarting struct {
	Service      string `json:"service"`
	Node         string `json:"node"`
	Epoch        uint64 `json:"epoch"`
	Attempt      int    `json:"attempt"`
	RestartsLeft int    `json:"restarts_left"`
	DelayMS      int64  `json:"delay_ms"`
}

// ServiceFailed records that a service used up its restarts on Node.
type ServiceFailed struct {
	Service  string `json:"service"`
	Node     string `json:"node"`
	Epoch    uint64 `json:"epoch"`
	Restarts int    `json:"restarts"`
	Reason   string `json:"reason"`
}

// ProcessStarted records that a guest agent started a process. RequestID is
// the id of the run request, which is the id of the decision that asked.
type ProcessStarted struct {
	Guest     string `json:"guest"`
	Service   string `json:"service"`
	PID       int    `json:"pid"`
	RequestID string `json:"request_id"`
	Epoch     uint64 `json:"epoch"`
}

// ProcessExited records that a process a guest agent started has ended.
// Signal names the terminating signal ("" if it exited); Reason says why
// when vmguard itself caused the end (stopped, agent_restart, agent_stopped).
type ProcessExited struct {
	Guest     string   `json:"guest"`
	Service   string   `json:"service"`
	PID       int      `json:"pid"`
	ExitCode  int      `json:"exit_code"`
	Signal    string   `json:"signal,omitempty"`
	RuntimeMS int64    `json:"runtime_ms"`
	RequestID string   `json:"request_id"`
	Epoch     uint64   `json:"epoch"`
	Reason    string   `json:"reason,omitempty"`
	Output    []string `json:"output,omitempty"`
}

// EventType implements Payload.
func (ConfigApplied) EventType() string { return TypeConfigApplied }

// EventType implements Payload.
func (NodeJoined) EventType() string { return TypeNodeJoined }

// EventType implements Payload.
func (NodeLost) EventType() string { return TypeNodeLost }

// EventType implements Payload.
func (NodeHalted) EventType() string { return TypeNodeHalted }

// EventType implements Payload.
func (NodeFenced) EventType() string { return TypeNodeFenced }

// EventType implements Payload.
func (NodeTakenOver) EventType() string { return TypeNodeTakenOver }

// EventType implements Payload.
func (NodeLeaseTaken) EventType() string { return TypeNodeLeaseTaken }

// EventType implements Payload.
func (NodeDrained) EventType() string { return TypeNodeDrained }

// EventType implements Payload.
func (NodeResumed) EventType() string { return TypeNodeResumed }

// EventType implements Payload.
func (NodeResourceSet) EventType() string { return TypeNodeResourceSet }

// EventType implements Payload.
func (NodeFrozen) EventType() string { return TypeNodeFrozen }

// EventType implements Payload.
func (NodeThawed) EventType() string { return TypeNodeThawed }

// EventType implements Payload.
func (PackagePlaced) EventType() string { return TypePackagePlaced }

// EventType implements Payload.
func (PackageStarting) EventType() string { return TypePackageStarting }

// EventType implements Payload.
func (PackageStarted) EventType() string { return TypePackageStarted }

// EventType implements Payload.
func (PackageHalting) EventType() string { return TypePackageHalting }

// EventType implements Payload.
func (PackageHalted) EventType() string { return TypePackageHalted }

// EventType implements Payload.
func (PackageFailed) EventType() string { return TypePackageFailed }

// EventType implements Payload.
func (PackageSwitchingChanged) EventType() string { return TypePackageSwitchingChanged }

// EventType implements Payload.
func (PackageReset) EventType() string { return TypePackageReset }

// EventType implements Payload.
func (PackageChecked) EventType() string { return TypePackageChecked }

// EventType implements Payload.
func (PlacementNoted) EventType() string { return TypePlacementNoted }

// EventType implements Payload.
func (GuestStarted) EventType() string { return TypeGuestStarted }

// EventType implements Payload.
func (GuestLost) EventType() string { return TypeGuestLost }

// EventType implements Payload.
func (GuestStopped) EventType() string { return TypeGuestStopped }

// EventType implements Payload.
func (GuestMigrating) EventType() string { return TypeGuestMigrating }

// EventType implements Payload.
func (GuestMigrated) EventType() string { return TypeGuestMigrated }

// EventType implements Payload.
func (GuestMigrationFailed) EventType() string { return TypeGuestMigrationFailed }

// EventType implements Payload.
func (ServiceRestarting) EventType() string { return TypeServiceRestarting }

// EventType implements Payload.
func (ServiceFailed) EventType() string { return TypeServiceFailed }

// EventType implements Payload.
func (ProcessStarted) EventType() string { return TypeProcessStarted }

// EventType implements Payload.
func (ProcessExited) EventType() string { return TypeProcessExited }
