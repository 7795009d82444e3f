package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// TestHostWaitsForFormingCluster starts a host manager and a controller
// while only one of three servers runs (no meta leader): they wait and say
// so instead of exiting; one with a short --cluster-wait gives up naming
// it; once the other servers are up, the waiting host manager joins its
// node. (Seen in the partition harness: a host manager started with the
// servers exited with "read the lease of node h2: nats: no responders".)
func TestHostWaitsForFormingCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test with OS processes; run without -short")
	}
	dir := t.TempDir()
	defer killStrays(dir)
	nc3 := newNATSCluster(t, dir)
	nc3.start(0)
	nc3.waitOutput(0, 15*time.Second, "waiting for the JetStream cluster")

	c := &cluster{t: t, url: nc3.urls[0], dir: dir, procs: map[string]*exec.Cmd{}, logs: map[string]*syncBuffer{}}
	defer c.stopAll()
	code, msg, _ := runBin(t, 60*time.Second, "--nats", nc3.urls[0], "host", "--node", "node2", "--state", filepath.Join(dir, "short"),
		"--agent-bin", vmguardBin, "--cluster-wait", "2s")
	if code != 1 || !strings.Contains(msg, "waited --cluster-wait 2s for the JetStream cluster") {
		t.Fatalf("host manager with --cluster-wait 2s and no cluster: exit %d, want 1 naming the wait:\n%s", code, msg)
	}
	c.start("host", "host", "--node", "node1", "--state", filepath.Join(dir, "node1"), "--agent-bin", vmguardBin)
	c.start("failover", "failover")
	natstest.WaitFor(t, 30*time.Second, "the host manager to say it waits", func() bool {
		return strings.Contains(c.logs["host"].String(), "waiting for the JetStream cluster")
	})
	natstest.WaitFor(t, 30*time.Second, "the controller to say it waits", func() bool {
		return strings.Contains(c.logs["failover"].String(), "waiting for the JetStream cluster")
	})
	for _, name := range []string{"host", "failover"} {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.procs[name].Process.Pid))
		if err != nil || isZombie(st) {
			t.Fatalf("%s exited while the cluster formed:\n%s", name, c.logs[name].String())
		}
	}
	nc3.start(1)
	nc3.start(2)
	for i := range 3 {
		nc3.waitOutput(i, 60*time.Second, "stream VMGUARD ready (R3)")
	}
	cfg := filepath.Join(dir, "cluster.yaml")
	if err := os.WriteFile(cfg, []byte(clusterConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	c.cli("apply", "-f", cfg)
	l := dialLog(t, nc3.url())
	waitEvent(t, l, 90*time.Second, "node1 joined", func(e events.Event) bool {
		return e.Type() == events.TypeNodeJoined && e.Subject == "node1"
	})
}
