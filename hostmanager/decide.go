package hostmanager

import (
	"github.com/vmguard/vmguard/events"
)

// Decide returns the next event this node must append about package pkg,
// and false when there is none. The event has Source, Subject, Data and
// CauseID (the event it answers) set, and no ID, Time or Seq: the runner
// stamps it, appends it with s.Expect(pkg), applies it and calls Decide
// again, until it returns false. Decide reads s only.
//
// What it decides, in order:
//   - package.halted{reason: moved} for an older placement on this node that
//     never started and was superseded, so the next one can start;
//   - for the instance on this node:
//   - guest.migrating once a newer placement on another node asks for a
//     live migration (package.placed with migrate) that the guest's driver
//     can do; the runner then migrates (MigrateGuest);
//   - once it is halting or failing and down (guest stopped, no process):
//     package.failed{reason, service} if failing, else package.halted{reason};
//   - a failure exit of a service (any exit, code 0 included, while the
//     guest is up and the package is not halting): service.restarting
//     {attempt, restarts_left, delay_ms} within the service's restart policy,
//     else service.failed (which starts the halt that ends in package.failed);
//   - package.started once the guest is up and every service has a process;
//   - for the current placement, on this node, not released, once every
//     older placement is released: package.halted if an operator halted it
//     before it started, package.failed if the config in force lacks the
//     package or a generic resource it needs is not up on this node, else
//     package.starting.
func Decide(s *State, pkg string) (events.Event, bool) {
	p := s.Packages[pkg]
	if p == nil || s.Config == nil {
		return events.Event{}, false
	}
	d := decider{s: s, p: p}
	for _, pl := range p.Prior {
		if pl.Node == s.Node && (p.Inst == nil || p.Inst.Epoch != pl.Epoch) {
			return d.event(p.Current.ID, events.PackageHalted{Node: s.Node, Epoch: pl.Epoch, Reason: ReasonMoved}), true
		}
	}
	if in := p.Inst; in != nil {
		return d.instance(in)
	}
	c := p.Current
	if c.Epoch == 0 || c.Node != s.Node || c.Released || len(p.Prior) > 0 {
		return events.Event{}, false
	}
	if c.Halt != nil {
		return d.event(c.Halt.ID, events.PackageHalted{Node: s.Node, Epoch: c.Epoch, Reason: clipReason(c.Halt.Reason)}), true
	}
	cp, ok := s.Config.Package(pkg)
	if !ok {
		return d.event(p.ReadyID, events.PackageFailed{Node: s.Node, Epoch: c.Epoch, Reason: clipReason("package " + pkg + " is not in the configuration in force")}), true
	}
	if why := s.resourceDown(cp); why != "" {
		return d.event(p.ReadyID, events.PackageFailed{Node: s.Node, Epoch: c.Epoch, Reason: clipReason(why)}), true
	}
	return d.event(p.ReadyID, events.PackageStarting{Node: s.Node, Epoch: c.Epoch}), true
}

type decider struct {
	s *State
	p *PackageState
}

func (d decider) event(cause string, data events.Payload) events.Event {
	return events.Event{Source: d.s.Source(), Subject: d.p.Name, CauseID: cause, Data: data}
}

func (d decider) instance(in *Instance) (events.Event, bool) {
	node := d.s.Node
	if m := in.Migration; m != nil && m.MigratingID == "" && !in.Stopping() {
		return d.event(m.PlacedID, events.GuestMigrating{Guest: in.Config.Guest.Name, Node: node, Epoch: in.Epoch,
			TargetNode: m.TargetNode, TargetEpoch: m.TargetEpoch}), true
	}
	if in.Stopping() {
		if !in.Down() {
			return events.Event{}, false
		}
		if f := in.Failure; f != nil {
			return d.event(in.LastID, events.PackageFailed{Node: node, Epoch: in.Epoch, Reason: clipReason(f.Reason), Service: f.Service}), true
		}
		return d.event(in.LastID, events.PackageHalted{Node: node, Epoch: in.Epoch, Reason: clipReason(in.Halt.Reason)}), true
	}
	if in.Guest.Phase != GuestUp {
		return events.Event{}, false
	}
	for _, sv := range in.Services {
		if sv.Exit == nil {
			continue
		}
		spec := d.s.serviceSpec(d.p, in, sv.Name)
		o := decideRestart(spec, sv, sv.Exit.Time)
		if o.restart {
			return d.event(sv.Exit.ID, events.ServiceRestarting{
				Service: sv.Name, Node: node, Epoch: in.Epoch,
				Attempt: o.attempt, RestartsLeft: o.left, DelayMS: ceilMS(o.delay),
			}), true
		}
		return d.event(sv.Exit.ID, events.ServiceFailed{
			Service: sv.Name, Node: node, Epoch: in.Epoch, Restarts: o.used,
			Reason: clipReason(exitText(sv.Exit) + ", restarts used up (restart: " + spec.Restart.String() + ")"),
		}), true
	}
	if !in.Started {
		for _, sv := range in.Services {
			if sv.Proc == nil {
				return events.Event{}, false
			}
		}
		cause := in.LastStartID
		if cause == "" {
			cause = in.Guest.StartedID
		}
		return d.event(cause, events.PackageStarted{Node: node, Epoch: in.Epoch}), true
	}
	return events.Event{}, false
}

// clipReason cuts a reason built from outside text (an operator's words,
// an agent's reply, a driver's output, another event's reason) to the
// schemas' limit, as valid UTF-8 that says it was cut.
func clipReason(s string) string { return events.Clip(s, events.MaxReason) }
