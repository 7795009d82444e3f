package main

import (
	"encoding/json"
	"flag"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/hostmanager"
)

// guardRuns is how many kill -9 runs TestGuardKill9HostManager makes (each
// its own cluster, killed at a random point); CI runs the default.
var guardRuns = flag.Int("guard-runs", 2, "runs of TestGuardKill9HostManager (random kill points); 20 or more for a long run")

// epochOf returns the epoch an event's data names, 0 if none.
func epochOf(t *testing.T, e events.Event) uint64 {
	t.Helper()
	b, err := json.Marshal(e.Data)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Epoch uint64 `json:"epoch"`
	}
	_ = json.Unmarshal(b, &v)
	return v.Epoch
}

// watchGone polls pid every 2 ms from now on and returns a channel that
// yields the first time it found the process gone (dead or a zombie): an
// upper bound of when it ended.
func watchGone(pid int, stop <-chan struct{}) <-chan time.Time {
	gone := make(chan time.Time, 1)
	go func() {
		for {
			if syscall.Kill(pid, 0) != nil || !alive(pid) {
				gone <- time.Now()
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond): // poll interval
			}
		}
	}()
	return gone
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return err == nil && !isZombie(st)
}

// other returns the node of the two that is not n.
func other(n string) string {
	if n == "node1" {
		return "node2"
	}
	return "node1"
}

// guardActions reads what node's guard did.
func (f *faultEnv) guardActions(node string) []hostmanager.GuardAction {
	f.t.Helper()
	acts, err := hostmanager.ReadGuardActions(filepath.Join(f.dir, node))
	if err != nil {
		f.t.Fatal(err)
	}
	return acts
}

// TestGuardKill9HostManager: after kill -9 of the host manager of the node
// app runs on, at a random point of its renewal cycle, the node guard stops
// app's guest (the process driver's agent) before the other node records
// guest.started for app; the dead node's guard acted once, the other node's
// never; vmguard verify is clean. -guard-runs sets the number of runs.
func TestGuardKill9HostManager(t *testing.T) {
	for run := range *guardRuns {
		t.Run(strconv.Itoa(run), func(t *testing.T) {
			f, first := runningApp(t)
			node := first.Data.(events.PackageStarted).Node
			epoch := first.Data.(events.PackageStarted).Epoch
			pid := f.agentPID(node, "appvm")
			if !alive(pid) {
				t.Fatalf("agent pid %d of appvm on %s is not running", pid, node)
			}
			// A random kill point within two renewal intervals after the
			// package started (renew every node_timeout/4).
			wait := rand.N(faultNodeTimeout / 2)
			time.Sleep(wait) // the random kill point itself
			stop := make(chan struct{})
			defer close(stop)
			gone := watchGone(pid, stop)
			killed := time.Now()
			f.kill9(node)
			var goneAt time.Time
			select {
			case goneAt = <-gone:
			case <-time.After(4 * faultNodeTimeout):
				t.Fatalf("agent pid %d of appvm on %s still runs %v after its host manager's kill -9", pid, node, 4*faultNodeTimeout)
			}
			started := f.waitFor(4*(faultNodeTimeout+2*time.Second), "guest.started for app on "+other(node), func(e events.Event) bool {
				d, ok := e.Data.(events.GuestStarted)
				return ok && e.Subject == "app" && d.Node != node && d.Epoch > epoch
			})
			var lost events.Event
			for _, e := range f.events() {
				if _, ok := e.Data.(events.NodeLost); ok && e.Subject == node && e.Seq < started.Seq {
					lost = e
				}
			}
			t.Logf("kill point %v after start; agent gone %v after the kill; node.lost at +%v; guest.started on %s at +%v",
				wait.Round(time.Millisecond), goneAt.Sub(killed).Round(time.Millisecond),
				lost.Time.Sub(killed).Round(time.Millisecond), other(node), started.Time.Sub(killed).Round(time.Millisecond))
			if !goneAt.Before(started.Time) {
				t.Errorf("agent of appvm on %s gone at %s, not before guest.started on %s at %s", node,
					goneAt.Format(time.RFC3339Nano), other(node), started.Time.Format(time.RFC3339Nano))
			}
			if lost.Seq == 0 {
				t.Errorf("no node.lost for %s before guest.started at seq %d", node, started.Seq)
			} else if !goneAt.Before(lost.Time) {
				t.Errorf("agent of appvm on %s gone at %s, not before node.lost at %s", node, goneAt.Format(time.RFC3339Nano), lost.Time.Format(time.RFC3339Nano))
			}
			acts := f.guardActions(node)
			if len(acts) != 1 || !strings.HasPrefix(acts[0].Reason, "not petted") || len(acts[0].Failed) > 0 {
				t.Errorf("guard actions of %s: %+v, want one stop after a missed pet", node, acts)
			} else if !slicesContains(acts[0].Guests, "appvm") {
				t.Errorf("guard of %s stopped %v, want appvm among them", node, acts[0].Guests)
			}
			if acts := f.guardActions(other(node)); len(acts) > 0 {
				t.Errorf("needless fence: the guard of healthy %s acted: %+v", other(node), acts)
			}
			f.verify()
		})
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestGuardSIGSTOPHostManager: the host manager of app's node is stopped
// (SIGSTOP) for 2 × node_timeout, then continued. Meanwhile its guard stops
// app's guest before the other node starts it; once continued, the host
// manager finds itself fenced (node.fenced) and never acts on its old
// placement: no event of its about app's old epoch after the pause began
// other than recording that it is down.
func TestGuardSIGSTOPHostManager(t *testing.T) {
	f, first := runningApp(t)
	node := first.Data.(events.PackageStarted).Node
	epoch := first.Data.(events.PackageStarted).Epoch
	pid := f.agentPID(node, "appvm")
	stop := make(chan struct{})
	defer close(stop)
	gone := watchGone(pid, stop)
	before := f.lastSeq()
	paused := time.Now()
	f.pause(f.procs[node].Process.Pid, 2*faultNodeTimeout)
	continued := time.Now()
	var goneAt time.Time
	select {
	case goneAt = <-gone:
	default:
		t.Fatalf("agent pid %d of appvm on %s still runs after its host manager was stopped for %v", pid, node, continued.Sub(paused))
	}
	started := f.waitFor(4*(faultNodeTimeout+2*time.Second), "guest.started for app on "+other(node), func(e events.Event) bool {
		d, ok := e.Data.(events.GuestStarted)
		return ok && e.Subject == "app" && d.Node != node && d.Epoch > epoch
	})
	if !goneAt.Before(started.Time) {
		t.Errorf("agent gone at %s, not before guest.started on %s at %s", goneAt.Format(time.RFC3339Nano), other(node), started.Time.Format(time.RFC3339Nano))
	}
	fenced := f.waitFor(4*faultNodeTimeout, "node.fenced of "+node+" after SIGCONT", func(e events.Event) bool {
		_, ok := e.Data.(events.NodeFenced)
		return ok && e.Subject == node && e.Seq > before
	})
	f.waitFor(4*faultNodeTimeout, node+" joined again", func(e events.Event) bool {
		return e.Type() == events.TypeNodeJoined && e.Subject == node && e.Seq > fenced.Seq
	})
	t.Logf("stopped %v; agent gone at +%v; guest.started on %s at +%v; node.fenced at +%v",
		continued.Sub(paused).Round(time.Millisecond), goneAt.Sub(paused).Round(time.Millisecond), other(node),
		started.Time.Sub(paused).Round(time.Millisecond), fenced.Time.Sub(paused).Round(time.Millisecond))
	src := hostmanager.HostSource(node)
	for _, e := range f.events() {
		if e.Seq <= before || e.Source != src || e.Subject != "app" || epochOf(t, e) != epoch {
			continue
		}
		switch e.Data.(type) {
		case events.GuestStopped, events.PackageHalted, events.ProcessExited:
			// Recording that the old placement is down is not acting on it.
		default:
			t.Errorf("after the pause the host manager of %s acted on its old placement (epoch %d): seq %d %s", node, epoch, e.Seq, formatEvent(e))
		}
	}
	acts := f.guardActions(node)
	if len(acts) == 0 || len(acts[0].Failed) > 0 {
		t.Errorf("guard actions of %s: %+v, want a stop", node, acts)
	}
	if acts := f.guardActions(other(node)); len(acts) > 0 {
		t.Errorf("needless fence: the guard of healthy %s acted: %+v", other(node), acts)
	}
	f.verify()
}

// guardLoad is how long TestGuardNoNeedlessFence keeps the machine loaded.
var guardLoad = flag.Duration("guard-load", time.Minute, "how long TestGuardNoNeedlessFence saturates the CPUs and the disk (1m in CI, 5m for a long run)")

// TestGuardNoNeedlessFence: a healthy cluster at the fault configs'
// node_timeout (3 s) while every CPU runs a busy loop and a writer fsyncs
// to disk without pause: no guard acts, no node is fenced or lost, app
// keeps its one placement.
func TestGuardNoNeedlessFence(t *testing.T) {
	f, first := runningApp(t)
	var load []*exec.Cmd
	for range runtime.NumCPU() {
		load = append(load, exec.Command("sh", "-c", "while :; do :; done"))
	}
	sync := filepath.Join(f.dir, "fsync-load")
	load = append(load, exec.Command("sh", "-c", "while :; do dd if=/dev/zero of="+sync+" bs=64k count=16 oflag=sync conv=fsync 2>/dev/null; done"))
	for _, c := range load {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		for _, c := range load {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}()
	t.Logf("loading %d CPUs and the disk for %v", runtime.NumCPU(), *guardLoad)
	deadline := time.Now().Add(*guardLoad)
	for time.Now().Before(deadline) {
		for _, n := range []string{"node1", "node2"} {
			if acts := f.guardActions(n); len(acts) > 0 {
				t.Fatalf("needless fence: the guard of healthy %s acted under load: %+v", n, acts)
			}
		}
		time.Sleep(500 * time.Millisecond) // poll interval; the load runs for its full time
	}
	for _, e := range f.events() {
		if e.Seq <= first.Seq {
			continue
		}
		switch e.Data.(type) {
		case events.NodeFenced, events.NodeLost, events.PackagePlaced, events.GuestLost:
			t.Errorf("under load on a healthy cluster: seq %d %s", e.Seq, formatEvent(e))
		}
	}
	f.verify()
}
