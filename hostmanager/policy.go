package hostmanager

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
)

// serviceSpec returns the policy of a service: from the config in force if
// it still has the service, else as the instance started with it.
func (s *State) serviceSpec(p *PackageState, in *Instance, name string) config.Service {
	if s.Config != nil {
		if cp, ok := s.Config.Package(p.Name); ok {
			if sc, ok := cp.Service(name); ok {
				return sc
			}
		}
	}
	sc, _ := in.Config.Service(name)
	return sc
}

// guestSpec returns the guest's settings: its restart limit from the config
// in force, everything else as the instance started with it (a new driver or
// guest name takes effect at the next start).
func (s *State) guestSpec(p *PackageState, in *Instance) config.Guest {
	g := in.Config.Guest
	if s.Config != nil {
		if cp, ok := s.Config.Package(p.Name); ok && cp.GuestOn(s.Node) == g.Name {
			g.Restart = cp.Guest.Restart
		}
	}
	return g
}

// restartOutcome is the decision about one failed exit of a service.
type restartOutcome struct {
	restart bool
	// used counts the restarts that count against the limit: all since the
	// start or reset, or those inside restart_window before the exit.
	used    int
	attempt int
	left    int
	delay   time.Duration
}

// decideRestart applies a service's restart policy to an exit at time at.
// Outcomes:
//   - restart: none (the default) -> no restart;
//   - restart: N -> restart while fewer than N restarts count, attempt = counted + 1;
//   - restart: unlimited -> always restart;
//   - restart_window W -> only restarts whose exits were within W before this
//     exit count (a sliding window on event times);
//   - backoff -> delay = delay * factor^(attempt-1), at most max; no backoff: no delay.
func decideRestart(spec config.Service, sv *ServiceState, at time.Time) restartOutcome {
	used := sv.Restarts
	if w := spec.RestartWindow.D(); w > 0 {
		used = len(sv.RestartTimes) - windowStart(sv.RestartTimes, at, w)
	}
	if !spec.Restart.Allows(used) {
		return restartOutcome{used: used}
	}
	attempt := used + 1
	return restartOutcome{
		restart: true,
		used:    used,
		attempt: attempt,
		left:    spec.Restart.Left(attempt),
		delay:   spec.Backoff.DelayFor(attempt),
	}
}

// maxUnlimitedTimes bounds the restart times kept for restart: unlimited
// with a window; past it the attempt number (and so the backoff) saturates.
const maxUnlimitedTimes = 1000

// keptRestartTimes is how many restart times can matter: with restart: N
// only the last N (N inside the window use the restarts up).
func keptRestartTimes(l config.Limit) int {
	if l.Unlimited {
		return maxUnlimitedTimes
	}
	return max(l.N, 1)
}

// windowStart returns the index of the first of the sorted times that is
// inside the window w before at (strictly less than w earlier).
func windowStart(times []time.Time, at time.Time, w time.Duration) int {
	cutoff := at.Add(-w)
	return sort.Search(len(times), func(i int) bool { return times[i].After(cutoff) })
}

// addRestartTime records the exit time of a restart, keeping the times
// sorted, inside the window before at and no more than can matter.
func addRestartTime(spec config.Service, sv *ServiceState, at time.Time) {
	w := spec.RestartWindow.D()
	if w <= 0 {
		sv.RestartTimes = nil
		return
	}
	i, _ := slices.BinarySearchFunc(sv.RestartTimes, at, func(a, b time.Time) int { return a.Compare(b) })
	sv.RestartTimes = slices.Insert(sv.RestartTimes, i, at)
	drop := windowStart(sv.RestartTimes, at, w)
	if keep := keptRestartTimes(spec.Restart); len(sv.RestartTimes)-drop > keep {
		drop = len(sv.RestartTimes) - keep
	}
	sv.RestartTimes = slices.Delete(sv.RestartTimes, 0, drop)
}

// exitText describes an exit for a service.failed reason.
func exitText(x *Exit) string {
	var what string
	switch {
	case x.Reason != "":
		what = "stopped (" + x.Reason + ")"
	case x.Signal != "":
		what = "killed by " + x.Signal
	default:
		what = fmt.Sprintf("exited with code %d", x.ExitCode)
	}
	return what
}

// ceilMS rounds a delay up to whole milliseconds for delay_ms.
func ceilMS(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// StopGrace is how long a service stop may take beyond its halt_timeout
// (the agent sends SIGTERM, then SIGKILL at halt_timeout) before the host
// manager stops waiting for the process.exited that ends it: the reply and
// the exit report need a moment, a process the agent does not know (a
// forged or stale process.started) never produces one.
const StopGrace = 3 * time.Second

// stepKind is what an escalation step asks of the runner.
type stepKind int

const (
	stepAct   stepKind = iota // perform the action
	stepFence                 // fence the node for the package: the guest cannot be stopped
)

// stopDeadline returns when a StopService first sent at since has run out
// of time: halt_timeout (default config.DefaultHaltTimeout) plus StopGrace.
func stopDeadline(a Action, since time.Time) time.Time {
	halt := a.Service.HaltTimeout.D()
	if halt <= 0 {
		halt = config.DefaultHaltTimeout
	}
	return since.Add(halt + StopGrace)
}

// escalate returns the rung of the ladder of DESIGN §8 a stop has reached
// after rung failures or timeouts (0: none yet). Outcomes:
//   - rung 0: the action as it is;
//   - StopService, rung ≥ 1 (no process.exited by stopDeadline): stop the
//     guest through its driver, forced; the reason names the process;
//   - StopGuest not forced, rung 1 (the driver's stop failed): the same
//     stop, forced;
//   - StopGuest forced and rung ≥ 1, or rung ≥ 2: fence the node for the
//     package (stepFence);
//   - any other action: as it is.
func escalate(a Action, rung int) (Action, stepKind) {
	if rung <= 0 {
		return a, stepAct
	}
	switch a.Kind {
	case StopService:
		g := a
		g.Kind, g.Force, g.Service, g.RequestID, g.PID = StopGuest, true, config.Service{}, "", 0
		halt := a.Service.HaltTimeout.D()
		if halt <= 0 {
			halt = config.DefaultHaltTimeout
		}
		g.Reason = events.Clip(fmt.Sprintf("process %d of service %s (request id %s) did not end within halt_timeout %s + %s; guest forced off",
			a.PID, a.Service.Name, a.RequestID, halt, StopGrace), events.MaxReason)
		return g, stepAct
	case StopGuest:
		if rung == 1 && !a.Force {
			a.Force = true
			return a, stepAct
		}
		a.Force = true
		return a, stepFence
	}
	return a, stepAct
}

// ReasonUnreported is the reason of the process.exited the host manager
// records for a run the agent accepted but never reported started.
const ReasonUnreported = "not_reported"

// Bounds of the runner's actions that are not in the configuration.
const (
	// ReportTimeout bounds the wait for the process.started of a run the
	// agent accepted; after it the run counts as a failed start (the host
	// manager records its process.exited) and the restart policy applies.
	ReportTimeout = 10 * time.Second
	// RunGiveUp bounds the retries of a run request the agent does not
	// accept (no answer, busy, conflict); after it the service fails.
	RunGiveUp = 30 * time.Second
)

// guestStopTimeout bounds one stop of a guest by its driver: for exec,
// twice exec.timeout (the stop command, then the wait for status to say
// down) plus a second; for the others the process driver's graceful wait
// plus its wait after SIGKILL.
func guestStopTimeout(g config.Guest) time.Duration {
	if g.Exec != nil {
		t := g.Exec.Timeout.D()
		if t <= 0 {
			t = config.DefaultExecTimeout
		}
		return 2*t + time.Second
	}
	return DefaultProcessStopTimeout + 15*time.Second
}
