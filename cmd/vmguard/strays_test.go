package main

import (
	"errors"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestKillStrays: killStrays kills the processes whose command line names
// its directory, and only those.
func TestKillStrays(t *testing.T) {
	start := func(mark string) *exec.Cmd {
		t.Helper()
		cmd := exec.Command("sh", "-c", "while :; do sleep 0.1; done", mark)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	dir := t.TempDir()
	stray := start(filepath.Join(dir, "agent"))
	done := make(chan error, 1)
	go func() { done <- stray.Wait() }()
	t.Cleanup(func() { _ = stray.Process.Kill() })
	other := start(filepath.Join(t.TempDir(), "agent"))
	t.Cleanup(func() { _ = other.Process.Kill(); _ = other.Wait() })
	if got := procsNaming(dir); len(got) != 1 {
		t.Fatalf("processes naming %s: %q, want the one started", dir, got)
	}
	killStrays(dir)
	select {
	case err := <-done:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("stray ended with %v, want killed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stray still runs after killStrays")
	}
	if err := other.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("a process not naming %s was killed too: %v", dir, err)
	}
}
