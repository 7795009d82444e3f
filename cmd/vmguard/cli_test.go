package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/natsd"
)

// TestOperatorCLI drives the operator commands in-process against a real
// server: refused commands are clear errors that append nothing; accepted
// ones are recorded with who asked and why; events and status read them back.
func TestOperatorCLI(t *testing.T) {
	ctx := context.Background()
	s := natsd.StartTest(t)
	nc := natsd.Connect(t, s)
	l, err := events.Open(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	url := s.ClientURL()
	cli := func(args ...string) (int, string, string) { return runCLI(append([]string{"--nats", url}, args...)...) }
	last := func() uint64 {
		seq, err := l.LastSeq(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}

	if code, _, errs := cli("pkg", "run", "web"); code != exitError || !strings.Contains(errs, "no configuration in force") {
		t.Errorf("run before apply: code %d, %q", code, errs)
	}
	if code, out, errs := cli("apply", "-f", "../../examples/demo.yaml", "--reason", "first"); code != exitOK {
		t.Fatalf("apply: code %d %s %s", code, out, errs)
	}
	applied := last()

	refused := []struct {
		args []string
		want string
	}{
		{[]string{"pkg", "run", "nope"}, `unknown package "nope"`},
		{[]string{"pkg", "run", "web", "-n", "node9"}, "node node9 is not one of package web's nodes"},
		{[]string{"pkg", "halt", "web"}, "is not running"},
		{[]string{"pkg", "move", "web", "-n", "node2"}, "is not running"},
		{[]string{"pkg", "reset", "web", "-s", "nope"}, `unknown service "nope"`},
		{[]string{"node", "halt", "node9"}, `unknown node "node9"`},
	}
	for _, r := range refused {
		code, _, errs := cli(r.args...)
		if code != exitError || !strings.Contains(errs, r.want) {
			t.Errorf("%v: code %d, stderr %q, want %q", r.args, code, errs, r.want)
		}
	}
	if code, _, _ := cli("pkg", "run", "bad.name"); code != exitUsage {
		t.Errorf("invalid name: code %d, want %d", code, exitUsage)
	}
	if code, _, errs := cli("pkg", "run", "web", "--reason", strings.Repeat("why ", 300)); code != exitUsage || !strings.Contains(errs, "--reason: 1200 characters; at most 960") {
		t.Errorf("too long --reason: code %d, stderr %q, want a usage error", code, errs)
	}
	if got := last(); got != applied {
		t.Fatalf("refused commands appended events: last seq %d, want %d", got, applied)
	}

	// node2's host manager joins (played here), so web may run there.
	if _, err := l.Append(ctx, events.New("/vmguard/nodes/node2/host", "node2", events.NodeJoined{})); err != nil {
		t.Fatal(err)
	}

	// Accepted: run web on node2, recorded with who and why.
	if code, out, errs := cli("pkg", "run", "web", "-n", "node2", "--by", "alice", "--reason", "testing"); code != exitOK || !strings.Contains(out, "package.placed web: node=node2 epoch=1") {
		t.Fatalf("pkg run: code %d, out %q, err %q", code, out, errs)
	}
	e, err := l.Get(ctx, last())
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := e.Data.(events.PackagePlaced); !ok || p.By != "alice" || !strings.Contains(p.Reason, "testing") || e.Source != "/vmguard/cli/alice" {
		t.Errorf("recorded placement: %#v from %s", e.Data, e.Source)
	}
	if code, _, errs := cli("pkg", "run", "web"); code != exitError || !strings.Contains(errs, "already") {
		t.Errorf("run twice: code %d, %q", code, errs)
	}

	// The timeline, as text and as raw CloudEvents.
	code, out, _ := cli("events", "-p", "web")
	if code != exitOK || !strings.Contains(out, "package.placed") || !strings.Contains(out, "node=node2 epoch=1") {
		t.Errorf("events -p web: code %d:\n%s", code, out)
	}
	code, out, _ = cli("events", "-o", "json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || len(lines) != int(last()) {
		t.Fatalf("events -o json: code %d, %d lines, want %d", code, len(lines), last())
	}
	for _, line := range lines {
		var ce cloudevents.Event
		if err := json.Unmarshal([]byte(line), &ce); err != nil || ce.Validate() != nil {
			t.Errorf("not a valid CloudEvent: %v %s", err, line)
		}
	}

	// Status now and as it was right after the apply.
	code, out, _ = cli("status", "-o", "json")
	var v struct {
		Packages []struct{ Name, Node, State string }
	}
	if err := json.Unmarshal([]byte(out), &v); code != exitOK || err != nil {
		t.Fatalf("status -o json: code %d, %v\n%s", code, err, out)
	}
	found := false
	for _, p := range v.Packages {
		if p.Name == "web" {
			found = p.Node == "node2"
		}
	}
	if !found {
		t.Errorf("status: web not on node2:\n%s", out)
	}
	code, out, _ = cli("status", "--at", "1", "-o", "json")
	if code != exitOK || strings.Contains(out, `"node": "node2"`) {
		t.Errorf("status --at 1 shows the later placement: code %d\n%s", code, out)
	}
	if code, _, _ := cli("status", "--at", "yesterday"); code != exitUsage {
		t.Errorf("status --at yesterday: code %d, want %d", code, exitUsage)
	}
	if code, out, _ := cli("explain", "web"); code != exitOK || !strings.Contains(out, "package.placed") {
		t.Errorf("explain web: code %d\n%s", code, out)
	}
}
