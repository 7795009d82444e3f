package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ceclient "github.com/cloudevents/sdk-go/v2/client"
	ceevent "github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/events/eventstest"
	"github.com/vmguard/vmguard/internal/natsd/natstest"
)

// TestEventsSink runs `vmguard events -f --sink URL` against an sdk-go
// CloudEvents receiver: the events of the log arrive in order with their
// ids; stopped (SIGTERM) and started again, it delivers what was written
// meanwhile and nothing twice.
func TestEventsSink(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	startServer(t, filepath.Join(dir, "nats"), port)
	l := dialLog(t, url)

	var mu sync.Mutex
	var got []string
	p, err := cehttp.New()
	if err != nil {
		t.Fatal(err)
	}
	h, err := ceclient.NewHTTPReceiveHandler(context.Background(), p, func(e ceevent.Event) {
		mu.Lock()
		got = append(got, e.ID())
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	recv := httptest.NewServer(h)
	defer recv.Close()

	var want []string
	add := func(n int) {
		for i := range n {
			e := eventstest.New(fmt.Sprintf("node%d", len(want)+i), events.NodeJoined{})
			if _, err := l.Append(context.Background(), e); err != nil {
				t.Fatal(err)
			}
			want = append(want, e.ID)
		}
	}
	sink := func() (*exec.Cmd, *syncBuffer) {
		cmd := exec.Command(vmguardBin, "--nats", url, "events", "-f", "--sink", recv.URL)
		out := startLogged(t, cmd)
		return cmd, out
	}
	check := func(out *syncBuffer) {
		t.Helper()
		natstest.WaitFor(t, 30*time.Second, fmt.Sprintf("%d events at the receiver", len(want)), func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(got) >= len(want)
		})
		mu.Lock()
		defer mu.Unlock()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("receiver got\n%v\nwant\n%v\n%s", got, want, out.String())
		}
	}
	add(5)
	cmd, out := sink()
	check(out)
	add(3) // while it runs
	check(out)
	if !strings.Contains(out.String(), "node.joined") {
		t.Errorf("no line per delivered event:\n%s", out.String())
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	add(4) // while none runs
	_, out = sink()
	check(out)
}
