package main

import (
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

const dependencyCluster = `cluster: deps
node_timeout: 5s
guest_timeout: 5s
nodes: [node1, node2]
packages:
  - name: db
    nodes: [node1, node2]
    successor_halt_timeout: 1m
    guest: {name: dbvm, driver: process}
    services:
      - name: svc
        cmd: [sh, -c, "exec sleep 1000"]
  - name: app
    nodes: [node1, node2]
    dependencies:
      - name: db
        condition: up
        location: same_node
    guest: {name: appvm, driver: process}
    services:
      - name: svc
        cmd: [sh, -c, "exec sleep 1000"]
  - name: lo
    nodes: [node2, node1]
    priority: 20
    dependencies:
      - {name: hi, condition: down, location: same_node}
    guest: {name: lovm, driver: process}
    services:
      - name: svc
        cmd: [sh, -c, "exec sleep 1000"]
  - name: hi
    nodes: [node2]
    priority: 10
    auto_run: false
    dependencies:
      - {name: lo, condition: down, location: same_node}
    guest: {name: hivm, driver: process}
    services:
      - name: svc
        cmd: [sh, -c, "exec sleep 1000"]
`

// TestUpDependencies: dependencies and priorities end to end, with `vmguard
// up`: app starts only once db runs, beside it; enabling hi (priority 10)
// displaces lo (priority 20), which it excludes on node2, and lo moves to
// node1, the halt naming hi; halting node1 halts app (db's successor)
// before db is placed elsewhere, then app follows db to node2; `pkg halt
// db` halts app first, and app comes back by itself when db runs again;
// `vmguard verify` accepts the log.
func TestUpDependencies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs vmguard up; run without -short")
	}
	url, l, cmd, upOut := startUpOn(t, t.TempDir(), dependencyCluster)
	cli := mustCLI(t, url)
	// find returns the sequence of the first event of the log that match
	// accepts, 0 if none.
	find := func(match func(events.Event) bool) uint64 {
		for _, e := range readLog(t, l) {
			if match(e) {
				return e.Seq
			}
		}
		return 0
	}
	started := func(pkg, node string) func(events.Event) bool {
		return func(e events.Event) bool {
			d, ok := e.Data.(events.PackageStarted)
			return ok && e.Subject == pkg && d.Node == node
		}
	}
	placed := func(pkg, node string) func(events.Event) bool {
		return func(e events.Event) bool {
			d, ok := e.Data.(events.PackagePlaced)
			return ok && e.Subject == pkg && d.Node == node
		}
	}
	natstest.WaitFor(t, 90*time.Second, "db and app running on node1, lo on node2", func() bool {
		return find(started("db", "node1")) > 0 && find(started("app", "node1")) > 0 && find(started("lo", "node2")) > 0
	})
	if dbUp, appPlaced := find(started("db", "node1")), find(placed("app", "node1")); appPlaced < dbUp {
		t.Errorf("app placed at #%d, before db started at #%d", appPlaced, dbUp)
	}

	// Priority: hi needs node2, which lo holds; hi outranks lo.
	if code, _, errs := runCLI("--nats", url, "pkg", "run", "hi"); code != 1 || !strings.Contains(errs, "dependency lo down same_node") {
		t.Errorf("pkg run hi while lo holds node2: exit %d, %q; want it refused naming the exclusion", code, errs)
	}
	cli("pkg", "enable", "hi", "--reason", "go")
	natstest.WaitFor(t, 90*time.Second, "hi running on node2 and lo moved to node1", func() bool {
		return find(started("hi", "node2")) > 0 && find(started("lo", "node1")) > 0
	})
	if find(func(e events.Event) bool {
		d, ok := e.Data.(events.PackageHalting)
		return ok && e.Subject == "lo" && d.Node == "node2" && strings.Contains(d.Reason, "displaced: by hi (priority 10 over 20)")
	}) == 0 {
		t.Error("no package.halting of lo naming hi")
	}

	// Successors first: node1 halts; app halts before db moves.
	cli("node", "halt", "node1", "--reason", "maintenance")
	natstest.WaitFor(t, 90*time.Second, "db and app running on node2", func() bool {
		return find(started("db", "node2")) > 0 && find(started("app", "node2")) > 0
	})
	appHalted := find(func(e events.Event) bool {
		d, ok := e.Data.(events.PackageHalted)
		return ok && e.Subject == "app" && d.Node == "node1"
	})
	appHalting := find(func(e events.Event) bool {
		d, ok := e.Data.(events.PackageHalting)
		return ok && e.Subject == "app" && strings.Contains(d.Reason, "predecessor: db")
	})
	if dbMoved := find(placed("db", "node2")); appHalting == 0 || appHalted == 0 || dbMoved < appHalted {
		t.Errorf("app halting #%d (reason predecessor), halted #%d, db placed on node2 #%d: want app halted before db moved", appHalting, appHalted, dbMoved)
	}
	// pkg halt db: app (its successor) halts first, then db; app comes
	// back by itself once db runs again.
	code, out, errs := runCLI("--nats", url, "pkg", "halt", "db", "--reason", "patch")
	if code != 0 || !strings.Contains(out, "package.halting app") || !strings.Contains(out, "package.halting db") ||
		strings.Index(out, "package.halting app") > strings.Index(out, "package.halting db") {
		t.Fatalf("pkg halt db: exit %d, want app halting, then db\n%s%s", code, out, errs)
	}
	appDown := find(func(e events.Event) bool {
		d, ok := e.Data.(events.PackageHalted)
		return ok && e.Subject == "app" && d.Node == "node2"
	})
	dbHalting := find(func(e events.Event) bool {
		d, ok := e.Data.(events.PackageHalting)
		return ok && e.Subject == "db" && d.By != ""
	})
	if appDown == 0 || dbHalting < appDown {
		t.Errorf("app halted on node2 at #%d, db's halt asked at #%d: want app down first", appDown, dbHalting)
	}
	cli("pkg", "run", "db")
	cli("pkg", "enable", "db")
	natstest.WaitFor(t, 90*time.Second, "db and app running again on node2", func() bool {
		n := 0
		for _, e := range readLog(t, l) {
			if d, ok := e.Data.(events.PackageStarted); ok && d.Node == "node2" && (e.Subject == "db" || e.Subject == "app") && e.Seq > dbHalting {
				n++
			}
		}
		return n == 2
	})
	if code, out, errs := runCLI("--nats", url, "explain", "lo"); code != 0 || !strings.Contains(out, "displaced: by hi") {
		t.Errorf("explain lo: exit %d, want the displacement in its chain\n%s%s", code, out, errs)
	}
	if code, out, errs := runCLI("--nats", url, "verify"); code != 0 {
		t.Errorf("verify: exit %d\n%s%s", code, out, errs)
	}
	interrupt(t, cmd, upOut)
}
