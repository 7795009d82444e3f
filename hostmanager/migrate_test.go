package hostmanager

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/lease"
)

// migrateYAML is testYAML with live migration asked for.
func migrateYAML() string {
	return strings.Replace(testYAML("none", `
		cmd: [sh, -c, "exec sleep 1000"]
		restart: unlimited`), "      driver: process\n", "      driver: process\n      migrate: true\n", 1)
}

// moveLive appends what `vmguard pkg move web -n node2` appends for a
// running package whose guest can migrate.
func (e *testEnv) moveLive(pkg, from, to string, epoch uint64) {
	e.t.Helper()
	e.append(events.Event{Source: "/vmguard/cli/test", Subject: pkg, Data: events.PackagePlaced{Node: to, Epoch: epoch, Reason: "operator_move",
		PreviousNode: from, By: "test", Migrate: true}})
}

// started returns the package.started of epoch, if in the log.
func startedOf(evs []events.Event, pkg string, epoch uint64) (events.Event, bool) {
	for _, ev := range evs {
		if d, ok := ev.Data.(events.PackageStarted); ok && ev.Subject == pkg && d.Epoch == epoch {
			return ev, true
		}
	}
	return events.Event{}, false
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil && isAliveProc(pid) }

// TestMigrateProcessDriver is a live migration end to end with real
// processes: web runs on node1 in a process-driver guest (its agent a
// child process); `pkg move` with migrate hands the guest to node2. The
// agent and the service's process keep running (same pids, no exit
// reported, no halt of epoch 1); node2 adopts them, names its node to the
// agent, which follows node2's lease; node1's host manager stopping (its
// lease lapsing) then does not stop them. The log keeps every promise,
// migration included.
func TestMigrateProcessDriver(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.applyConfig(migrateYAML())
	h1 := e.startRunner("node1", nil, nil)
	e.startRunner("node2", nil, nil)
	e.place("web", "node1")
	e.waitFor("web started on node1", 60*time.Second, func(evs []events.Event) bool { _, ok := startedOf(evs, "web", 1); return ok })
	agent := e.agentPID("node1", "webvm")
	ps, _ := last(e.events(), "web", "process.started")
	svc := ps.Data.(events.ProcessStarted).PID

	e.moveLive("web", "node1", "node2", 2)
	e.waitFor("web started on node2", 60*time.Second, func(evs []events.Event) bool { _, ok := startedOf(evs, "web", 2); return ok })

	evs := e.pkgEvents("web")
	for _, short := range []string{"guest.migrating", "guest.migrated"} {
		if !has(evs, "web", short) {
			t.Errorf("no %s", short)
		}
	}
	for _, short := range []string{"package.halted", "process.exited", "guest.stopped", "guest.migration_failed"} {
		if has(evs, "web", short) {
			t.Errorf("%s in a live migration", short)
		}
	}
	if n := e.count("web", "process.started"); n != 1 {
		t.Errorf("process.started: %d, want 1 (the process runs on)", n)
	}
	if got := e.agentPID("node2", "webvm"); got != agent || !alive(agent) {
		t.Errorf("agent on node2: pid %d (alive %v), want the migrated one %d", got, alive(agent), agent)
	}
	if !alive(svc) {
		t.Errorf("service process %d gone after the migration", svc)
	}
	if _, err := os.Stat(filepath.Join(e.stateDir("node1"), "guests", "webvm.pid")); err == nil {
		t.Errorf("node1 still has the guest's pid file")
	}
	c, err := guestagent.NewClient(e.nc, "webvm")
	if err != nil {
		t.Fatal(err)
	}
	e.waitFor("agent following node2", 10*time.Second, func([]events.Event) bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		p, err := c.Ping(ctx)
		return err == nil && p.Node == "node2" && p.Lease == guestagent.LeaseHeld
	})

	// node1's host manager goes away; its lease lapses. The agent follows
	// node2's, so its process outlives node1's fence time and then some.
	if err := h1.stop(t); err != nil {
		t.Fatalf("node1 runner: %v", err)
	}
	ttl := 3 * time.Second
	for start := time.Now(); time.Since(start) < ttl+lease.RenewEvery(ttl); time.Sleep(50 * time.Millisecond) {
		if !alive(svc) || !alive(agent) {
			t.Fatalf("after node1 went away: service %d alive %v, agent %d alive %v: fenced by the old node's lease", svc, alive(svc), agent, alive(agent))
		}
	}
	if has(e.pkgEvents("web"), "web", "process.exited") {
		t.Errorf("process.exited after node1 went away")
	}
	e.checkInvariants()
}

// TestMigrateFallsBack: a migration the driver cannot do (node1's process
// driver knows no directory for node2) is recorded as
// guest.migration_failed, and the package halts on node1 and starts on
// node2 the ordinary way.
func TestMigrateFallsBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.applyConfig(migrateYAML())
	e.startRunner("node1", func(c *Config) { c.StateDir = filepath.Join(e.dir, "node1-elsewhere") }, nil)
	e.startRunner("node2", nil, nil)
	e.place("web", "node1")
	e.waitFor("web started on node1", 60*time.Second, func(evs []events.Event) bool { _, ok := startedOf(evs, "web", 1); return ok })

	e.moveLive("web", "node1", "node2", 2)
	e.waitFor("web started on node2", 60*time.Second, func(evs []events.Event) bool { _, ok := startedOf(evs, "web", 2); return ok })
	evs := e.pkgEvents("web")
	f, ok := last(evs, "web", "guest.migration_failed")
	if !ok || !strings.Contains(f.Data.(events.GuestMigrationFailed).Reason, "knows no directory of node node2") {
		t.Errorf("guest.migration_failed: %+v %v", f, ok)
	}
	h, ok := last(evs, "web", "package.halted")
	if !ok || h.Data.(events.PackageHalted).Epoch != 1 || h.Seq < f.Seq {
		t.Errorf("package.halted of epoch 1 after the failed migration: %+v %v", h, ok)
	}
	if has(evs, "web", "guest.migrated") {
		t.Errorf("guest.migrated after a failed migration")
	}
	e.checkInvariants()
}
