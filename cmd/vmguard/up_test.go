package main

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/invariant"
)

// runUp starts `vmguard up` on the demo config as a separate process.
func runUp(t *testing.T, store string, port int) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(vmguardBin, "up", "--store", store, "--port", fmt.Sprint(port))
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); killStrays(store) })
	return cmd, out
}

// interrupt sends Ctrl-C and waits for a clean exit.
func interrupt(t *testing.T, cmd *exec.Cmd, out *syncBuffer) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("vmguard up after Ctrl-C: %v\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("vmguard up did not stop within 60s of Ctrl-C\n%s", out.String())
	}
	if !strings.Contains(out.String(), "vmguard up: stopped") {
		t.Errorf("no clean stop message:\n%s", out.String())
	}
}

// TestUpDemo runs the README's first command: `vmguard up` on the built-in
// demo shows packages starting and a restart within seconds, stops cleanly
// on Ctrl-C (halting its packages), and a second run resumes from its store.
func TestUpDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs vmguard up for about half a minute; run without -short")
	}
	store := t.TempDir()
	port := freePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)

	cmd, out := runUp(t, store, port)
	waitFor(t, 60*time.Second, "web and db started", func() bool {
		s := out.String()
		return strings.Contains(s, "web            package.started") && strings.Contains(s, "db             package.started")
	})
	waitFor(t, 30*time.Second, "a restart of the flaky service", func() bool {
		return strings.Contains(out.String(), "service.restarting")
	})
	interrupt(t, cmd, out)
	if !strings.Contains(out.String(), "package.halted") || !strings.Contains(out.String(), "node_shutdown") {
		t.Errorf("packages not halted on Ctrl-C:\n%s", out.String())
	}

	// A second run resumes from the store: same config, packages run again.
	cmd, out = runUp(t, store, port)
	waitFor(t, 60*time.Second, "the second run to start both packages again", func() bool {
		return strings.Contains(out.String(), "config in force from the log") && strings.Count(out.String(), "db             package.started") >= 2
	})
	l := dialLog(t, url)
	evs := readLog(t, l)
	for _, p := range invariant.Check(evs) {
		t.Errorf("invariant: %s", p)
	}
	if n := count(evs, func(e events.Event) bool { return e.Type() == events.TypeConfigApplied }); n != 1 {
		t.Errorf("config applied %d times over two runs, want once", n)
	}
	interrupt(t, cmd, out)
}
