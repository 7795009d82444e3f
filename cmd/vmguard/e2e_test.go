package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/failover"
	"github.com/vmguard/vmguard/internal/invariant"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// e2eConfig has a package whose service always exits (web) and one whose
// service runs until stopped (db), both with node1 as primary.
const e2eConfig = `cluster: e2e
node_timeout: 3s
guest_timeout: 3s
nodes: [node1, node2]
packages:
  - name: web
    nodes: [node1, node2]
    guest: {name: webvm, driver: process, start_timeout: 20s}
    services:
      - name: crash
        cmd: ["sh", "-c", "sleep 0.2; exit 1"]
        restart: 2
        halt_timeout: 1s
  - name: db
    nodes: [node1, node2]
    guest: {name: dbvm, driver: process, start_timeout: 20s}
    services:
      - name: store
        cmd: ["sh", "-c", "while :; do sleep 1; done"]
        restart: 1
        halt_timeout: 1s
`

// cluster runs vmguard daemons as separate OS processes on one server.
type cluster struct {
	t     *testing.T
	url   string
	dir   string
	procs map[string]*exec.Cmd
	logs  map[string]*syncBuffer
	// env, if it has the daemon's name, is its environment (its identity).
	env map[string][]string
}

func (c *cluster) start(name string, args ...string) {
	c.t.Helper()
	cmd := exec.Command(vmguardBin, append([]string{"--nats", c.url}, args...)...)
	if env, ok := c.env[name]; ok {
		cmd.Env = env
	}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Guests started by a host manager outlive it (as a VM outlives a
	// crashed host manager); do not let them hold its output open.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.procs[name], c.logs[name] = cmd, out
}

// kill9 kills one daemon (only it, not the guests it started) with SIGKILL.
func (c *cluster) kill9(name string) {
	c.t.Helper()
	cmd := c.procs[name]
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatal(err)
	}
	_ = cmd.Wait()
	delete(c.procs, name)
}

func (c *cluster) stopAll() {
	defer killStrays(c.dir)
	for name, cmd := range c.procs {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if c.t.Failed() {
			c.t.Logf("--- output of %s:\n%s", name, c.logs[name].String())
		}
	}
}

// cli runs one vmguard command and returns its output.
func (c *cluster) cli(args ...string) string {
	c.t.Helper()
	out, err := exec.Command(vmguardBin, append([]string{"--nats", c.url}, args...)...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("vmguard %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// readLog returns every event in the log.
func readLog(t *testing.T, l *events.Log) []events.Event {
	t.Helper()
	var evs []events.Event
	if _, err := l.Replay(context.Background(), events.ReadOptions{}, func(e events.Event) error {
		evs = append(evs, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return evs
}

// waitEvent polls the log until match holds for some event and returns it.
func waitEvent(t *testing.T, l *events.Log, d time.Duration, what string, match func(events.Event) bool) events.Event {
	t.Helper()
	var found events.Event
	natstest.WaitFor(t, d, what, func() bool {
		for _, e := range readLog(t, l) {
			if match(e) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

func count(evs []events.Event, match func(events.Event) bool) int {
	n := 0
	for _, e := range evs {
		if match(e) {
			n++
		}
	}
	return n
}

// startProcCluster starts a server (interval mode) on a free port with its
// store in dir, records config with vmguard apply and starts a failover
// controller: each daemon an OS process, stopped when the test ends.
func startProcCluster(t *testing.T, dir, config string) *cluster {
	t.Helper()
	port := freePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	startServer(t, filepath.Join(dir, "store"), port, "--sync-interval")
	c := &cluster{t: t, url: url, dir: dir, procs: map[string]*exec.Cmd{}, logs: map[string]*syncBuffer{}}
	t.Cleanup(c.stopAll)
	cfg := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	c.cli("apply", "-f", cfg)
	c.start("failover", "failover")
	return c
}

// TestEndToEnd runs `vmguard server`, `vmguard failover` and `vmguard host`
// for node1 and node2 as separate processes with process-driver guests, and
// walks through restarts, a failover, the loss of a node, a move and a halt;
// then it checks the invariants over the whole log.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with OS processes; run without -short")
	}
	dir := t.TempDir()
	c := startProcCluster(t, dir, e2eConfig)
	url := c.url
	for _, n := range []string{"node1", "node2"} {
		c.start(n, "host", "--node", n, "--state", filepath.Join(dir, n), "--agent-bin", vmguardBin)
	}
	l := dialLog(t, url)
	isType := func(typ, subject string) func(events.Event) bool {
		return func(e events.Event) bool { return e.Type() == typ && e.Subject == subject }
	}

	// 1. web's service always exits: two restarts on node1, then the package
	// fails there and runs on node2.
	failed := waitEvent(t, l, 60*time.Second, "web failed on node1", func(e events.Event) bool {
		d, ok := e.Data.(events.PackageFailed)
		return ok && e.Subject == "web" && d.Node == "node1"
	})
	placed2 := waitEvent(t, l, 20*time.Second, "web placed on node2", func(e events.Event) bool {
		d, ok := e.Data.(events.PackagePlaced)
		return ok && e.Subject == "web" && d.Node == "node2"
	})
	if placed2.CauseID != failed.ID {
		t.Errorf("web's failover names cause %s, want the package.failed %s", placed2.CauseID, failed.ID)
	}
	epoch2 := placed2.Data.(events.PackagePlaced).Epoch
	waitEvent(t, l, 30*time.Second, "web's service started on node2", func(e events.Event) bool {
		d, ok := e.Data.(events.ProcessStarted)
		return ok && e.Subject == "web" && d.Epoch == epoch2
	})
	evs := readLog(t, l)
	if n := count(evs, func(e events.Event) bool {
		d, ok := e.Data.(events.ServiceRestarting)
		return ok && e.Subject == "web" && d.Node == "node1"
	}); n != 2 {
		t.Errorf("web on node1: %d restarts, want 2", n)
	}
	if n := count(evs, func(e events.Event) bool {
		d, ok := e.Data.(events.ServiceFailed)
		return ok && e.Subject == "web" && d.Node == "node1"
	}); n != 1 {
		t.Errorf("web on node1: %d service.failed, want 1", n)
	}

	// 2. db runs on node1; kill -9 node1's host manager: after the node
	// timeout node1 is lost and db runs on node2.
	dbStarted := waitEvent(t, l, 30*time.Second, "db running on node1", isType(events.TypePackageStarted, "db"))
	if d := dbStarted.Data.(events.PackageStarted); d.Node != "node1" {
		t.Fatalf("db started on %s, want node1", d.Node)
	}
	killed := time.Now()
	c.kill9("node1")
	lost := waitEvent(t, l, 20*time.Second, "node1 lost", isType(events.TypeNodeLost, "node1"))
	// Not before the lease expired: node_timeout (3s) after the last
	// renewal the controller saw (the host's own stamp, which comes before
	// the server stored it and the key's TTL started).
	if seen := lost.Data.(events.NodeLost).LastSeen; seen.IsZero() || lost.Time.Before(seen.Add(3*time.Second)) {
		t.Errorf("node.lost at %v, last renewal seen %v: earlier than the lease could expire", lost.Time, seen)
	}
	dbOn2 := waitEvent(t, l, 30*time.Second, "db running on node2", func(e events.Event) bool {
		d, ok := e.Data.(events.PackageStarted)
		return ok && e.Subject == "db" && d.Node == "node2"
	})
	t.Logf("node1 killed -> node.lost after %v -> db running on node2 after %v", lost.Time.Sub(killed), dbOn2.Time.Sub(killed))

	// 3. node1 comes back; move db back to it by hand.
	c.start("node1", "host", "--node", "node1", "--state", filepath.Join(dir, "node1"), "--agent-bin", vmguardBin)
	waitEvent(t, l, 20*time.Second, "node1 rejoined", func(e events.Event) bool {
		return e.Type() == events.TypeNodeJoined && e.Subject == "node1" && e.Seq > lost.Seq
	})
	c.cli("pkg", "move", "db", "-n", "node1", "--reason", "back to primary")
	waitEvent(t, l, 30*time.Second, "db halted on node2", func(e events.Event) bool {
		d, ok := e.Data.(events.PackageHalted)
		return ok && e.Subject == "db" && d.Node == "node2"
	})
	back := waitEvent(t, l, 30*time.Second, "db running on node1 again", func(e events.Event) bool {
		d, ok := e.Data.(events.PackageStarted)
		return ok && e.Subject == "db" && d.Node == "node1" && e.Seq > dbOn2.Seq
	})

	// 4. Halt it: it stops and auto_run is off.
	c.cli("pkg", "halt", "db", "--reason", "maintenance")
	waitEvent(t, l, 30*time.Second, "db halted", func(e events.Event) bool {
		d, ok := e.Data.(events.PackageHalted)
		return ok && e.Subject == "db" && d.Node == "node1" && e.Seq > back.Seq
	})
	var v failover.View
	if out := c.cli("status", "-o", "json"); json.Unmarshal([]byte(out), &v) != nil {
		t.Errorf("status -o json does not parse:\n%s", out)
	}
	var db *failover.PackageView
	for i := range v.Packages {
		if v.Packages[i].Name == "db" {
			db = &v.Packages[i]
		}
	}
	switch {
	case db == nil:
		t.Errorf("status does not list db: %+v", v.Packages)
	case db.AutoRun != "disabled" || db.Node != "" || db.Status != "down":
		t.Errorf("db after pkg halt: auto_run %q, node %q, status %q; want auto_run disabled, no node, down", db.AutoRun, db.Node, db.Status)
	}

	// The whole log keeps the promises.
	evs = readLog(t, l)
	for _, p := range invariant.Check(evs) {
		t.Errorf("invariant: %s", p)
	}
	if t.Failed() {
		for _, e := range evs {
			t.Log(formatEvent(e))
		}
	}
}
