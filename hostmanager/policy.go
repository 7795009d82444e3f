package hostmanager

import (
	"fmt"
	"time"

	"github.com/vmguard/vmguard/config"
)

// serviceSpec returns the policy of a service: from the config in force if
// it still has the service, else as the instance started with it.
func (s *State) serviceSpec(p *Package, in *Instance, name string) config.Service {
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
func (s *State) guestSpec(p *Package, in *Instance) config.Guest {
	g := in.Config.Guest
	if s.Config != nil {
		if cp, ok := s.Config.Package(p.Name); ok && cp.Guest.Name == g.Name {
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
		used = 0
		for _, t := range sv.RestartTimes {
			if at.Sub(t) < w {
				used++
			}
		}
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

// pruneWindow drops restart times that can no longer count at time at.
func pruneWindow(spec config.Service, sv *ServiceState, at time.Time) {
	w := spec.RestartWindow.D()
	if w <= 0 {
		sv.RestartTimes = nil
		return
	}
	kept := sv.RestartTimes[:0]
	for _, t := range sv.RestartTimes {
		if at.Sub(t) < w {
			kept = append(kept, t)
		}
	}
	sv.RestartTimes = kept
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
