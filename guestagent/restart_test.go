package guestagent_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// A service whose process exited runs again, and its start is spooled and
// answered, while the exit's fdatasync is still going on: the exit is
// written and in the log, which is all a restart needs (issue 12 item 5:
// the sync, 0.3-8 ms on this disk, was on the restart's path twice). The
// log still holds the exit before the replacement's start.
func TestRestartDoesNotWaitForTheExitsSync(t *testing.T) {
	s := startServer(t, t.TempDir(), 0)
	l := openLog(t, s.ClientURL())
	held, release := make(chan struct{}, 1), make(chan struct{})
	var first atomic.Bool
	ta := startAgentWith(t, s.ClientURL(), nil, func(a *guestagent.Agent) {
		a.SetSpoolSync(func(fd int) error {
			if first.CompareAndSwap(false, true) {
				held <- struct{}{}
				<-release
			}
			return syscall.Fdatasync(fd)
		})
	})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // before the agent stops (cleanups run last first)

	run(t, ta.client, sh("web", "app", "r-1", "exit 3"))
	select {
	case <-held:
	case <-time.After(20 * time.Second):
		t.Fatal("the exit of r-1 was never synced")
	}
	// The exit's sync is held: the next run of the service starts anyway
	// (run gives it 10 s; before, it waited for the sync).
	run(t, ta.client, sh("web", "app", "r-2", "sleep 100"))
	natstest.WaitFor(t, 20*time.Second, "r-2's start in the log while r-1's exit sync is held", func() bool {
		return strings.Contains(order(procEvents(t, l, "web")), "started r-2")
	})
	free()
	if got, want := order(procEvents(t, l, "web")), "started r-1, exited r-1, started r-2"; got != want {
		t.Fatalf("log holds %s, want %s", got, want)
	}
}

// order lists process events as "started r-1, exited r-1, ...".
func order(evs []events.Event) string {
	var out []string
	for _, e := range evs {
		switch d := e.Data.(type) {
		case events.ProcessStarted:
			out = append(out, fmt.Sprintf("started %s", d.RequestID))
		case events.ProcessExited:
			out = append(out, fmt.Sprintf("exited %s", d.RequestID))
		}
	}
	return strings.Join(out, ", ")
}
