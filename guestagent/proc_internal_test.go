package guestagent

import (
	"os"
	"sync"
	"testing"
)

// TestWaitWithoutPidfd covers kernels without pidfd (before 5.4): the exit
// is awaited with a blocking waitid on the pid, still without reaping.
func TestWaitWithoutPidfd(t *testing.T) {
	for _, usePidfd := range []bool{true, false} {
		var pool sync.Pool
		pool.New = func() any { b := make([]byte, readBufSize); return &b }
		pid, pidfd, out, err := spawn(RunRequest{Argv: []string{"sh", "-c", "echo bye; exit 5"}},
			spawnSpec{env: []string{"PATH=" + os.Getenv("PATH")}, pool: &pool})
		if err != nil {
			t.Fatal(err)
		}
		if !usePidfd {
			pidfd.Close()
			pidfd = nil
		} else if pidfd == nil {
			t.Fatal("kernel without pidfd: the pidfd path is untested here")
		}
		go out.run()
		p := &proc{pid: pid, pidfd: pidfd, out: out}
		info, err := p.waitExited()
		if err != nil {
			t.Fatal(err)
		}
		// Not reaped yet: the pid is still ours.
		if _, err := procStartTicks(pid); err != nil {
			t.Errorf("pidfd=%v: pid %d gone before reaping: %v", usePidfd, pid, err)
		}
		p.reap()
		if code, sig := info.outcome(); code != 5 || sig != "" {
			t.Errorf("pidfd=%v: outcome %d %q, want 5", usePidfd, code, sig)
		}
		if lines := out.finish(""); len(lines) != 1 || lines[0] != "bye" {
			t.Errorf("pidfd=%v: output %q", usePidfd, lines)
		}
		if _, err := procStartTicks(pid); err == nil {
			t.Errorf("pidfd=%v: pid %d still there after reaping", usePidfd, pid)
		}
		if pidfd != nil {
			pidfd.Close()
		}
	}
}
