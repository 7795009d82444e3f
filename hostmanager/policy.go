package hostmanager

import (
	"fmt"
	"slices"
	"sort"
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
