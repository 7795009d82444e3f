package hostmanager

import (
	"fmt"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// ActionKind names what an Action asks the runner to do.
type ActionKind string

// Action kinds, with what the runner does and which event shows it done.
const (
	// StartGuest: start the guest through its driver (a guest already
	// running counts as started: after a crash the action comes again) and
	// wait, at most Guest.StartTimeout, until its agent answers; then append
	// a.GuestStarted(). If it does not come up, make sure it is off and
	// append a.GuestStopped(why).
	StartGuest ActionKind = "start_guest"
	// StopGuest: stop the guest through its driver (power it off if Force);
	// then append a.GuestStopped(a.Reason).
	StopGuest ActionKind = "stop_guest"
	// RunService: once NotBefore has passed, ask the guest agent to run
	// Service with run request id RequestID; the agent appends
	// process.started (it deduplicates by request id, so asking again after
	// a crash starts nothing twice).
	RunService ActionKind = "run_service"
	// StopService: ask the guest agent to stop the process started for
	// RequestID (SIGTERM, SIGKILL after Service.HaltTimeout); the agent
	// appends process.exited with reason "stopped".
	StopService ActionKind = "stop_service"
	// MigrateGuest: migrate the running guest live to Target through its
	// driver (a Migrator), within its migrate bound; then append
	// a.GuestMigrated(), or a.GuestMigrationFailed(why), after which the
	// instance halts (the fallback) and the target starts it afresh.
	MigrateGuest ActionKind = "migrate_guest"
)

// Action is something the log asks this node to do and does not yet show
// done. Pending lists the same action until its result is in the log, so a
// runner keeps the keys of the actions it is performing and starts each
// once. A package's guest actions are performed one at a time, in order.
type Action struct {
	Kind    ActionKind `json:"kind"`
	Package string     `json:"package"`
	Node    string     `json:"node"`
	Epoch   uint64     `json:"epoch"`
	// Guest is the guest's settings (name, driver, timeouts); the agent of
	// a RunService or StopService is the one of Guest.Name.
	Guest config.Guest `json:"guest"`
	// Service is the service to run or stop, with its command.
	Service config.Service `json:"service,omitzero"`
	// RequestID is the agent run request id: of the run to make
	// (RunService) or of the process to stop (StopService).
	RequestID string `json:"request_id,omitempty"`
	// PID is the process to stop, as the agent reported it.
	PID int `json:"pid,omitempty"`
	// NotBefore is when a RunService may be sent (the restart delay), or
	// when the stops of a failing instance may begin (the packages that
	// depend on it halt first: successorHold).
	NotBefore time.Time `json:"not_before,omitzero"`
	// Force asks StopGuest to power the guest off without waiting for it.
	Force bool `json:"force,omitempty"`
	// Reason says why a StopGuest stops the guest.
	Reason string `json:"reason,omitempty"`
	// CauseID is the event the action answers; the result event names it.
	CauseID string `json:"cause_id"`
	// Target and TargetEpoch are where a MigrateGuest takes the guest, and
	// Procs the processes it carries over.
	Target      string                   `json:"target,omitempty"`
	TargetEpoch uint64                   `json:"target_epoch,omitempty"`
	Procs       []events.MigratedProcess `json:"procs,omitempty"`
}

// Key identifies the action, to perform it once while it is pending.
func (a Action) Key() string {
	return fmt.Sprintf("%s/%s/%d/%s/%s/%s", a.Kind, a.Package, a.Epoch, a.Service.Name, a.RequestID, a.CauseID)
}

// GuestStarted returns the event recording that a StartGuest action brought
// the guest up. Append it without an expected sequence: it is a fact.
func (a Action) GuestStarted() events.Event {
	return events.Event{Source: HostSource(a.Node), Subject: a.Package, CauseID: a.CauseID,
		Data: events.GuestStarted{Guest: a.Guest.Name, Node: a.Node, Epoch: a.Epoch}}
}

// GuestStopped returns the event recording that the guest is down: after a
// StopGuest, or after a StartGuest that failed (reason says why).
func (a Action) GuestStopped(reason string) events.Event {
	return events.Event{Source: HostSource(a.Node), Subject: a.Package, CauseID: a.CauseID,
		Data: events.GuestStopped{Guest: a.Guest.Name, Node: a.Node, Epoch: a.Epoch, Reason: clipReason(reason)}}
}

// GuestMigrated returns the event recording that a MigrateGuest action
// brought the guest to a.Target. Append it without an expected sequence.
func (a Action) GuestMigrated() events.Event {
	return events.Event{Source: HostSource(a.Node), Subject: a.Package, CauseID: a.CauseID,
		Data: events.GuestMigrated{Guest: a.Guest.Name, Node: a.Node, Epoch: a.Epoch, TargetNode: a.Target, TargetEpoch: a.TargetEpoch, Processes: a.Procs}}
}

// GuestMigrationFailed returns the event recording that a MigrateGuest
// action did not migrate the guest (reason says why).
func (a Action) GuestMigrationFailed(reason string) events.Event {
	return events.Event{Source: HostSource(a.Node), Subject: a.Package, CauseID: a.CauseID,
		Data: events.GuestMigrationFailed{Guest: a.Guest.Name, Node: a.Node, Epoch: a.Epoch, TargetNode: a.Target, TargetEpoch: a.TargetEpoch,
			Reason: clipReason(reason)}}
}

// Unreported returns the event recording that the run of a RunService
// action, which the agent accepted with process pid, counts as a failed
// start: its process.started did not come within ReportTimeout. The core
// folds it like any exit (the restart policy applies); a process.started
// that still comes later makes the process a stray, which is stopped.
func (a Action) Unreported(pid int) events.Event {
	return events.Event{Source: HostSource(a.Node), Subject: a.Package, CauseID: a.CauseID, Data: events.ProcessExited{
		Guest: a.Guest.Name, Service: a.Service.Name, PID: pid, ExitCode: -1, RequestID: a.RequestID, Epoch: a.Epoch,
		Reason: ReasonUnreported,
	}}
}

// Pending returns the actions the log asks of this node for package pkg and
// does not yet show done, in the order to start them:
//   - halting or failing: StopService for every process while the guest is
//     up, then StopGuest once none is left (at once, forced, if the guest is
//     lost; also when a start may be under way);
//   - a lost guest to restart: StopGuest (forced), then StartGuest;
//   - a guest to start (first start or restart): StartGuest;
//   - the guest up: RunService for every service with a decided run that
//     has not started (after its restart delay), StopService for strays.
func Pending(s *State, pkg string) []Action {
	p := s.Packages[pkg]
	if p == nil || p.Inst == nil {
		return nil
	}
	in := p.Inst
	base := Action{Package: pkg, Node: s.Node, Epoch: in.Epoch, Guest: in.Config.Guest}
	var out []Action
	if m := in.Migration; m != nil && m.MigratingID != "" && !in.Stopping() {
		return []Action{migrateAction(base, in, m)}
	}
	if in.Stopping() {
		cause, reason := in.stopCause()
		switch in.Guest.Phase {
		case GuestUp:
			out = s.stopProcs(p, in, base, cause)
			if len(out) == 0 {
				a := base
				a.Kind, a.Reason, a.CauseID = StopGuest, reason, cause
				out = append(out, a)
			}
			if hold := s.successorHold(p, in); !hold.IsZero() {
				for i := range out {
					out[i].NotBefore = hold
				}
			}
		case GuestLost, GuestStarting:
			a := base
			a.Kind, a.Reason, a.CauseID, a.Force = StopGuest, reason, cause, in.Guest.Phase == GuestLost
			out = append(out, a)
		}
		return out
	}
	switch in.Guest.Phase {
	case GuestLost:
		a := base
		a.Kind, a.Force, a.Reason, a.CauseID = StopGuest, true, "guest lost, restarting it", in.Guest.CauseID
		out = append(out, a)
	case GuestStarting:
		a := base
		a.Kind, a.CauseID = StartGuest, in.Guest.CauseID
		out = append(out, a)
	case GuestUp:
		for _, sv := range in.Services {
			if sv.Run == nil || sv.Proc != nil || sv.Exit != nil || sv.Failed {
				continue
			}
			a := base
			a.Kind, a.Service, a.RequestID, a.NotBefore, a.CauseID = RunService, s.serviceSpec(p, in, sv.Name), sv.Run.ID, sv.Run.NotBefore, sv.Run.CauseID
			out = append(out, a)
		}
		for _, st := range in.Strays {
			// The service's halt_timeout bounds the stop (and so when the
			// ladder forces the guest off), as for a halt.
			out = append(out, s.stopStray(p, in, base, st, st.StartedID))
		}
	}
	return out
}

// successorHold returns until when the stops of failing instance in of
// package p wait for the packages that depend on p (an up dependency) to
// halt first (for a multi-node p, those that need it on this node and
// occupy it: besideHere), as Serviceguard halts a package whose dependency fails before
// that package: while one of them this node knows of still holds a
// placement (running here, or placed anywhere and not released), at most
// p's successor_halt_timeout from the failure. Zero: no wait (a halt, not a
// failure; a fail-fast fences this node; no such package;
// successor_halt_timeout 0). The controller halts
// them when it reads the failure (service.failed) or the package's state;
// a successor whose node list leaves this node out is not read here
// (DESIGN §11), so it is not waited for.
func (s *State) successorHold(p *PackageState, in *Instance) time.Time {
	if in.Halt != nil || in.Failure == nil || in.Failure.At.IsZero() || s.Config == nil || s.FailFast != nil {
		return time.Time{}
	}
	cp, ok := s.Config.Package(p.Name)
	if !ok || cp.SuccessorHalt() <= 0 {
		return time.Time{}
	}
	for _, name := range s.Config.Successors(p.Name) {
		q := s.Packages[name]
		if q == nil || !q.holdsPlacement() {
			continue
		}
		if cp.MultiNode() && !s.besideHere(name, q, p.Name) {
			// A multi-node package's other instances still serve it.
			continue
		}
		return in.Failure.At.Add(cp.SuccessorHalt())
	}
	return time.Time{}
}

// besideHere reports whether package name (state q) needs package pred on
// its node (same_node) and occupies this node: what a failing instance of
// multi-node package pred here waits for. Its dependents elsewhere, or
// any_node ones, are served by pred's other instances.
func (s *State) besideHere(name string, q *PackageState, pred string) bool {
	qc, ok := s.Config.Package(name)
	if !ok {
		return false
	}
	d, ok := qc.Dependency(pred)
	if !ok || d.Where() != config.SameNode {
		return false
	}
	return q.Inst != nil || (q.Current.Node == s.Node && !q.Current.Released)
}

// holdsPlacement reports whether the package runs on this node or has a
// placement anywhere not yet released.
func (p *PackageState) holdsPlacement() bool {
	return p.Inst != nil || len(p.Prior) > 0 || (p.Current.Epoch > 0 && !p.Current.Released)
}

// migrateAction is the MigrateGuest of migration m, carrying the
// instance's running processes.
func migrateAction(base Action, in *Instance, m *Migration) Action {
	a := base
	a.Kind, a.Target, a.TargetEpoch, a.CauseID = MigrateGuest, m.TargetNode, m.TargetEpoch, m.MigratingID
	for _, sv := range in.Services {
		if sv.Proc != nil {
			a.Procs = append(a.Procs, events.MigratedProcess{Service: sv.Name, RequestID: sv.Proc.RequestID, PID: sv.Proc.PID, StartedID: sv.Proc.StartedID})
		}
	}
	return a
}

// stopProcs is a StopService for every process of the instance, services'
// first, then strays', each caused by cause.
func (s *State) stopProcs(p *PackageState, in *Instance, base Action, cause string) []Action {
	var out []Action
	for _, sv := range in.Services {
		if sv.Proc != nil {
			a := base
			a.Kind, a.Service, a.RequestID, a.PID, a.CauseID = StopService, s.serviceSpec(p, in, sv.Name), sv.Proc.RequestID, sv.Proc.PID, cause
			out = append(out, a)
		}
	}
	for _, st := range in.Strays {
		out = append(out, s.stopStray(p, in, base, st, cause))
	}
	return out
}

// stopStray is the StopService of the stray process st (a service the
// config no longer has keeps its name).
func (s *State) stopStray(p *PackageState, in *Instance, base Action, st Process, cause string) Action {
	a := base
	a.Kind, a.Service, a.RequestID, a.PID, a.CauseID = StopService, s.serviceSpec(p, in, st.Service), st.RequestID, st.PID, cause
	if a.Service.Name == "" {
		a.Service.Name = st.Service
	}
	return a
}

// stopCause returns the event that started the halt and a reason for it.
func (in *Instance) stopCause() (id, reason string) {
	if f := in.Failure; f != nil {
		return f.ID, f.Reason
	}
	return in.Halt.ID, in.Halt.Reason
}
