// Package natstest holds what vmguard's tests share beside the embedded
// server of internal/natsd: polling for an outcome with a deadline
// (WaitFor), a buffer a child process and the test may use at once
// (Buffer), and the vmguard binary built once for a package's tests
// (MainWithBinary). It is imported by tests only and must not hold state
// between tests.
package natstest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// PollInterval is how often WaitFor checks its condition.
const PollInterval = 10 * time.Millisecond

// WaitFor polls cond every PollInterval until it holds, and fails the test
// naming what it waited for if within passes first. Tests wait with it
// instead of sleeping, so that a loaded machine makes them slower, not
// wrong.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(PollInterval)
	}
}

// Buffer is a bytes.Buffer safe for concurrent use: a child process or a
// logger writes while the test reads.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// MainWithBinary is a TestMain body for tests that need vmguard as a
// separate OS process: it builds the package pkg (e.g. "./cmd/vmguard")
// of the module at dir into a temporary directory, sets *bin to the
// binary's path, runs the tests and removes the binary. It returns the
// exit code for os.Exit.
func MainWithBinary(m *testing.M, dir, pkg string, bin *string) int {
	tmp, err := os.MkdirTemp("", "vmguard-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	*bin = filepath.Join(tmp, "vmguard")
	cmd := exec.Command("go", "build", "-o", *bin, pkg)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, out)
		return 1
	}
	return m.Run()
}
