package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/cliparse"
	"github.com/vmguard/vmguard/internal/natsd"
)

// TestGuestBinaryStaysSmall keeps the guest binary free of nats-server,
// which would more than double its size and memory, and of the cluster
// configuration and its YAML code: the agent's API needs nothing of them.
func TestGuestBinaryStaysSmall(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/nats-io/nats-server") || p == "github.com/vmguard/vmguard/config" || strings.Contains(p, "yaml") {
			t.Errorf("vmguard-agent links %s", p)
		}
	}
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--version"}, cliparse.ExitOK, "vmguard-agent 0.1.0-dev"},
		{nil, cliparse.ExitUsage, "missing flags: --guest"},
		{[]string{"--guest", "a.b"}, cliparse.ExitUsage, `--guest: "a.b" is not a valid name`},
		{[]string{"--guest", "g", "--max-procs", "0"}, cliparse.ExitUsage, "--max-procs: 0, want at least 1"},
		{[]string{"--guest", "g", "--node", "n/1"}, cliparse.ExitUsage, "--node:"},
	} {
		var out bytes.Buffer
		if code := run(context.Background(), tc.args, &out, &out); code != tc.code || !strings.Contains(out.String(), tc.want) {
			t.Errorf("%q: exit %d, output %q; want %d and %q", tc.args, code, out.String(), tc.code, tc.want)
		}
	}
}

// TestRun runs the agent against a real server until its context ends.
func TestRun(t *testing.T) {
	s := natsd.StartTest(t)
	nc := natsd.Connect(t, s)
	if _, err := events.Open(context.Background(), nc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--guest", "slim", "--nats", s.ClientURL(), "--state", t.TempDir()}, &stderr, &stderr)
	}()
	c, err := guestagent.NewClient(nc, "slim")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, pcancel := context.WithTimeout(context.Background(), time.Second)
		p, err := c.Ping(pctx)
		pcancel()
		if err == nil {
			if p.Guest != "slim" || p.Version != version {
				t.Fatalf("ping: %+v", p)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent did not answer ping: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case code := <-done:
		if code != cliparse.ExitOK {
			t.Fatalf("exit %d\n%s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not stop")
	}
}
