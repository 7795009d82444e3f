package main

import (
	"testing"
	"time"
)

// TestFaultPauseServer stops the NATS server with SIGSTOP for twice
// node_timeout: every host manager loses its lease and fences; after
// SIGCONT app runs again.
func TestFaultPauseServer(t *testing.T) {
	f, first := runningApp(t)
	f.pause(f.server.Process.Pid, 2*faultNodeTimeout)
	resumed := time.Now()
	again := f.waitSettledFor(first.Seq-1, 4*(faultNodeTimeout+3*time.Second)+2*faultNodeTimeout, 2*faultNodeTimeout, false, "app running after the server's pause")
	t.Logf("server paused %v -> app running on %s (seq %d) %v after SIGCONT", 2*faultNodeTimeout, startedNode(again), again.Seq, time.Since(resumed).Round(time.Millisecond))
	f.checkOneServiceProcess(5 * time.Second)
	f.verify()
}

// TestFaultServerDown kills the NATS server and keeps it down for twice
// node_timeout, then starts it again on its store: app runs again.
func TestFaultServerDown(t *testing.T) {
	f, first := runningApp(t)
	f.killServer()
	time.Sleep(2 * faultNodeTimeout) // the fault: the server is down this long
	f.restartServer()
	back := time.Now()
	again := f.waitSettledFor(first.Seq-1, 4*(faultNodeTimeout+3*time.Second)+2*faultNodeTimeout, 2*faultNodeTimeout, false, "app running after the server's restart")
	t.Logf("server down %v -> app running on %s (seq %d) %v after its restart", 2*faultNodeTimeout, startedNode(again), again.Seq, time.Since(back).Round(time.Millisecond))
	f.checkOneServiceProcess(5 * time.Second)
	f.verify()
}
