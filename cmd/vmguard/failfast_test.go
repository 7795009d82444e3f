package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// failFastCluster: web's svc fails at its first run (restart none,
// fail_fast), later runs keep going; db shares node1 with it.
const failFastCluster = `cluster: ff
node_timeout: 5s
guest_timeout: 5s
nodes: [node1, node2]
packages:
  - name: web
    nodes: [node1, node2]
    guest:
      name: webvm
      driver: process
    services:
      - name: svc
        cmd: [sh, -c, "if [ -e %[1]s ]; then exec sleep 1000; fi; touch %[1]s; exit 3"]
        restart: none
        fail_fast: true
  - name: db
    nodes: [node1, node2]
    guest:
      name: dbvm
      driver: process
    services:
      - name: store
        cmd: [sh, -c, "exec sleep 1000"]
`

// TestUpFailFast: a fail_fast service that fails after its restarts fences
// its node, as Serviceguard's service_fail_fast_enabled halts it: node1's
// other guest is stopped too, node.fenced names the service, both packages
// run on node2, node1 joins again afterwards, and `vmguard verify` accepts
// the log.
func TestUpFailFast(t *testing.T) {
	if testing.Short() {
		t.Skip("runs vmguard up; run without -short")
	}
	dir := t.TempDir()
	url, l, cmd, upOut := startUpOn(t, dir, fmt.Sprintf(failFastCluster, filepath.Join(dir, "ran-once")))

	runningOn := func(evs []events.Event, pkg, node string) bool {
		var last events.Event
		for _, e := range evs {
			if e.Subject == pkg {
				switch e.Data.(type) {
				case events.PackageStarted, events.PackageHalted, events.PackageFailed:
					last = e
				}
			}
		}
		d, ok := last.Data.(events.PackageStarted)
		return ok && d.Node == node
	}
	natstest.WaitFor(t, 90*time.Second, "web and db running on node2 after node1's fail-fast", func() bool {
		evs := readLog(t, l)
		return runningOn(evs, "web", "node2") && runningOn(evs, "db", "node2")
	})
	var fenced, dbStopped bool
	for _, e := range readLog(t, l) {
		switch d := e.Data.(type) {
		case events.NodeFenced:
			if e.Subject == "node1" && d.Hold && strings.Contains(d.Reason, "fail_fast: service svc of package web failed") {
				fenced = true
			} else {
				t.Errorf("node.fenced %s: %+v", e.Subject, d)
			}
		case events.NodeJoined:
			if fenced {
				t.Errorf("node %s joined by itself after a fail-fast fence: %+v", e.Subject, d)
			}
		case events.PackageHalted:
			dbStopped = dbStopped || fenced && e.Subject == "db" && d.Node == "node1"
		}
	}
	if !fenced || !dbStopped {
		t.Errorf("node1 fenced (held) for web's svc: %v; db halted on node1 after it: %v", fenced, dbStopped)
	}
	// The fence holds node1 out until the operator runs it (cmrunnode).
	if code, out, errs := runCLI("--nats", url, "node", "run", "node1", "--reason", "checked"); code != 0 {
		t.Fatalf("node run node1: exit %d\n%s%s", code, out, errs)
	}
	natstest.WaitFor(t, 30*time.Second, "node1 joined by the operator", func() bool {
		for _, e := range readLog(t, l) {
			if d, ok := e.Data.(events.NodeJoined); ok && e.Subject == "node1" && d.Reason == "checked" {
				return true
			}
		}
		return false
	})
	code, out, errs := runCLI("--nats", url, "status")
	if code != 0 || !regexp.MustCompile(`node1\s+up\s+running`).MatchString(out) {
		t.Errorf("status after node run: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := runCLI("--nats", url, "verify"); code != 0 {
		t.Errorf("verify: exit %d\n%s%s", code, out, errs)
	}
	interrupt(t, cmd, upOut)
}

// startUpOn writes cluster (YAML) into dir, runs `vmguard up` on it with
// its store in dir, and returns its NATS URL, its log, the process and its
// output. If the test fails, the whole log is logged at its end.
func startUpOn(t *testing.T, dir, cluster string) (string, *events.Log, *exec.Cmd, *syncBuffer) {
	t.Helper()
	cfg := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(cfg, []byte(cluster), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	cmd, out, _ := startUpWeb(t, filepath.Join(dir, "store"), port, "-f", cfg)
	l := upLog(t, url)
	t.Cleanup(func() {
		if t.Failed() {
			for _, e := range readLog(t, l) {
				t.Log(formatEvent(e))
			}
		}
	})
	return url, l, cmd, out
}

// mustCLI returns a runner of the CLI pointed at url that fails the test
// on a command that does not exit 0, and returns its output.
func mustCLI(t *testing.T, url string) func(args ...string) string {
	return func(args ...string) string {
		t.Helper()
		code, out, errs := runCLI(append([]string{"--nats", url}, args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, errs)
		}
		return out
	}
}

// upLog opens the log of a `vmguard up` that is starting at url, waiting
// until its stream exists.
func upLog(t *testing.T, url string) *events.Log {
	t.Helper()
	var l *events.Log
	natstest.WaitFor(t, 60*time.Second, "vmguard up's log", func() bool {
		nc, err := nats.Connect(url, nats.NoReconnect())
		if err != nil {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if l, err = events.Open(ctx, nc, events.WithoutCreate()); err != nil {
			nc.Close()
			return false
		}
		t.Cleanup(nc.Close)
		return true
	})
	return l
}
