package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

const migrateCluster = `cluster: mig
node_timeout: 5s
guest_timeout: 5s
nodes: [node1, node2]
packages:
  - name: web
    nodes: [node1, node2]
    guest:
      name: webvm
      driver: process
      migrate: true
    services:
      - name: svc
        cmd: [sh, -c, "exec sleep 1000"]
        restart: 1
`

// TestUpMigrate is a live migration through the operator's command, with
// vmguard up as its own OS process (host managers, controller, the
// process-driver guest and its service all real processes): `pkg move`
// carries the running guest to node2 without stopping its service (same
// pid, no exit, no halt), `status` shows web running on node2, and `vmguard
// verify` accepts the log.
func TestUpMigrate(t *testing.T) {
	if testing.Short() {
		t.Skip("runs vmguard up; run without -short")
	}
	url, l, cmd, upOut := startUpOn(t, t.TempDir(), migrateCluster)
	started := func(epoch uint64, node string) bool {
		for _, e := range readLog(t, l) {
			if d, ok := e.Data.(events.PackageStarted); ok && d.Epoch == epoch && d.Node == node {
				return true
			}
		}
		return false
	}
	natstest.WaitFor(t, 90*time.Second, "web running on node1", func() bool { return started(1, "node1") })
	var svc int
	for _, e := range readLog(t, l) {
		if d, ok := e.Data.(events.ProcessStarted); ok {
			svc = d.PID
		}
	}

	if code, out, errs := runCLI("--nats", url, "pkg", "move", "web", "-n", "node2", "--reason", "patching node1"); code != 0 {
		t.Fatalf("pkg move: exit %d: %s%s", code, out, errs)
	}
	natstest.WaitFor(t, 60*time.Second, "web running on node2", func() bool { return started(2, "node2") })
	evs := readLog(t, l)
	short := map[string]int{}
	var placed, done time.Time
	for _, e := range evs {
		short[events.ShortType(e.Type())]++
		switch d := e.Data.(type) {
		case events.PackagePlaced:
			if d.Epoch == 2 {
				placed = e.Time
			}
		case events.PackageStarted:
			if d.Epoch == 2 {
				done = e.Time
			}
		}
	}
	t.Logf("pkg move to package.started on node2: %s (the service never stopped)", done.Sub(placed).Round(time.Millisecond))
	if short["guest.migrating"] != 1 || short["guest.migrated"] != 1 {
		t.Errorf("migration events: %v", short)
	}
	for _, k := range []string{"package.halted", "process.exited", "guest.stopped", "guest.migration_failed"} {
		if short[k] != 0 {
			t.Errorf("%d %s in a live migration", short[k], k)
		}
	}
	if svc <= 0 || syscall.Kill(svc, 0) != nil {
		t.Errorf("service process %d does not run after the migration", svc)
	}
	code, out, errs := runCLI("--nats", url, "status")
	if code != 0 || !strings.Contains(out, "node2") {
		t.Errorf("status: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := runCLI("--nats", url, "verify"); code != 0 {
		t.Errorf("verify: exit %d\n%s%s", code, out, errs)
	}
	interrupt(t, cmd, upOut)
}
