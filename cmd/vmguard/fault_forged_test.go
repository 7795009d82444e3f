package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// TestFaultForgedProcessExited has a guest's user publish a process.exited
// for app's running process that did not exit. The host believes it (a
// guest speaks for its own processes) and decides a restart; the agent
// refuses the run (the service already runs) until the host's run bound
// (RunGiveUp, 30 s) fails the service, and app fails over. The lie ends,
// bounded, in events: app runs on one process again within RunGiveUp plus
// 30 s, and verify is clean.
func TestFaultForgedProcessExited(t *testing.T) {
	tag := fmt.Sprintf("%d", 800000+time.Now().UnixNano()%99999)
	f := newFaultEnv(t, faultConfig(`exec sleep `+tag))
	first := f.waitRunning(0, 30*time.Second, "app running")
	var started events.Event
	for _, e := range f.events() {
		if d, ok := e.Data.(events.ProcessStarted); ok && e.Subject == "app" && d.Service == "main" {
			started = e
		}
	}
	ps := started.Data.(events.ProcessStarted)
	forged := events.New("/vmguard/guests/appvm/agent", "app", events.ProcessExited{
		Guest: ps.Guest, Service: ps.Service, PID: ps.PID, ExitCode: 0, RuntimeMS: 1, RequestID: ps.RequestID, Epoch: ps.Epoch,
	})
	forged.CauseID = ps.RequestID
	if _, err := f.l.Append(context.Background(), forged); err != nil {
		t.Fatal(err)
	}
	// The restart; the real process still runs, alone.
	f.waitFor(10*time.Second, "a restart answering the forged exit", func(e events.Event) bool {
		return e.Type() == events.TypeServiceRestarting && e.CauseID == forged.ID
	})
	natstest.WaitFor(t, 10*time.Second, "one process of the service", func() bool { return len(procsWith("sleep "+tag)) == 1 })
	f.waitSettled(first.Seq+2, 30*time.Second+30*time.Second, false, "app running again")
	natstest.WaitFor(t, 5*time.Second, "one process of the service after the failover", func() bool { return len(procsWith("sleep "+tag)) == 1 })
	f.verify()
}
