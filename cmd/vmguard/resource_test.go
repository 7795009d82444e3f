package main

import (
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

const resourceCluster = `cluster: res
node_timeout: 5s
guest_timeout: 5s
nodes: [node1, node2]
packages:
  - name: web
    nodes: [node1, node2]
    resources:
      - name: disk
        up: ">= 10"
    guest:
      name: webvm
      driver: process
    services:
      - name: svc
        cmd: [sh, -c, "exec sleep 1000"]
`

// TestUpResource: generic resources end to end, as Serviceguard's
// cmsetresource: web waits until its resource is up on a node, starts
// there, and fails over when the resource falls below its criterion on
// its node; `vmguard verify` accepts the log.
func TestUpResource(t *testing.T) {
	if testing.Short() {
		t.Skip("runs vmguard up; run without -short")
	}
	url, l, cmd, upOut := startUpOn(t, t.TempDir(), resourceCluster)
	set := func(node, value string) {
		t.Helper()
		if code, out, errs := runCLI("--nats", url, "resource", "set", node, "disk", value, "--by", "monitor"); code != 0 {
			t.Fatalf("resource set %s disk %s: exit %d\n%s%s", node, value, code, out, errs)
		}
	}
	startedOn := func(node string, epoch uint64) func() bool {
		return func() bool {
			for _, e := range readLog(t, l) {
				if d, ok := e.Data.(events.PackageStarted); ok && d.Node == node && d.Epoch == epoch {
					return true
				}
			}
			return false
		}
	}
	if code, _, errs := runCLI("--nats", url, "resource", "set", "node1", "disk", "lots"); code != 1 || !strings.Contains(errs, `"lots": want up, down or a whole number`) {
		t.Errorf("resource set with a bad value: exit %d, %q", code, errs)
	}
	set("node1", "42")
	natstest.WaitFor(t, 60*time.Second, "web running on node1 once its disk is up there", startedOn("node1", 1))
	set("node2", "up") // up, but no value: the criterion >= 10 is not met
	set("node1", "3")
	natstest.WaitFor(t, 60*time.Second, "web failed on node1 once its disk fell below 10", func() bool {
		for _, e := range readLog(t, l) {
			if d, ok := e.Data.(events.PackageFailed); ok && d.Node == "node1" && strings.Contains(d.Reason, "resource disk on node node1 is up (value 3), the package needs >= 10") {
				return true
			}
		}
		return false
	})
	set("node2", "10")
	natstest.WaitFor(t, 60*time.Second, "web running on node2 once its disk is up there", startedOn("node2", 2))
	if code, out, errs := runCLI("--nats", url, "verify"); code != 0 {
		t.Errorf("verify: exit %d\n%s%s", code, out, errs)
	}
	interrupt(t, cmd, upOut)
}
