package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/failover"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

const multiNodeCluster = `cluster: mn
node_timeout: 5s
guest_timeout: 5s
nodes: [node1, node2]
packages:
  - name: mon
    package_type: multi_node
    nodes: [node1, node2]
    guest: {name: monvm, driver: process}
    services:
      - name: agent
        cmd: [sh, -c, "exec sleep 1000"]
        restart: 1
  - name: app
    nodes: [node1, node2]
    dependencies:
      - {name: mon, condition: up, location: same_node}
    guest: {name: appvm, driver: process}
    services:
      - name: svc
        cmd: [sh, -c, "exec sleep 1000"]
`

// TestMultiNodePackage: a multi-node package end to end, with `vmguard
// up`: mon runs on both nodes at once, each instance in its own guest
// (monvm-node1, monvm-node2); app, which needs mon on its node, starts
// beside it. Killing mon's service on app's node restarts it there (that
// node's counter 1, the other's 0); killing it again fails that instance
// only, after app halted there (a package whose dependency fails halts
// first): mon is not placed there again (no failover) and keeps running on
// the other node, and app moves there. `pkg reset mon` brings the failed
// instance back. Halting the other node halts its instance, not moved
// anywhere (app comes back), and `node run` brings it back. `pkg halt mon` halts app first, then every
// instance. `vmguard verify` accepts the log.
func TestMultiNodePackage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs vmguard up; run without -short")
	}
	url, l, cmd, upOut := startUpOn(t, t.TempDir(), multiNodeCluster)
	cli := mustCLI(t, url)
	// count returns how many events after seq match, and the sequence of
	// the last one.
	count := func(after uint64, match func(events.Event) bool) (int, uint64) {
		n, last := 0, uint64(0)
		for _, e := range readLog(t, l) {
			if e.Seq > after && match(e) {
				n, last = n+1, e.Seq
			}
		}
		return n, last
	}
	is := func(pkg, node string, typ string) func(events.Event) bool {
		return func(e events.Event) bool {
			if e.Subject != pkg || e.Type() != typ {
				return false
			}
			var b struct {
				Node string `json:"node"`
			}
			raw, _ := json.Marshal(e.Data)
			_ = json.Unmarshal(raw, &b)
			return b.Node == node
		}
	}
	running := func(after uint64, pkg, node string) bool {
		n, _ := count(after, is(pkg, node, events.TypePackageStarted))
		return n > 0
	}
	natstest.WaitFor(t, 90*time.Second, "mon on node1 and node2, app beside it", func() bool {
		return running(0, "mon", "node1") && running(0, "mon", "node2") && (running(0, "app", "node1") || running(0, "app", "node2"))
	})
	// app went to the first node where mon ran (configured_node takes the
	// first eligible one): the test fails mon there (on), and app goes to
	// the other node (off).
	on, off := "node1", "node2"
	if running(0, "app", "node2") {
		on, off = off, on
	}
	guests := map[string]bool{}
	count(0, func(e events.Event) bool {
		if d, ok := e.Data.(events.GuestStarted); ok && e.Subject == "mon" {
			guests[d.Guest+"@"+d.Node] = true
		}
		return false
	})
	if !guests["monvm-node1@node1"] || !guests["monvm-node2@node2"] || len(guests) != 2 {
		t.Errorf("mon's guests: %v, want monvm-node1 on node1 and monvm-node2 on node2", guests)
	}

	// kill kills the last process of mon's service on node on that started
	// after seq, once there is one, and returns its process.started's seq.
	kill := func(after uint64) uint64 {
		t.Helper()
		var pid int
		var seq uint64
		natstest.WaitFor(t, 60*time.Second, "a process of mon on "+on, func() bool {
			count(after, func(e events.Event) bool {
				if d, ok := e.Data.(events.ProcessStarted); ok && e.Subject == "mon" && d.Guest == "monvm-"+on {
					pid, seq = d.PID, e.Seq
				}
				return false
			})
			return pid > 0
		})
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill mon's agent service (pid %d): %v", pid, err)
		}
		return seq
	}
	first := kill(0)
	natstest.WaitFor(t, 60*time.Second, "mon's service restarted on "+on, func() bool {
		n, _ := count(first, is("mon", on, events.TypeServiceRestarting))
		return n == 1
	})
	var v failover.View
	if err := json.Unmarshal([]byte(cli("status", "-o", "json")), &v); err != nil {
		t.Fatal(err)
	}
	restarts := map[string]int{}
	for _, pv := range v.Packages {
		if pv.Name != "mon" {
			continue
		}
		if pv.Type != "multi_node" || len(pv.Instances) != 2 {
			t.Errorf("status of mon: %+v, want two instances", pv)
		}
		for _, in := range pv.Instances {
			restarts[in.Node] = in.Services[0].Restarts
		}
	}
	if restarts[on] != 1 || restarts[off] != 0 {
		t.Errorf("restarts per node %v, want %s 1, %s 0", restarts, on, off)
	}

	// The second exit uses on's restarts up: its instance fails, only.
	second := kill(first)
	var failed uint64
	natstest.WaitFor(t, 60*time.Second, "mon failed on "+on+", app running on "+off, func() bool {
		_, failed = count(second, is("mon", on, events.TypePackageFailed))
		return failed > 0 && running(failed, "app", off)
	})
	if n, _ := count(failed, is("mon", on, events.TypePackagePlaced)); n != 0 {
		t.Errorf("mon placed on %s again after it failed there (%d)", on, n)
	}
	if n, _ := count(0, is("mon", off, events.TypePackageHalting)); n != 0 {
		t.Errorf("mon's instance on %s halted when %s's failed", off, on)
	}
	if n, _ := count(second, func(e events.Event) bool {
		d, ok := e.Data.(events.PackageHalting)
		return ok && e.Subject == "app" && d.Node == on && strings.Contains(d.Reason, "dependency mon")
	}); n != 1 {
		t.Errorf("app's halt on %s naming its dependency on mon: %d, want 1", on, n)
	}

	// app, which depends on mon, halted on that node before mon's
	// instance there stopped its guest (successors halt first).
	_, appHalted := count(second, is("app", on, events.TypePackageHalted))
	_, monStopped := count(second, is("mon", on, events.TypeGuestStopped))
	if appHalted == 0 || monStopped < appHalted {
		t.Errorf("app halted on %s at #%d, mon's guest stopped there at #%d: want app first", on, appHalted, monStopped)
	}

	// pkg reset: on's instance comes back.
	reset := failed
	cli("pkg", "reset", "mon")
	natstest.WaitFor(t, 60*time.Second, "mon on "+on+" again", func() bool { return running(reset, "mon", on) })

	// A halted node halts its instance; nothing moves; node run brings it back.
	_, mark := count(0, func(events.Event) bool { return true })
	cli("node", "halt", off, "--reason", "maintenance")
	natstest.WaitFor(t, 60*time.Second, "mon halted on "+off+", app on "+on, func() bool {
		n, _ := count(mark, is("mon", off, events.TypePackageHalted))
		return n == 1 && running(mark, "app", on)
	})
	if n, _ := count(mark, func(e events.Event) bool { _, ok := e.Data.(events.PackagePlaced); return ok && e.Subject == "mon" }); n != 0 {
		t.Errorf("mon placed %d times after %s halted, want none (its instance on %s runs on)", n, off, on)
	}
	_, mark = count(0, func(events.Event) bool { return true })
	cli("node", "run", off)
	natstest.WaitFor(t, 60*time.Second, "mon on "+off+" again", func() bool { return running(mark, "mon", off) })

	// pkg halt mon: app (its successor) halts first, then every instance.
	out := cli("pkg", "halt", "mon", "--reason", "upgrade")
	if i, j := strings.Index(out, "package.halting app"), strings.Index(out, "package.halting mon"); i < 0 || j < i {
		t.Errorf("pkg halt mon: want app halting, then mon\n%s", out)
	}
	natstest.WaitFor(t, 60*time.Second, "mon halted on both nodes", func() bool {
		a, _ := count(mark, is("mon", "node1", events.TypePackageHalted))
		b, _ := count(mark, is("mon", "node2", events.TypePackageHalted))
		return a == 1 && b == 1
	})
	if out := cli("status", "-v"); !strings.Contains(out, "INSTANCE") || !strings.Contains(out, "monvm-"+off) {
		t.Errorf("status -v shows no instances of mon:\n%s", out)
	}
	if out := cli("explain", "mon"); !strings.Contains(out, "instance on node1:") || !strings.Contains(out, "instance on node2:") {
		t.Errorf("explain mon: want each instance's chain\n%s", out)
	}
	if code, out, errs := runCLI("--nats", url, "verify"); code != 0 {
		t.Errorf("verify: exit %d\n%s%s", code, out, errs)
	}
	interrupt(t, cmd, upOut)
}

// TestInitMultiNodeGuests: `vmguard init` gives a multi-node package's
// guest an identity per node (monvm-node1, monvm-node2), each allowed on
// its node only, and none under the bare guest name.
func TestInitMultiNodeGuests(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(cfg, []byte(multiNodeCluster), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "secure")
	if code, stdout, stderr := runCLI("init", "-f", cfg, "--out", out, "--install-dir", out); code != 0 {
		t.Fatalf("init: exit %d: %s%s", code, stdout, stderr)
	}
	for id, want := range map[string]bool{"guest-monvm-node1": true, "guest-monvm-node2": true, "guest-monvm": false, "guest-appvm": true} {
		if _, err := os.Stat(filepath.Join(out, id)); (err == nil) != want {
			t.Errorf("identity %s: present %v, want %v", id, err == nil, want)
		}
	}
}

// TestMultiNodeNodeLoss: with each daemon an OS process, a multi-node
// package runs on both nodes; kill -9 of node1's host manager loses node1
// and its instance only: nothing is placed elsewhere, node2's instance runs
// on untouched; when node1's host manager comes back, node1 joins and gets
// an instance again. `vmguard verify` accepts the log.
func TestMultiNodeNodeLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with OS processes; run without -short")
	}
	const cfg = `cluster: mnloss
node_timeout: 3s
guest_timeout: 3s
nodes: [node1, node2]
packages:
  - name: mon
    package_type: multi_node
    nodes: [node1, node2]
    guest: {name: monvm, driver: process, start_timeout: 20s}
    services:
      - name: agent
        cmd: [sh, -c, "exec sleep 1000"]
        halt_timeout: 1s
`
	dir := t.TempDir()
	c := startProcCluster(t, dir, cfg)
	for _, n := range []string{"node1", "node2"} {
		c.start(n, "host", "--node", n, "--state", filepath.Join(dir, n), "--agent-bin", vmguardBin)
	}
	l := dialLog(t, c.url)
	started := func(node string, after uint64) func(events.Event) bool {
		return func(e events.Event) bool {
			d, ok := e.Data.(events.PackageStarted)
			return ok && e.Subject == "mon" && d.Node == node && e.Seq > after
		}
	}
	waitEvent(t, l, 60*time.Second, "mon on node1", started("node1", 0))
	on2 := waitEvent(t, l, 60*time.Second, "mon on node2", started("node2", 0))
	epoch2 := on2.Data.(events.PackageStarted).Epoch

	c.kill9("node1")
	lost := waitEvent(t, l, 30*time.Second, "node1 lost", func(e events.Event) bool {
		return e.Type() == events.TypeNodeLost && e.Subject == "node1"
	})
	c.start("node1", "host", "--node", "node1", "--state", filepath.Join(dir, "node1"), "--agent-bin", vmguardBin)
	back := waitEvent(t, l, 60*time.Second, "mon on node1 again", started("node1", lost.Seq))
	evs := readLog(t, l)
	if n := count(evs, func(e events.Event) bool {
		d, ok := e.Data.(events.PackagePlaced)
		return ok && e.Subject == "mon" && e.Seq > lost.Seq && d.Node != "node1"
	}); n != 0 {
		t.Errorf("mon placed %d times elsewhere after node1 was lost, want none (no failover)", n)
	}
	if n := count(evs, func(e events.Event) bool {
		switch d := e.Data.(type) {
		case events.PackageHalting:
			return e.Subject == "mon" && d.Epoch == epoch2
		case events.PackageHalted:
			return e.Subject == "mon" && d.Epoch == epoch2
		}
		return false
	}); n != 0 {
		t.Errorf("node2's instance (epoch %d) halted %d times, want it untouched", epoch2, n)
	}
	if e := back.Data.(events.PackageStarted).Epoch; e <= epoch2 {
		t.Errorf("node1's new instance has epoch %d, want one after %d", e, epoch2)
	}
	if out, err := exec.Command(vmguardBin, "--nats", c.url, "verify").CombinedOutput(); err != nil {
		t.Errorf("verify: %v\n%s", err, out)
	}
}
