package hostmanager

import (
	"slices"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// Halt reasons the host manager writes by itself.
const (
	ReasonMoved    = "moved"     // placed on another node under a newer epoch
	ReasonReplaced = "replaced"  // placed again on this node under a newer epoch
	ReasonFenced   = "fenced"    // this node's host lost its lease
	ReasonNodeLost = "node_lost" // the log says this node is lost
)

// Apply folds e into s and reports whether it was new. An event at or below
// the last sequence applied for its package (or node, or the cluster) changes
// nothing, and so does one with Seq 0. Events about an epoch other than the
// instance's on this node change nothing but the package's Seq.
func (s *State) Apply(e events.Event) bool {
	if e.Seq == 0 || e.Data == nil {
		return false
	}
	scope, ok := scopeOf(e)
	if !ok {
		return false
	}
	if scope == events.ScopePlacement {
		// A placement's marker (read only by a host reading the whole
		// log): the placement stored after it is what counts.
		s.Seq = max(s.Seq, e.Seq)
		return false
	}
	switch scope {
	case events.ScopeCluster:
		if e.Seq <= s.ClusterSeq {
			return false
		}
		s.ClusterSeq = e.Seq
		if d, ok := e.Data.(events.ConfigApplied); ok {
			s.applyConfig(e, d)
		}
	case events.ScopeNode:
		if e.Seq <= s.NodeSeqs[e.Subject] {
			return false
		}
		s.NodeSeqs[e.Subject] = e.Seq
		switch d := e.Data.(type) {
		case events.NodeLost:
			s.nodeDown(e, ReasonNodeLost)
		case events.NodeFenced:
			s.nodeDown(e, ReasonFenced)
		case events.NodeJoined:
			if s.NodeJoined == nil {
				s.NodeJoined = map[string]uint64{}
			}
			s.NodeJoined[e.Subject] = e.Seq
		case events.NodeResourceSet:
			if e.Subject == s.Node {
				s.resourceSet(e, d)
			}
		}
		if ff := s.FailFast; ff != nil && e.Subject == s.Node && e.Seq > ff.Seq {
			switch e.Data.(type) {
			case events.NodeLost, events.NodeFenced, events.NodeHalted:
				s.FailFast = nil
			}
		}
	case events.ScopePackage:
		if e.Subject == "" {
			return false
		}
		p := s.pkg(e.Subject)
		if e.Seq <= p.Seq {
			return false
		}
		p.Seq = e.Seq
		s.applyPackage(p, e)
	}
	s.localAfter(e, scope)
	s.Seq = max(s.Seq, e.Seq)
	return true
}

// scopeOf returns the scope of e's type, without parsing the type string
// for the types the host manager folds (the fold is on the restart path).
func scopeOf(e events.Event) (events.Scope, bool) {
	switch e.Data.(type) {
	case events.ConfigApplied:
		return events.ScopeCluster, true
	case events.NodeJoined, events.NodeLost, events.NodeHalted, events.NodeFenced:
		return events.ScopeNode, true
	case events.ProcessExited, events.ProcessStarted, events.ServiceRestarting, events.ServiceFailed,
		events.GuestStarted, events.GuestLost, events.GuestStopped,
		events.GuestMigrating, events.GuestMigrated, events.GuestMigrationFailed,
		events.PackagePlaced, events.PackageStarting, events.PackageStarted, events.PackageHalting,
		events.PackageHalted, events.PackageFailed, events.PackageReset, events.PackageSwitchingChanged:
		return events.ScopePackage, true
	}
	sc, err := events.ScopeOf(e.Type())
	return sc, err == nil
}

// resourceSet records a generic resource of this node and fails each
// instance here that watches it while running (during_package_start) and
// whose criterion it no longer meets.
func (s *State) resourceSet(e events.Event, d events.NodeResourceSet) {
	if s.Resources == nil {
		s.Resources = map[string]events.NodeResourceSet{}
	}
	s.Resources[d.Name] = events.NodeResourceSet{Name: d.Name, Status: d.Status, Value: d.Value}
	if s.Config == nil {
		return
	}
	for _, p := range s.Packages {
		in := p.Inst
		if in == nil || in.Stopping() {
			continue
		}
		cp, ok := s.Config.Package(p.Name)
		if !ok {
			continue
		}
		for _, r := range cp.Resources {
			if r.Name == d.Name && r.During() && !r.Met(d.Status, d.Value) {
				in.Failure = &Failure{Reason: resourceReason(r, s.Node, d.Status, d.Value), ID: e.ID, At: e.Time}
				in.LastID = e.ID
				break
			}
		}
	}
}

// resourceDown returns why a resource of cp is not up on this node, "" when
// every one is.
func (s *State) resourceDown(cp config.Package) string {
	for _, r := range cp.Resources {
		st := s.Resources[r.Name]
		if !r.Met(st.Status, st.Value) {
			return resourceReason(r, s.Node, st.Status, st.Value)
		}
	}
	return ""
}

func resourceReason(r config.Resource, node, status, value string) string {
	if status == "" {
		status = "never set"
	}
	if value != "" {
		status += " (value " + value + ")"
	}
	crit := r.Up
	if crit == "" {
		crit = "up"
	}
	return "resource " + r.Name + " on node " + node + " is " + status + ", the package needs " + crit
}

// multiNode reports whether the config in force has pkg as a multi-node
// package.
func (s *State) multiNode(pkg string) bool {
	if s.Config == nil {
		return false
	}
	cp, ok := s.Config.Package(pkg)
	return ok && cp.MultiNode()
}

// serviceFailFast reports whether the config in force has fail_fast on
// service svc of package pkg.
func (s *State) serviceFailFast(pkg, svc string) bool {
	if s.Config == nil {
		return false
	}
	cp, ok := s.Config.Package(pkg)
	if !ok {
		return false
	}
	sc, ok := cp.Service(svc)
	return ok && sc.FailFast
}

// nodeFailFast reports whether the config in force has node_fail_fast on
// package pkg.
func (s *State) nodeFailFast(pkg string) bool {
	if s.Config == nil {
		return false
	}
	cp, ok := s.Config.Package(pkg)
	return ok && cp.NodeFailFast
}

func (s *State) applyConfig(e events.Event, d events.ConfigApplied) {
	c, err := s.configs.parse(e.ID, d)
	if err != nil {
		s.ConfigErr = err.Error()
		return
	}
	s.Config, s.ConfigID, s.ConfigErr = c, e.ID, ""
}

// downAt reports whether node is down for a placement at seq: a node.lost
// or node.fenced of it after seq (events folded out of order), or one
// before seq with no node.joined since.
func (s *State) downAt(node string, seq uint64) bool {
	down, ok := s.NodeDown[node]
	return ok && (down > seq || s.NodeJoined[node] < down)
}

// nodeDown releases every placement on the node made before e; on this node
// it also halts the running instances (the runner fences before the log
// says so; this makes sure). Their guests are forced off, not shut down
// gracefully: the runner already stopped them when it fenced, and a node
// the cluster counts as lost must not keep anything running.
func (s *State) nodeDown(e events.Event, reason string) {
	node := e.Subject
	s.NodeDown[node] = e.Seq
	for _, p := range s.Packages {
		p.release(func(pl Placement) bool { return pl.Node == node && pl.Seq < e.Seq }, e.ID)
		in := p.Inst
		if node != s.Node || in == nil {
			continue
		}
		if !in.Stopping() {
			in.Halt = &Halt{Reason: reason, ID: e.ID}
		}
		if in.Guest.Phase == GuestUp {
			in.Guest.Phase = GuestLost
		}
		in.LastID = e.ID
	}
}

// release marks the placements that match as released and drops them from
// Prior; id becomes ReadyID if it released an older placement.
func (p *PackageState) release(match func(Placement) bool, id string) {
	if p.Current.Epoch > 0 && !p.Current.Released && match(p.Current) {
		p.Current.Released = true
	}
	n := len(p.Prior)
	p.Prior = slices.DeleteFunc(p.Prior, match)
	if len(p.Prior) < n {
		p.ReadyID = id
	}
}

// applyPackage folds an event about package p (a package, guest, service
// or process event).
func (s *State) applyPackage(p *PackageState, e events.Event) {
	switch d := e.Data.(type) {
	case events.PackagePlaced:
		s.placed(p, e, d)
	case events.PackageStarting:
		s.starting(p, e, d)
	case events.PackageStarted:
		if in := p.inst(d.Epoch); in != nil && d.Node == s.Node {
			in.Started = true
			in.LastID = e.ID
		}
	case events.PackageHalting:
		s.halting(p, e, d)
	case events.PackageHalted:
		p.ended(d.Epoch, e.ID)
	case events.PackageFailed:
		if d.Node == s.Node && p.Inst != nil && p.Inst.Epoch == d.Epoch && s.FailFast == nil && s.nodeFailFast(p.Name) {
			s.FailFast = &FailFast{Package: p.Name, Seq: e.Seq,
				Reason: "node_fail_fast: package " + p.Name + " failed: " + d.Reason}
		}
		p.ended(d.Epoch, e.ID)
	case events.PackageReset:
		if in := p.Inst; in != nil {
			in.reset(d.Service)
		}
	case events.GuestStarted:
		if in := p.inst(d.Epoch); in != nil && d.Node == s.Node {
			in.guestStarted(e)
		}
	case events.GuestLost:
		if in := p.inst(d.Epoch); in != nil && d.Node == s.Node {
			s.guestLost(p, in, e)
		}
	case events.GuestStopped:
		if in := p.inst(d.Epoch); in != nil && d.Node == s.Node {
			s.guestStopped(p, in, e, d)
		}
	case events.GuestMigrating:
		if in := p.inst(d.Epoch); in != nil && d.Node == s.Node {
			if m := in.Migration; m != nil && m.TargetEpoch == d.TargetEpoch && m.MigratingID == "" {
				m.MigratingID = e.ID
				in.LastID = e.ID
			}
		}
	case events.GuestMigrated:
		s.migrated(p, e, d)
	case events.GuestMigrationFailed:
		if in := p.inst(d.Epoch); in != nil && d.Node == s.Node && in.Migration != nil {
			// The fallback: halt here, then the target starts it afresh.
			in.Migration = nil
			if !in.Stopping() {
				in.Halt = &Halt{Reason: ReasonMoved, ID: e.ID}
			}
			in.LastID = e.ID
		}
	case events.ServiceRestarting:
		if in := p.inst(d.Epoch); in != nil && d.Node == s.Node {
			s.restarting(p, in, e, d)
		}
	case events.ServiceFailed:
		if in := p.inst(d.Epoch); in != nil && d.Node == s.Node {
			s.serviceFailed(p, in, e, d)
		}
	case events.ProcessStarted:
		if in := p.procInst(d.Epoch); in != nil && d.Guest == in.Config.Guest.Name {
			in.processStarted(e, d)
		}
	case events.ProcessExited:
		if in := p.procInst(d.Epoch); in != nil && d.Guest == in.Config.Guest.Name {
			in.processExited(e, d)
		}
	}
}

// reset folds a package.reset of service (all of them if ""): the
// restart counts start again.
func (in *Instance) reset(service string) {
	for _, sv := range in.Services {
		if service == "" || service == sv.Name {
			sv.Restarts, sv.RestartTimes = 0, nil
		}
	}
	if service == "" {
		in.Guest.Restarts = 0
	}
}

// serviceFailed folds a service.failed of instance in: the service stays
// failed, the instance keeps its first failure, and a fail_fast service
// fails the node.
func (s *State) serviceFailed(p *PackageState, in *Instance, e events.Event, d events.ServiceFailed) {
	sv := in.Service(d.Service)
	if sv == nil || sv.Failed {
		return
	}
	sv.Failed, sv.Exit, sv.Run = true, nil, nil
	if in.Failure == nil {
		in.Failure = &Failure{Reason: "service " + d.Service + " failed: " + d.Reason, Service: d.Service, ID: e.ID, At: e.Time}
	}
	if s.FailFast == nil && s.serviceFailFast(p.Name, d.Service) {
		s.FailFast = &FailFast{Package: p.Name, Seq: e.Seq,
			Reason: "fail_fast: service " + d.Service + " of package " + p.Name + " failed: " + d.Reason}
	}
	in.LastID = e.ID
}

// procInst returns the package's instance on this node whose processes
// report epoch: its own, or the one it adopted by a live migration.
func (p *PackageState) procInst(epoch uint64) *Instance {
	if in := p.Inst; in != nil && (in.Epoch == epoch || (in.FromEpoch != 0 && in.FromEpoch == epoch)) {
		return in
	}
	return nil
}

// migrated folds guest.migrated: the source placement is released (on the
// source node its instance is over, without a halt: the guest runs on),
// and on the target node the current placement, if it is the target one,
// will adopt the guest and its processes when it starts.
func (s *State) migrated(p *PackageState, e events.Event, d events.GuestMigrated) {
	p.ended(d.Epoch, e.ID)
	c := p.Current
	if d.TargetNode != s.Node || c.Epoch != d.TargetEpoch || c.Node != s.Node || p.Inst != nil {
		return
	}
	a := &Adoption{Epoch: d.TargetEpoch, FromEpoch: d.Epoch, ID: e.ID}
	for _, mp := range d.Processes {
		a.Procs = append(a.Procs, Process{Service: mp.Service, RequestID: mp.RequestID, PID: mp.PID, StartedID: mp.StartedID})
	}
	p.Adopt = a
}

// inst returns the package's instance on this node if it has epoch.
func (p *PackageState) inst(epoch uint64) *Instance {
	if p.Inst != nil && p.Inst.Epoch == epoch {
		return p.Inst
	}
	return nil
}

// placed folds a package.placed. For a multi-node package only the
// placements on this node count: its instances on other nodes run beside
// this one, they do not replace it (unless this node's runs as a failover
// package: its package_type changed).
func (s *State) placed(p *PackageState, e events.Event, d events.PackagePlaced) {
	if d.Epoch <= p.Current.Epoch {
		return // stale: placements only go forward
	}
	if d.Node != s.Node && s.multiNode(p.Name) {
		// Another instance: it runs beside this node's. But an instance
		// started here as a failover package (its package_type changed
		// since) halts, as the controller's fold has it leaving
		// (failover/typechange.go): the two kinds must not run at once.
		if in := p.Inst; in != nil && !in.Config.MultiNode() && in.Epoch < d.Epoch && !in.Stopping() && in.Migration == nil {
			in.Halt = &Halt{Reason: ReasonMoved, By: d.By, ID: e.ID}
			in.LastID = e.ID
		}
		return
	}
	if p.Current.Epoch > 0 && !p.Current.Released {
		p.Prior = append(p.Prior, p.Current)
	}
	p.Current = Placement{Epoch: d.Epoch, Node: d.Node, Reason: d.Reason, Seq: e.Seq, ID: e.ID}
	if s.downAt(d.Node, e.Seq) {
		// Void: placed on a node the log has lost or fenced (a decision
		// guarded by the package's sequence only, made before its maker
		// read the loss). Nothing starts it, here or when the node joins
		// again; the controller's fold counts it lost and places anew.
		p.Current.Released = true
	}
	p.ReadyID = e.ID
	p.Adopt = nil
	if in := p.Inst; in != nil && in.Epoch < d.Epoch && !in.Stopping() && in.Migration == nil {
		if d.Migrate && d.Node != s.Node && in.Started && in.Guest.Phase == GuestUp && in.Config.Guest.CanMigrate() {
			in.Migration = &Migration{TargetNode: d.Node, TargetEpoch: d.Epoch, PlacedID: e.ID}
			in.LastID = e.ID
			return
		}
		reason := ReasonMoved
		if d.Node == s.Node {
			reason = ReasonReplaced
		}
		in.Halt = &Halt{Reason: reason, By: d.By, ID: e.ID}
		in.LastID = e.ID
	}
}

func (s *State) starting(p *PackageState, e events.Event, d events.PackageStarting) {
	if d.Node != s.Node || d.Epoch != p.Current.Epoch || p.Current.Node != s.Node || p.Inst != nil {
		return
	}
	var cp config.Package
	if s.Config != nil {
		cp, _ = s.Config.Package(p.Name)
	}
	in := &Instance{
		Epoch:      d.Epoch,
		StartingID: e.ID,
		Config:     cp,
		Guest:      GuestState{Phase: GuestStarting, CauseID: e.ID},
		LastID:     e.ID,
	}
	// A multi-node package's instance has its own guest on each node.
	in.Config.Guest.Name = cp.GuestOn(s.Node)
	for _, sc := range cp.Services {
		in.Services = append(in.Services, &ServiceState{Name: sc.Name})
	}
	if h := p.Current.Halt; h != nil {
		in.Halt = h
	}
	if a := p.Adopt; a != nil && a.Epoch == d.Epoch {
		// The guest runs already (a live migration brought it): the start
		// finds it running; its processes go on.
		in.FromEpoch = a.FromEpoch
		for _, pr := range a.Procs {
			if sv := in.Service(pr.Service); sv != nil && sv.Proc == nil {
				sv.Proc = &Process{Service: pr.Service, RequestID: pr.RequestID, PID: pr.PID, StartedID: pr.StartedID}
			}
		}
	}
	p.Adopt = nil
	p.Inst = in
}

func (s *State) halting(p *PackageState, e events.Event, d events.PackageHalting) {
	if d.Node != "" && d.Node != s.Node {
		return
	}
	h := &Halt{Reason: d.Reason, By: d.By, ID: e.ID}
	epoch := d.Epoch
	if epoch == 0 && d.Node == "" && s.multiNode(p.Name) {
		// `pkg halt` of a multi-node package: every instance halts, so
		// this node's, whatever its epoch (placed or started).
		epoch = p.Current.Epoch
		if p.Inst != nil {
			epoch = p.Inst.Epoch
		}
	}
	if in := p.inst(epoch); in != nil {
		if !in.Stopping() {
			in.Halt = h
		}
		in.LastID = e.ID
		return
	}
	// The current placement, not started: halted before it starts. An
	// older instance may still be halting on this node (the placement
	// replaces it); the halt is for the new one all the same (found by
	// the simulator, sim seed 92: it was dropped, and the new placement
	// started and ran).
	if c := &p.Current; c.Epoch == epoch && c.Node == s.Node && !c.Released && c.Halt == nil {
		c.Halt = h
	}
}

// ended records a package.halted or package.failed: its placement is
// released and, if it is this node's instance, the instance is over.
func (p *PackageState) ended(epoch uint64, id string) {
	p.release(func(pl Placement) bool { return pl.Epoch == epoch }, id)
	if p.Inst != nil && p.Inst.Epoch == epoch {
		p.Inst = nil
	}
}

func (in *Instance) guestStarted(e events.Event) {
	g := &in.Guest
	if g.Phase == GuestUp || (e.CauseID != "" && e.CauseID == g.StartedCause) {
		return // a result appended twice
	}
	g.Phase, g.StartedID, g.StartedCause, g.CauseID = GuestUp, e.ID, e.CauseID, ""
	g.Starts++
	in.LastID = e.ID
	if in.Stopping() {
		return
	}
	// The first start of an adopted guest keeps the processes that came
	// with it; later starts (a guest restart) run every service afresh.
	adopted := in.FromEpoch != 0 && g.Starts == 1
	for _, sv := range in.Services {
		if sv.Failed || (adopted && sv.Proc != nil) {
			continue
		}
		sv.Proc, sv.Exit = nil, nil
		sv.Run = &RunRequest{ID: e.ID + "/" + sv.Name, CauseID: e.ID}
	}
}

func (s *State) guestLost(p *PackageState, in *Instance, e events.Event) {
	g := &in.Guest
	if g.Phase != GuestUp {
		return
	}
	g.Phase = GuestLost
	in.LastID = e.ID
	if in.Stopping() {
		return
	}
	guest := s.guestSpec(p, in)
	if guest.Restart.Allows(g.Restarts) {
		g.Restarts++
		g.CauseID = e.ID
		return
	}
	in.Failure = &Failure{Reason: "guest " + guest.Name + " lost (no heartbeat for guest_timeout), restarts used up (restart: " + guest.Restart.String() + ")", ID: e.ID, At: e.Time}
}

func (s *State) guestStopped(p *PackageState, in *Instance, e events.Event, d events.GuestStopped) {
	g := &in.Guest
	if e.CauseID != "" && e.CauseID == g.StoppedCause {
		return // a result appended twice
	}
	prev := g.Phase
	g.Phase, g.StoppedCause = GuestDown, e.CauseID
	in.LastID = e.ID
	// Whatever ran inside the guest is gone with it; late reports of those
	// processes no longer match anything.
	for _, sv := range in.Services {
		sv.Proc, sv.Run, sv.Exit = nil, nil, nil
	}
	in.Strays = nil
	if in.Stopping() {
		return
	}
	why := d.Reason
	if why == "" {
		why = "no reason given"
	}
	guest := s.guestSpec(p, in)
	switch {
	case prev == GuestLost && g.CauseID != "":
		g.Phase = GuestStarting // forced off to restart it: start it again
	case g.Starts == 0:
		in.Failure = &Failure{Reason: "guest " + guest.Name + " did not start: " + why, ID: e.ID, At: e.Time}
	case guest.Restart.Allows(g.Restarts):
		g.Restarts++
		g.Phase, g.CauseID = GuestStarting, e.ID
	default:
		in.Failure = &Failure{Reason: "guest " + guest.Name + " stopped (" + why + "), restarts used up (restart: " + guest.Restart.String() + ")", ID: e.ID, At: e.Time}
	}
}

func (s *State) restarting(p *PackageState, in *Instance, e events.Event, d events.ServiceRestarting) {
	sv := in.Service(d.Service)
	if sv == nil || sv.Exit == nil || sv.Failed {
		return
	}
	sv.Restarts++
	spec := s.serviceSpec(p, in, sv.Name)
	addRestartTime(spec, sv, sv.Exit.Time)
	sv.Exit = nil
	in.LastID = e.ID
	if !in.Stopping() {
		sv.Run = &RunRequest{ID: e.ID, CauseID: e.ID, NotBefore: e.Time.Add(time.Duration(d.DelayMS) * time.Millisecond)}
	}
}

func (in *Instance) processStarted(e events.Event, d events.ProcessStarted) {
	proc := &Process{Service: d.Service, RequestID: d.RequestID, PID: d.PID, StartedID: e.ID}
	sv := in.Service(d.Service)
	switch {
	case sv != nil && sv.Proc != nil && sv.Proc.RequestID == d.RequestID:
		return // reported twice
	case sv != nil && sv.Proc == nil && sv.Run != nil && sv.Run.ID == d.RequestID:
		sv.Proc, sv.Run = proc, nil
		in.LastStartID = e.ID
	case in.Guest.Phase == GuestUp:
		if slices.ContainsFunc(in.Strays, func(p Process) bool { return p.RequestID == d.RequestID }) {
			return
		}
		in.Strays = append(in.Strays, *proc)
	default:
		return
	}
	in.LastID = e.ID
}

// processExited records the end of a process. Any exit of a service's
// process counts as a failure (exit code 0 included, and a stop vmguard did
// not ask for) unless the instance is halting or failing.
func (in *Instance) processExited(e events.Event, d events.ProcessExited) {
	sv := in.Service(d.Service)
	switch {
	case sv != nil && sv.Proc != nil && sv.Proc.RequestID == d.RequestID:
		sv.Proc = nil
	case sv != nil && sv.Proc == nil && sv.Run != nil && sv.Run.ID == d.RequestID:
		sv.Run = nil // its process.started was lost or not written
	default:
		n := len(in.Strays)
		in.Strays = slices.DeleteFunc(in.Strays, func(p Process) bool { return p.RequestID == d.RequestID })
		if len(in.Strays) < n {
			in.LastID = e.ID
		}
		return
	}
	in.LastID = e.ID
	if in.Stopping() || sv.Failed || in.Guest.Phase != GuestUp {
		return
	}
	sv.Exit = &Exit{ID: e.ID, Time: e.Time, ExitCode: d.ExitCode, Signal: d.Signal, Reason: d.Reason, RequestID: d.RequestID}
}

// Skip records a message at seq on subject that the log skipped as
// malformed (events.ReadOptions.OnSkip). It changes nothing but the last
// sequences, so that a decision about that package appended with Expect does
// not conflict forever with a message no one can read. A skipped package
// message becomes the package's Seq (it is in the package's subject space);
// a seq at or below the package's Seq changes nothing.
func (s *State) Skip(seq uint64, subject string) {
	if seq == 0 {
		return
	}
	if pkg := events.PackageOfSubject(subject); pkg != "" {
		p := s.pkg(pkg)
		if seq <= p.Seq {
			return
		}
		p.Seq = seq
	} else if node := events.NodeOfSubject(subject); node != "" {
		s.NodeSeqs[node] = max(s.NodeSeqs[node], seq)
	}
	s.Seq = max(s.Seq, seq)
}
