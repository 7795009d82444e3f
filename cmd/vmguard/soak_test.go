package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/invariant"
)

var soakFor = flag.Duration("soak", 0, "run TestSoak this long (0: the short version CI runs, about 40 s)")

// soakConfig has one package whose service exits every 50 ms and is
// restarted without limit; its guest is restarted without limit too, so
// that only node losses move it.
func soakConfig(tag string) string {
	return fmt.Sprintf(`cluster: soak
node_timeout: %s
guest_timeout: 3s
nodes: [node1, node2]
packages:
  - name: app
    nodes: [node1, node2]
    guest: {name: appvm, driver: process, start_timeout: 20s, restart: unlimited}
    services:
      - name: main
        cmd: ["sh", "-c", "sleep 0.05; exit 1 # %s"]
        restart: unlimited
        halt_timeout: 1s
`, faultNodeTimeout, tag)
}

// soakFault is one class of fault the soak injects; inject does it and
// returns once the fault is over (a paused process continued, a killed one
// started again).
type soakFault struct {
	name   string
	inject func(f *faultEnv, r *rand.Rand)
}

// soakFaults are the fault classes of the soak, from the fault suite.
func soakFaults() []soakFault {
	runningNode := func(f *faultEnv) string {
		if n := runningOn(f.events()); n != "" {
			return n
		}
		return "node1"
	}
	pauseFor := func(r *rand.Rand, max time.Duration) time.Duration {
		return 500*time.Millisecond + time.Duration(r.Int64N(int64(max)))
	}
	return []soakFault{
		{"kill9_host", func(f *faultEnv, r *rand.Rand) {
			n := runningNode(f)
			f.kill9(n)
			time.Sleep(pauseFor(r, 2*faultNodeTimeout)) // down this long
			f.startHost(n)
		}},
		{"kill9_controller", func(f *faultEnv, r *rand.Rand) {
			f.kill9("failover")
			time.Sleep(pauseFor(r, time.Second))
			f.start("failover", "failover")
		}},
		{"kill9_agent", func(f *faultEnv, r *rand.Rand) {
			n := runningNode(f)
			_ = syscall.Kill(f.agentPID(n, "appvm"), syscall.SIGKILL)
		}},
		{"pause_agent", func(f *faultEnv, r *rand.Rand) {
			f.pause(f.agentPID(runningNode(f), "appvm"), pauseFor(r, 6*time.Second))
		}},
		{"pause_host", func(f *faultEnv, r *rand.Rand) {
			f.pause(f.procs[runningNode(f)].Process.Pid, pauseFor(r, 2*faultNodeTimeout))
		}},
		{"pause_controller", func(f *faultEnv, r *rand.Rand) {
			f.pause(f.procs["failover"].Process.Pid, pauseFor(r, 5*time.Second))
		}},
		{"pause_server", func(f *faultEnv, r *rand.Rand) {
			f.pause(f.server.Process.Pid, pauseFor(r, 2*faultNodeTimeout))
		}},
		{"server_down", func(f *faultEnv, r *rand.Rand) {
			f.killServer()
			time.Sleep(pauseFor(r, 2*faultNodeTimeout)) // down this long
			f.restartServer()
		}},
	}
}

// TestSoak restarts app's service over and over (it exits every 50 ms)
// while injecting random faults from the fault suite, one at a time. After
// each fault it waits for a terminal state (a process of app started after
// the fault ended; a package failed on every node is reset and counted)
// and records how long that took. At the end it prints the counts per
// fault class, the worst time to a terminal state and the restarts, and
// runs `vmguard verify` over the whole log: no violation is allowed.
//
//	go test -run TestSoak ./cmd/vmguard -soak=10m -v
func TestSoak(t *testing.T) {
	d := *soakFor
	if d == 0 {
		d = 40 * time.Second
	}
	seed := uint64(time.Now().UnixNano())
	r := rand.New(rand.NewPCG(seed, seed>>1))
	f := newFaultEnv(t, soakConfig(fmt.Sprintf("%s%d", tagPrefix, seed)))
	t.Logf("soak for %v, seed %d", d, seed)
	f.waitRunning(0, 30*time.Second, "app running")

	faults := soakFaults()
	counts := map[string]int{}
	worst := map[string]time.Duration{}
	var resets int
	// Bound on the time to a terminal state after any fault: node_timeout
	// for a lost node, guest_timeout for a lost guest, a guest start; 4x.
	bound := 4 * (faultNodeTimeout + 3*time.Second + 2*time.Second)
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		fl := faults[r.IntN(len(faults))]
		fl.inject(f, r)
		healed := time.Now()
		counts[fl.name]++
		took := f.waitProgress(healed, bound, fl.name, &resets)
		worst[fl.name] = max(worst[fl.name], took)
		time.Sleep(time.Duration(r.Int64N(int64(time.Second)))) // restarts run between faults
	}

	evs := f.events()
	restarts := count(evs, func(e events.Event) bool { return e.Type() == events.TypeServiceRestarting })
	rep := invariant.Verify(evs, invariant.Options{})
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range counts {
			if !yield(k) {
				return
			}
		}
	})
	var b strings.Builder
	var worstAll time.Duration
	total := 0
	for _, n := range names {
		fmt.Fprintf(&b, "  %-17s %5d faults, worst time to a terminal state %v\n", n, counts[n], worst[n].Round(time.Millisecond))
		worstAll = max(worstAll, worst[n])
		total += counts[n]
	}
	t.Logf("soak %v: %d faults, %d restarts, %d events, %d resets, worst time to a terminal state %v, %d violations\n%s",
		d, total, restarts, len(evs), resets, worstAll.Round(time.Millisecond), len(rep.Violations), b.String())
	for _, v := range rep.Violations {
		t.Errorf("violation: %s", v)
	}
	out, err := exec.Command(vmguardBin, "--nats", f.url, "verify").CombinedOutput()
	if err != nil {
		t.Errorf("vmguard verify: %v\n%s", err, lastLines(string(out), 20))
	}
}

// waitProgress waits, at most bound, for a process of app to start with an
// event time after healed, and returns how long after healed it started. A
// package failed on every node in between is reset (counted in resets).
func (f *faultEnv) waitProgress(healed time.Time, bound time.Duration, fault string, resets *int) time.Duration {
	f.t.Helper()
	deadline := healed.Add(bound)
	for {
		evs := f.events()
		for _, e := range evs {
			if _, ok := e.Data.(events.ProcessStarted); ok && e.Subject == "app" && e.Time.After(healed) {
				return e.Time.Sub(healed)
			}
		}
		if failedEverywhere(evs) {
			f.cli("pkg", "reset", "app", "--reason", "soak: failed on every node")
			*resets++
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("liveness: after %s, no process of app started within %v", fault, bound)
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
}

// failedEverywhere reports whether app's last lifecycle event is a
// package.failed with no placement after it for a while.
func failedEverywhere(evs []events.Event) bool {
	var last events.Event
	for _, e := range evs {
		switch e.Data.(type) {
		case events.PackagePlaced, events.PackageStarting, events.PackageStarted, events.PackageHalting, events.PackageHalted, events.PackageFailed, events.PackageReset:
			if e.Subject == "app" {
				last = e
			}
		}
	}
	_, failed := last.Data.(events.PackageFailed)
	return failed && time.Since(last.Time) > 3*time.Second
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
