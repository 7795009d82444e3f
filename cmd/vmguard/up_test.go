package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/invariant"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// runUp starts `vmguard up` on the demo config as a separate process, with
// extra arguments.
func runUp(t *testing.T, store string, port int, extra ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(vmguardBin, append([]string{"up", "--store", store, "--port", fmt.Sprint(port)}, extra...)...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		killStrays(store) // only after a failed run: a clean one leaves none (checkCleanStop)
	})
	return cmd, out
}

// checkCleanStop checks what a Ctrl-C of `vmguard up` on store left behind:
// no process of it runs any more (no agent naming the store, no service
// the log says it started), and every package of the demo was halted after
// event since. It reads the log with a `vmguard server` on up's store,
// stopped again before it returns. Leftovers fail the test and are then
// killed, so that a failed run leaks nothing. It returns the log's last
// sequence.
func checkCleanStop(t *testing.T, store string, since uint64) uint64 {
	t.Helper()
	if strays := procsNaming(store); len(strays) > 0 {
		t.Errorf("processes left running after Ctrl-C: %v", strays)
		killStrays(store)
	}
	l, stop := storeLog(t, store)
	defer stop()
	evs := readLog(t, l)
	halted := map[string]bool{}
	for _, e := range evs {
		if e.Seq <= since {
			continue
		}
		switch d := e.Data.(type) {
		case events.PackageHalted:
			halted[e.Subject] = true
		case events.ProcessStarted:
			if cmdline, ok := liveCmdline(d.PID); ok && strings.HasPrefix(cmdline, "sh -c") {
				t.Errorf("service %s of %s (pid %d, %q) still runs after Ctrl-C", d.Service, e.Subject, d.PID, cmdline)
				_ = syscall.Kill(d.PID, syscall.SIGKILL)
			}
		}
	}
	for _, pkg := range []string{"web", "db"} {
		if !halted[pkg] {
			t.Errorf("%s not halted after Ctrl-C (no package.halted after seq %d)", pkg, since)
		}
	}
	if t.Failed() {
		for _, e := range evs {
			if e.Seq > since {
				t.Log(formatEvent(e))
			}
		}
	}
	if len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].Seq
}

// procsNaming lists the live processes (not zombies) whose command line
// mentions s, as "pid cmdline".
func procsNaming(s string) []string {
	var out []string
	eachProc(func(pid int) {
		if cmdline, ok := liveCmdline(pid); ok && strings.Contains(cmdline, s) {
			out = append(out, fmt.Sprintf("%d %s", pid, cmdline))
		}
	})
	return out
}

// liveCmdline returns pid's command line (arguments joined by spaces) if it
// runs and is not a zombie.
func liveCmdline(pid int) (string, bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", false
	}
	if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return "", false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " ")), true
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
	natstest.WaitFor(t, 60*time.Second, "web and db started", func() bool {
		s := out.String()
		return strings.Contains(s, "web            package.started") && strings.Contains(s, "db             package.started")
	})
	natstest.WaitFor(t, 30*time.Second, "a restart of the flaky service", func() bool {
		return strings.Contains(out.String(), "service.restarting")
	})
	interrupt(t, cmd, out)
	first := checkCleanStop(t, store, 0)

	// A second run resumes from the store: same config, packages run again.
	cmd, out = runUp(t, store, port)
	natstest.WaitFor(t, 60*time.Second, "the second run to start both packages again", func() bool {
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
	checkCleanStop(t, store, first)
}
