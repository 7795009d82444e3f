package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/lease"
	"github.com/vmguard/vmguard/internal/natsd"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// runBin runs the vmguard binary to completion (bounded) and returns its
// exit code, combined output and how long it took.
func runBin(t *testing.T, d time.Duration, args ...string) (int, string, time.Duration) {
	t.Helper()
	cmd := exec.Command(vmguardBin, args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("vmguard %s still running after %v:\n%s", strings.Join(args, " "), d, out.String())
	}
	return cmd.ProcessState.ExitCode(), out.String(), time.Since(begin)
}

// TestUpGuardRails: while `vmguard up` runs, nothing else may use its store
// or its nodes' state dirs (each refusal names the holder and comes at once);
// a busy port is reported at once; and a restart of `up` resumes with the
// configuration the operator applied, not the built-in demo.
func TestUpGuardRails(t *testing.T) {
	if testing.Short() {
		t.Skip("runs vmguard up twice; run without -short")
	}
	store := t.TempDir()
	port := freePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	up := exec.Command(vmguardBin, "up", "-q", "--store", store, "--port", fmt.Sprint(port))
	out := &syncBuffer{}
	up.Stdout, up.Stderr = out, out
	up.WaitDelay = 5 * time.Second
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = up.Process.Kill(); _ = up.Wait(); killStrays(store) })
	natstest.WaitFor(t, 60*time.Second, "vmguard up to apply the demo", func() bool {
		return strings.Contains(out.String(), "demo.yaml applied (seq")
	})

	refused := func(what, holder string, args ...string) {
		t.Helper()
		code, msg, took := runBin(t, 20*time.Second, args...)
		if code == 0 || !strings.Contains(msg, "in use by "+holder+" (pid") {
			t.Errorf("%s: exit %d, want refused naming %q:\n%s", what, code, holder, msg)
		}
		if took > 5*time.Second {
			t.Errorf("%s: refused after %v, want at once", what, took)
		}
	}
	refused("a second up on the store", "vmguard up",
		"up", "-q", "--store", store, "--port", fmt.Sprint(freePort(t)))
	refused("a server on up's log", "vmguard server",
		"server", "-q", "--store", filepath.Join(store, "nats"), "--port", fmt.Sprint(freePort(t)))
	refused("a host manager on up's node state", "vmguard up, host manager of node1",
		"host", "--node", "node1", "--state", filepath.Join(store, "host", "node1"), "--nats", url)

	// A busy port: up fails at once, saying so.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	code, msg, took := runBin(t, 40*time.Second, "up", "-q", "--store", t.TempDir(), "--port", fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
	if code == 0 || !strings.Contains(msg, "address already in use") || took > 10*time.Second {
		t.Errorf("up on a busy port: exit %d after %v, want a quick 'address already in use':\n%s", code, took, msg)
	}

	// The operator applies their own configuration; a restart keeps it.
	src, err := os.ReadFile("../../examples/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	mine := filepath.Join(t.TempDir(), "mine.yaml")
	if err := os.WriteFile(mine, []byte(strings.Replace(string(src), "restart: 3", "restart: 4", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, msg, _ := runBin(t, 30*time.Second, "apply", "-f", mine, "--nats", url); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, msg)
	}
	if err := up.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 60*time.Second, "up to stop on Ctrl-C", func() bool { return strings.Contains(out.String(), "vmguard up: stopped") })
	_ = up.Wait()

	up2 := exec.Command(vmguardBin, "up", "-q", "--store", store, "--port", fmt.Sprint(port))
	out2 := &syncBuffer{}
	up2.Stdout, up2.Stderr = out2, out2
	up2.WaitDelay = 5 * time.Second
	if err := up2.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = up2.Process.Kill(); _ = up2.Wait() })
	natstest.WaitFor(t, 60*time.Second, "the second up to say which config is in force", func() bool {
		return strings.Contains(out2.String(), "config in force from the log")
	})
	if !strings.Contains(out2.String(), "from "+mine) {
		t.Errorf("the second up does not name the applied file %s:\n%s", mine, out2.String())
	}
	l := dialLog(t, url)
	evs := readLog(t, l)
	var applied []events.ConfigApplied
	for _, e := range evs {
		if d, ok := e.Data.(events.ConfigApplied); ok {
			applied = append(applied, d)
		}
	}
	if len(applied) != 2 || applied[1].File != mine {
		t.Errorf("config_applied events %+v, want the demo then %s, nothing re-applied", applied, mine)
	}
	if err := up2.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, 60*time.Second, "the second up to stop", func() bool { return strings.Contains(out2.String(), "vmguard up: stopped") })
}

// TestBenchLogRefusesLiveLog: `bench log --external` writes fake events, so
// against a log that holds any it is refused and appends nothing; against
// an empty one it runs and reports the mode honestly.
func TestBenchLogRefusesLiveLog(t *testing.T) {
	s := natsd.StartTest(t)
	url := s.ClientURL()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	l, err := events.Open(context.Background(), nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(context.Background(), events.New("/vmguard/cli/test", "web", events.PackageReset{By: "test"})); err != nil {
		t.Fatal(err)
	}
	before, err := l.LastSeq(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI("bench", "log", "--external", "--nats", url, "--sync", "5", "--async", "5", "--replay", "5")
	if code != exitUsage || !strings.Contains(errs, "holds 1 events") {
		t.Errorf("bench log --external on a live log: exit %d, out %q, err %q; want refused (exit %d)", code, out, errs, exitUsage)
	}
	after, err := l.LastSeq(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("the refused benchmark appended: last seq %d -> %d", before, after)
	}
	code, out, errs = runCLI("bench", "log", "--sync", "5", "--async", "5", "--replay", "5")
	if code != exitOK || !strings.Contains(out, "mode interval (flush every") || !strings.Contains(out, "pre-encoded, 1 atomic batches)") {
		t.Errorf("bench log on its own server: exit %d, out %q, err %q", code, out, errs)
	}
}

// hostConfig: one node with one long-running package, so that a host
// manager holds node1's lease and runs a guest.
const hostConfig = `cluster: gr
node_timeout: 4s
guest_timeout: 3s
nodes: [node1]
packages:
  - name: db
    nodes: [node1]
    guest: {name: dbvm, driver: process, start_timeout: 20s}
    services:
      - name: store
        cmd: ["sh", "-c", "while :; do sleep 1; done"]
        halt_timeout: 1s
`

// TestSecondHostManagerRefused: while node1's host manager runs, a second
// one for node1 (another state dir, as on another machine) is refused,
// naming the holder, and changes nothing in the log; --takeover replaces
// it on purpose and is recorded; a holder killed with SIGKILL is gone, and
// a new host manager takes over without being told.
func TestSecondHostManagerRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("runs host managers as OS processes; run without -short")
	}
	dir := t.TempDir()
	c := startProcCluster(t, dir, hostConfig)
	url := c.url
	c.start("first", "host", "--node", "node1", "--state", filepath.Join(dir, "a"), "--agent-bin", vmguardBin)
	l := dialLog(t, url)
	waitEvent(t, l, 60*time.Second, "db's service started", func(e events.Event) bool {
		_, ok := e.Data.(events.ProcessStarted)
		return ok && e.Subject == "db"
	})
	before, err := l.LastSeq(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	code, msg, _ := runBin(t, 30*time.Second, "--nats", url, "host", "--node", "node1", "--state", filepath.Join(dir, "b"), "--agent-bin", vmguardBin)
	first := c.procs["first"].Process.Pid
	if code != exitUsage || !strings.Contains(msg, fmt.Sprintf("held by a running host manager (pid %d on", first)) {
		t.Fatalf("second host manager for node1: exit %d, want %d naming pid %d:\n%s", code, exitUsage, first, msg)
	}
	if pid := leasePID(t, url, "node1"); pid != first {
		t.Errorf("node1's lease is held by pid %d after the refusal, want the first host manager, %d", pid, first)
	}
	evs := readLog(t, l)
	for _, e := range evs {
		if e.Seq > before && e.Source != "/vmguard/nodes/node1/host" && e.Source != "/vmguard/failover" {
			t.Errorf("the refused host manager changed the log: %s", formatEvent(e))
		}
		if e.Seq > before && (e.Type() == events.TypeNodeLost || e.Type() == events.TypeNodeFenced || e.Type() == events.TypeNodeJoined ||
			e.Type() == events.TypePackageHalting || e.Type() == events.TypeProcessExited) {
			t.Errorf("after the refusal: %s", formatEvent(e))
		}
	}

	// On purpose: --takeover, recorded; the old one steps down.
	c.start("second", "host", "--node", "node1", "--state", filepath.Join(dir, "b"), "--agent-bin", vmguardBin,
		"--takeover", "--by", "alice", "--reason", "first one is hung")
	taken := waitEvent(t, l, 30*time.Second, "node.taken_over", func(e events.Event) bool { return e.Type() == events.TypeNodeTakenOver })
	d := taken.Data.(events.NodeTakenOver)
	if d.By != "alice" || d.Reason != "first one is hung" || !strings.Contains(d.Holder, fmt.Sprintf("pid %d", first)) {
		t.Errorf("node.taken_over %+v, want by alice, the reason, and the old holder's pid %d", d, first)
	}
	natstest.WaitFor(t, 30*time.Second, "the first host manager to step down", func() bool {
		return strings.Contains(c.logs["first"].String(), "node lease taken by another host manager instance")
	})

	// A holder killed with SIGKILL is gone: a new one is not refused.
	c.kill9("second")
	c.start("third", "host", "--node", "node1", "--state", filepath.Join(dir, "c"), "--agent-bin", vmguardBin)
	third := c.procs["third"].Process.Pid
	natstest.WaitFor(t, 30*time.Second, "the third host manager to hold node1", func() bool {
		return leasePID(t, url, "node1") == third
	})
}

// leasePID returns the pid of node's lease holder, 0 if none.
func leasePID(t *testing.T, url, node string) (pid int) {
	t.Helper()
	onJetStream(t, url, 5*time.Second, func(ctx context.Context, js jetstream.JetStream) {
		kv, err := lease.Open(ctx, js)
		if err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(ctx, node)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		v, err := lease.Decode(e.Value())
		if err != nil {
			t.Fatal(err)
		}
		pid = v.PID
	})
	return pid
}

// onJetStream connects to url and calls f with its JetStream and a context
// that ends after within; the connection is closed when f returns.
func onJetStream(t *testing.T, url string, within time.Duration, f func(ctx context.Context, js jetstream.JetStream)) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	f(ctx, js)
}
