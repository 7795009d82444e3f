package main

import (
	"context"
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

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd"
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
	waitFor(t, 60*time.Second, "vmguard up to apply the demo", func() bool {
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
	waitFor(t, 60*time.Second, "up to stop on Ctrl-C", func() bool { return strings.Contains(out.String(), "vmguard up: stopped") })
	_ = up.Wait()

	up2 := exec.Command(vmguardBin, "up", "-q", "--store", store, "--port", fmt.Sprint(port))
	out2 := &syncBuffer{}
	up2.Stdout, up2.Stderr = out2, out2
	up2.WaitDelay = 5 * time.Second
	if err := up2.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = up2.Process.Kill(); _ = up2.Wait() })
	waitFor(t, 60*time.Second, "the second up to say which config is in force", func() bool {
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
	waitFor(t, 60*time.Second, "the second up to stop", func() bool { return strings.Contains(out2.String(), "vmguard up: stopped") })
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
	if code != exitOK || !strings.Contains(out, "mode interval (flush every") {
		t.Errorf("bench log on its own server: exit %d, out %q, err %q", code, out, errs)
	}
}
