package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// listen makes a notification socket like systemd's and points
// $NOTIFY_SOCKET at it.
func listen(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return c
}

func read(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 256)
	n, err := c.Read(b)
	if err != nil {
		t.Fatalf("read notification: %v", err)
	}
	return string(b[:n])
}

func TestNotify(t *testing.T) {
	c := listen(t)
	if err := Notify("READY=1"); err != nil {
		t.Fatal(err)
	}
	if got := read(t, c); got != "READY=1" {
		t.Errorf("got %q, want READY=1", got)
	}
}

func TestNotifyWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify("READY=1"); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v, want nil", err)
	}
}

func TestWatchdog(t *testing.T) {
	c := listen(t)
	t.Setenv("WATCHDOG_USEC", "4000000") // WatchdogSec=4s
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	if got := WatchdogEvery(); got != 2*time.Second {
		t.Fatalf("WatchdogEvery = %v, want 2s", got)
	}
	w := NewWatchdog()
	t0 := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	w.Healthy(t0)
	if got := read(t, c); got != "WATCHDOG=1" {
		t.Fatalf("got %q, want WATCHDOG=1", got)
	}
	w.Healthy(t0.Add(500 * time.Millisecond)) // within a quarter of the timeout: not sent
	w.Healthy(t0.Add(time.Second))            // a quarter later: sent
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 64)
	n, _ := c.Read(b)
	if got := string(b[:n]); got != "WATCHDOG=1" {
		t.Fatalf("got %q, want WATCHDOG=1", got)
	}
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := c.Read(b); err == nil {
		t.Errorf("a third notification %q: the one 0.5 s after the first should have been held back", b[:n])
	}

	t.Setenv("WATCHDOG_PID", "1")
	if NewWatchdog() != nil {
		t.Error("a watchdog meant for another pid was used")
	}
	var nilDog *Watchdog
	nilDog.Healthy(t0) // no panic
}
