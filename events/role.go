package events

import (
	"fmt"
	"strings"
)

// Role is who writes an event, as its source says. The NATS server binds
// each role's user to the subjects that role writes (docs/security.md); a
// reader checks that an event's source names a role allowed to write its
// type, so that a writer allowed on a subject cannot pass its event off as
// another role's (a guest's process.exited claiming to come from the
// failover controller, a host's node.joined claiming another node).
type Role int

// Roles, by the form of their source.
const (
	// RoleNone is a source of none of the forms below.
	RoleNone Role = iota
	// RoleGuest is a guest's agent: /vmguard/guests/<guest>/agent.
	RoleGuest
	// RoleHost is a node's host manager: /vmguard/nodes/<node>/host.
	RoleHost
	// RoleController is the failover controller: /vmguard/failover.
	RoleController
	// RoleOperator is an operator's command: /vmguard/cli/<by>.
	RoleOperator
)

// String names the role as docs/security.md does.
func (r Role) String() string {
	switch r {
	case RoleGuest:
		return "guest"
	case RoleHost:
		return "host"
	case RoleController:
		return "controller"
	case RoleOperator:
		return "operator"
	}
	return "none"
}

// Source prefixes of the roles.
const (
	guestSourcePrefix = "/vmguard/guests/"
	guestSourceSuffix = "/agent"
	hostSourcePrefix  = "/vmguard/nodes/"
	hostSourceSuffix  = "/host"
	// ControllerSource is the source of the failover controller's events.
	ControllerSource   = "/vmguard/failover"
	operatorSourcePrfx = "/vmguard/cli/"
)

// GuestSource is the source of guest's agent's events.
func GuestSource(guest string) string { return guestSourcePrefix + guest + guestSourceSuffix }

// HostSource is the source of node's host manager's events.
func HostSource(node string) string { return hostSourcePrefix + node + hostSourceSuffix }

// OperatorSource is the source of an operator's command, by who asked.
func OperatorSource(by string) string { return operatorSourcePrfx + by }

// RoleOf returns the role a source names and the name in it (the guest,
// the node, who asked; "" for the controller).
func RoleOf(source string) (Role, string) {
	switch {
	case source == ControllerSource:
		return RoleController, ""
	case strings.HasPrefix(source, operatorSourcePrfx) && len(source) > len(operatorSourcePrfx):
		return RoleOperator, source[len(operatorSourcePrfx):]
	case strings.HasPrefix(source, guestSourcePrefix) && strings.HasSuffix(source, guestSourceSuffix):
		if n := source[len(guestSourcePrefix) : len(source)-len(guestSourceSuffix)]; ValidName(n) {
			return RoleGuest, n
		}
	case strings.HasPrefix(source, hostSourcePrefix) && strings.HasSuffix(source, hostSourceSuffix):
		if n := source[len(hostSourcePrefix) : len(source)-len(hostSourceSuffix)]; ValidName(n) {
			return RoleHost, n
		}
	}
	return RoleNone, ""
}

// The writer lists Writers returns (shared: callers must not change them).
var (
	byOperator           = []Role{RoleOperator}
	byController         = []Role{RoleController}
	byControllerOperator = []Role{RoleController, RoleOperator}
	byHost               = []Role{RoleHost}
	byHostOperator       = []Role{RoleHost, RoleOperator}
	byAnyDecider         = []Role{RoleHost, RoleController, RoleOperator}
	byGuestHost          = []Role{RoleGuest, RoleHost}
)

// Writers returns the roles that write events of type typ, in the order
// docs/security.md lists them; none for an unknown type. A host writes the
// node events of its own node only (SourceFits checks that). The slice is
// shared: do not change it.
func Writers(typ string) []Role {
	switch typ {
	case TypeConfigApplied, TypePackageSwitchingChanged, TypePackageReset,
		TypeNodeDrained, TypeNodeResumed, TypeNodeFrozen:
		return byOperator
	case TypeNodeThawed, TypePackagePlaced, TypePlacementNoted:
		return byControllerOperator
	case TypeNodeJoined, TypeNodeHalted, TypeNodeResourceSet:
		return byHostOperator
	case TypeNodeFenced, TypeNodeTakenOver, TypeNodeLeaseTaken:
		return byHost
	case TypeNodeLost, TypePackageChecked:
		return byController
	case TypePackageHalting:
		return byAnyDecider
	case TypePackageStarting, TypePackageStarted, TypePackageHalted, TypePackageFailed,
		TypeGuestStarted, TypeGuestLost, TypeGuestStopped,
		TypeGuestMigrating, TypeGuestMigrated, TypeGuestMigrationFailed,
		TypeServiceRestarting, TypeServiceFailed:
		return byHost
	case TypeProcessStarted, TypeProcessExited:
		return byGuestHost
	}
	return nil
}

// SourceFits returns an error wrapping ErrInvalid unless e's source names a
// role that writes e's type (Writers) and, for a host's node event, the
// node the event is about.
func SourceFits(e Event) error {
	role, name := RoleOf(e.Source)
	typ := e.Type()
	for _, w := range Writers(typ) {
		if w != role {
			continue
		}
		if role == RoleHost && strings.HasPrefix(typ, "io.vmguard.node.") && name != e.Subject {
			return fmt.Errorf("%w: source %q: the host of node %s wrote a %s about node %s", ErrInvalid, e.Source, name, typ, e.Subject)
		}
		return nil
	}
	return fmt.Errorf("%w: source %q (%s): a %s is written by %s", ErrInvalid, e.Source, role, typ, rolesText(Writers(typ)))
}

func rolesText(rs []Role) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	return strings.Join(s, " or ")
}
