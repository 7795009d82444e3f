// Package sdnotify speaks systemd's notification protocol (sd_notify(3)):
// READY=1 when a daemon is up, WATCHDOG=1 while it is healthy. Without
// $NOTIFY_SOCKET (not started by systemd) it does nothing. It holds no
// state of its own; callers decide what healthy means.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// Notify sends state (e.g. "READY=1") to $NOTIFY_SOCKET. Without the
// variable it does nothing and returns nil.
func Notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // an abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	return nil
}

// WatchdogEvery returns how often to send WATCHDOG=1: half of
// $WATCHDOG_USEC when systemd set it for this process (WatchdogSec= in the
// unit), 0 when there is no watchdog.
func WatchdogEvery() time.Duration {
	usec, err := strconv.ParseUint(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec == 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond / 2
}

// Watchdog pets systemd's watchdog at most every WatchdogEvery when told
// that the daemon is healthy. Its zero value and a nil one do nothing.
type Watchdog struct {
	every time.Duration
	last  time.Time
}

// NewWatchdog returns a Watchdog for this process, nil without one.
func NewWatchdog() *Watchdog {
	every := WatchdogEvery()
	if every == 0 {
		return nil
	}
	return &Watchdog{every: every / 2}
}

// Healthy says the daemon did what proves it healthy at now; the watchdog
// is petted if it was not in the last quarter of its timeout. Callers
// serialize their calls.
func (w *Watchdog) Healthy(now time.Time) {
	if w == nil || now.Sub(w.last) < w.every {
		return
	}
	w.last = now
	_ = Notify("WATCHDOG=1")
}
