package main

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

// TestLiveViewFits: the live view of `vmguard up` keeps its banner (with
// the config in force) on every redraw and fits the terminal it is given.
func TestLiveViewFits(t *testing.T) {
	c, raw := demoConfig(t)
	banner := []string{"vmguard up: NATS on nats://127.0.0.1:4222; config examples/demo.yaml applied (seq 1)", "In another terminal: ..."}
	v := newLiveView(io.Discard, banner)
	v.terminal = true
	var seq uint64
	add := func(subject string, d events.Payload) {
		seq++
		e := events.New("/test", subject, d)
		e.Seq = seq
		if err := v.apply(e); err != nil {
			t.Fatal(err)
		}
	}
	add("", events.ConfigApplied{Config: raw, Hash: "h"})
	for _, n := range c.Nodes {
		add(n, events.NodeJoined{})
	}
	for i, p := range c.Packages {
		add(p.Name, events.PackagePlaced{Node: c.Nodes[i%len(c.Nodes)], Epoch: 1, Reason: "auto_run"})
		add(p.Name, events.PackageStarted{Node: c.Nodes[i%len(c.Nodes)], Epoch: 1})
	}
	for i := range 30 {
		add("web", events.ServiceRestarting{Service: "flaky", Node: c.Nodes[0], Epoch: 1, Attempt: i + 1, RestartsLeft: -1})
	}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, rows := range []int{50, 30, 20, 12} {
		screen := string(v.render(rows, now))
		lines := strings.Split(screen, "\n")
		if len(lines) > rows {
			t.Errorf("%d rows: the screen has %d lines:\n%s", rows, len(lines), screen)
		}
		if !strings.HasPrefix(screen, banner[0]) {
			t.Errorf("%d rows: the banner is gone:\n%s", rows, screen)
		}
		if rows >= 20 && !strings.Contains(screen, fmt.Sprintf("%6d  web", seq)) {
			t.Errorf("%d rows: the latest event (seq %d) is not shown:\n%s", rows, seq, screen)
		}
	}
	if full := strings.Count(string(v.render(0, now)), "\n") + 1; full <= 50 {
		t.Errorf("the unlimited screen has %d lines; the test wants more than 50 so the limit is exercised", full)
	}
}
