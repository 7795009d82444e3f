package guestagent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKillMarkedFindsADaemonThatLeftTheGroup starts a shell that starts a
// daemon in a new session (setsid, then a background child whose parent
// exits: a double fork) and exits; the daemon carries the marker and
// killMarked kills it. A process with another marker is left alone.
func TestKillMarkedFindsADaemonThatLeftTheGroup(t *testing.T) {
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("setsid(1) is not installed")
	}
	tag := strconv.FormatInt(700000+time.Now().UnixNano()%99999, 10)
	start := func(marker string) {
		t.Helper()
		cmd := exec.Command("sh", "-c", `setsid sh -c "exec sleep `+tag+` &"`)
		cmd.Env = append(os.Environ(), markerEnv+"="+marker)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		// No output capture: the daemon would hold the pipe open.
		if err := cmd.Run(); err != nil {
			t.Fatalf("start daemon: %v", err)
		}
	}
	start("ours")
	start("theirs")
	daemons := func() map[string]int {
		found := map[string]int{}
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err != nil || strings.ReplaceAll(string(b), "\x00", " ") != "sleep "+tag+" " {
				continue
			}
			if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
				if i := strings.LastIndexByte(string(st), ')'); i > 0 && i+2 < len(st) && st[i+2] == 'Z' {
					continue // killed, not yet reaped by its new parent
				}
			}
			for _, m := range []string{"ours", "theirs"} {
				if hasEnv(pid, markerEnv+"="+m) {
					found[m] = pid
				}
			}
		}
		return found
	}
	t.Cleanup(func() {
		for _, pid := range daemons() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for len(daemons()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("daemons not running: %v", daemons())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := killMarked(map[string]bool{"ours": true, "gone": true}); n != 1 {
		t.Errorf("killMarked signalled %d processes, want 1", n)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		d := daemons()
		if _, ok := d["ours"]; !ok {
			if _, ok := d["theirs"]; !ok {
				t.Fatalf("the other marker's daemon was killed too")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the marked daemon survived: %v", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStrayKillerCoalesces queues many markers at once: they share a few
// scans of /proc instead of one each.
func TestStrayKillerCoalesces(t *testing.T) {
	var k strayKiller
	for i := range 200 {
		k.kill(fmt.Sprintf("m%d", i))
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		k.mu.Lock()
		running, scans := k.running, k.scans
		k.mu.Unlock()
		if !running {
			if scans == 0 || scans > 20 {
				t.Fatalf("200 markers took %d scans, want 1 to 20", scans)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("scans still running after 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
