package main

import (
	"time"

	"github.com/vmguard/vmguard/hostmanager"
	"github.com/vmguard/vmguard/internal/sdnotify"
)

// ready tells systemd (Type=notify units, examples/systemd) that the daemon
// is up; outside systemd it does nothing.
func ready() { _ = sdnotify.Notify("READY=1") }

// hostHealth passes the host manager's measurements on to the metrics (if
// any) and pets systemd's watchdog (WatchdogSec= of vmguard-host@.service)
// on each lease renewal that succeeded: a host manager that stops renewing
// its lease, hung or cut off, is restarted by systemd.
type hostHealth struct {
	m   hostmanager.Metrics // nil: none
	dog *sdnotify.Watchdog  // nil: no watchdog
}

// LeaseRenewed implements hostmanager.Metrics.
func (h hostHealth) LeaseRenewed(took time.Duration) {
	if h.m != nil {
		h.m.LeaseRenewed(took)
	}
	h.dog.Healthy(time.Now())
}

// Heartbeat implements hostmanager.Metrics.
func (h hostHealth) Heartbeat(guest string) {
	if h.m != nil {
		h.m.Heartbeat(guest)
	}
}
