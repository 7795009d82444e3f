package dirlock

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSecondAcquireRefusedNamingHolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	l, err := Acquire(dir, "vmguard up")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir, "vmguard server")
	var held *HeldError
	if !errors.As(err, &held) || !errors.Is(err, ErrHeld) {
		t.Fatalf("second Acquire: %v, want a HeldError", err)
	}
	if held.Holder.PID != os.Getpid() || held.Holder.What != "vmguard up" {
		t.Errorf("holder %+v, want vmguard up with pid %d", held.Holder, os.Getpid())
	}
	if !strings.Contains(err.Error(), "vmguard up (pid") || !strings.Contains(err.Error(), dir) {
		t.Errorf("message does not name the holder and dir: %v", err)
	}
	l.Release()
	l2, err := Acquire(dir, "vmguard server")
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	l2.Release()
	l2.Release() // twice is harmless
}

// A lock dies with its holder, even one killed with SIGKILL.
func TestLockDiesWithHolder(t *testing.T) {
	dir := t.TempDir()
	// flock(1) from util-linux holds the lock in a child process.
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("flock(1) not installed; util-linux provides it")
	}
	cmd := exec.Command("flock", "--no-fork", "-x", filepath.Join(dir, FileName), "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := Acquire(dir, "test")
		if errors.Is(err, ErrHeld) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		l.Release()
		if time.Now().After(deadline) {
			t.Fatal("the child never took the lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	l, err := Acquire(dir, "test")
	if err != nil {
		t.Fatalf("Acquire after the holder was killed: %v", err)
	}
	l.Release()
}
