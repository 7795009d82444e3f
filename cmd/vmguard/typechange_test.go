package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/failover"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// TestUpTypeChangeGetsIn: a changed package_type that gets past `vmguard
// apply` (recorded here without its check, as a race between two operators
// or a log written by hand would) is safe end to end, with `vmguard up`:
// mon runs as multi_node on node1 and node2; once the configuration makes
// it failover, the controller halts both instances (package_type_changed)
// and places mon as a failover package only after both are halted; it then
// runs on node1 in its failover guest (monvm). Made multi_node again, its
// failover placement is halted before any instance is placed; then one
// runs on each node. `vmguard verify` accepts the log.
func TestUpTypeChangeGetsIn(t *testing.T) {
	if testing.Short() {
		t.Skip("runs vmguard up; run without -short")
	}
	const multi = "cluster: tc\nnode_timeout: 5s\nguest_timeout: 5s\nnodes: [node1, node2]\npackages:\n  - name: mon\n%s" +
		"    nodes: [node1, node2]\n    guest: {name: monvm, driver: process}\n    services:\n      - name: agent\n        cmd: [sh, -c, \"exec sleep 1000\"]\n"
	url, l, _, _ := startUpOn(t, t.TempDir(), strings.Replace(multi, "%s", "    package_type: multi_node\n", 1))
	started := func(after uint64, node, guest string) bool {
		ok := false
		for _, e := range readLog(t, l) {
			if d, is := e.Data.(events.GuestStarted); is && e.Seq > after && e.Subject == "mon" && d.Node == node && d.Guest == guest {
				ok = true
			}
		}
		return ok
	}
	natstest.WaitFor(t, 90*time.Second, "mon's instances on node1 and node2", func() bool {
		return started(0, "node1", "monvm-node1") && started(0, "node2", "monvm-node2")
	})

	ctx := context.Background()
	cl, err := config.Parse("failover.yaml", []byte(strings.Replace(multi, "%s", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := readInForce(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	res, err := appendConfig(ctx, l, cl, "failover.yaml", "test", "past apply's check", cur)
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 90*time.Second, "mon running as failover on node1", func() bool { return started(res.seq, "node1", "monvm") })

	// After the change: each instance halted for it, and the one failover
	// placement after both were released.
	halted := map[string]uint64{}
	var placed []events.Event
	for _, e := range readLog(t, l) {
		if e.Seq <= res.seq || e.Subject != "mon" {
			continue
		}
		switch d := e.Data.(type) {
		case events.PackageHalting:
			if d.Reason != failover.ReasonTypeChanged {
				t.Errorf("seq %d: halting %+v, want reason %s", e.Seq, d, failover.ReasonTypeChanged)
			}
		case events.PackageHalted:
			halted[d.Node] = e.Seq
		case events.PackagePlaced:
			placed = append(placed, e)
		}
	}
	if len(halted) != 2 || len(placed) != 1 || placed[0].Seq < max(halted["node1"], halted["node2"]) {
		t.Errorf("after the change: halted %v, placed %v: want both instances halted, then one placement", halted, placed)
	}
	// And back: the failover placement halted first, then an instance on
	// each node in its own guest.
	back, err := config.Parse("multi.yaml", []byte(strings.Replace(multi, "%s", "    package_type: multi_node\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if cur, err = readInForce(ctx, l); err != nil {
		t.Fatal(err)
	}
	res, err = appendConfig(ctx, l, back, "multi.yaml", "test", "past apply's check", cur)
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 90*time.Second, "mon's instances on node1 and node2 again", func() bool {
		return started(res.seq, "node1", "monvm-node1") && started(res.seq, "node2", "monvm-node2")
	})
	var haltedAt uint64
	for _, e := range readLog(t, l) {
		if d, ok := e.Data.(events.PackageHalted); ok && e.Seq > res.seq && e.Subject == "mon" && d.Node == "node1" && haltedAt == 0 {
			haltedAt = e.Seq
		}
		if d, ok := e.Data.(events.PackagePlaced); ok && e.Seq > res.seq && e.Subject == "mon" && (haltedAt == 0 || e.Seq < haltedAt) {
			t.Errorf("seq %d: instance placed on %s before the failover placement was halted (seq %d)", e.Seq, d.Node, haltedAt)
		}
	}
	if code, out, errs := runCLI("--nats", url, "verify"); code != 0 {
		t.Errorf("verify: exit %d\n%s%s", code, out, errs)
	}
}
