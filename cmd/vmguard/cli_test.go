package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/events/eventstest"
	"github.com/vmguard/vmguard/examples"
	"github.com/vmguard/vmguard/failover"
)

// TestOperatorCLI drives the operator commands in-process against a real
// server: refused commands are clear errors that append nothing; accepted
// ones are recorded with who asked and why; events and status read them back.
func TestOperatorCLI(t *testing.T) {
	ctx := context.Background()
	l, url := testLog(t)
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
	if p := statusPackage(t, cli, "web", "--at", "1"); p.Node != "" || p.Epoch != 0 {
		t.Errorf("status --at 1 shows the later placement: %+v", p)
	}
	if code, _, _ := cli("status", "--at", "yesterday"); code != exitUsage {
		t.Errorf("status --at yesterday: code %d, want %d", code, exitUsage)
	}
	if code, out, _ := cli("explain", "web"); code != exitOK || !strings.Contains(out, "package.placed") {
		t.Errorf("explain web: code %d\n%s", code, out)
	}

	// Wrong questions get an answer that says so, not silence.
	for _, q := range []struct {
		args []string
		want string
	}{
		{[]string{"events", "-p", "nosuch"}, `unknown package "nosuch"`},
		{[]string{"events", "-n", "node9"}, `unknown node "node9"`},
		{[]string{"status", "--at", "999999"}, fmt.Sprintf("the log ends at seq %d", last())},
		{[]string{"status", "--at", time.Now().Add(time.Hour).Format(time.RFC3339)}, "in the future"},
		{[]string{"status", "--at", "2000-01-01T00:00:00Z"}, "before anything was recorded"},
	} {
		code, out, errs := cli(q.args...)
		if code != exitUsage || !strings.Contains(errs, q.want) {
			t.Errorf("%v: code %d, out %q, err %q; want a usage error saying %q", q.args, code, out, errs, q.want)
		}
	}
	if code, out, _ := cli("status", "--at", "2"); code != exitOK || !strings.HasPrefix(out, fmt.Sprintf("# state at seq 2 of %d, written ", last())) {
		t.Errorf("status --at 2 does not name the moment it shows: code %d\n%s", code, out)
	}

	// node run records who asked and why (node halt first).
	if code, out, errs := cli("node", "halt", "node2", "--by", "bob", "--reason", "patching"); code != exitOK {
		t.Fatalf("node halt: code %d %s %s", code, out, errs)
	}
	code, out, errs := cli("node", "run", "node2", "--by", "bob", "--reason", "done")
	if code != exitOK || !strings.Contains(out, `node.joined node2: by=bob reason=done`) {
		t.Errorf("node run: code %d, out %q, err %q", code, out, errs)
	}
	e, err = l.Get(ctx, last())
	if err != nil {
		t.Fatal(err)
	}
	if j, ok := e.Data.(events.NodeJoined); !ok || j.By != "bob" || j.Reason != "done" {
		t.Errorf("node run recorded %#v, want by bob, reason done", e.Data)
	}
}

// statusPackage runs `status -o json` with args and returns pkg's view,
// failing the test when the command fails, its output does not parse, or
// pkg is not in it.
func statusPackage(t *testing.T, cli func(...string) (int, string, string), pkg string, args ...string) failover.PackageView {
	t.Helper()
	code, out, errs := cli(append([]string{"status", "-o", "json"}, args...)...)
	var v failover.View
	if err := json.Unmarshal([]byte(out), &v); code != exitOK || err != nil {
		t.Fatalf("status -o json %v: code %d, %v\n%s%s", args, code, err, out, errs)
	}
	for _, p := range v.Packages {
		if p.Name == pkg {
			return p
		}
	}
	t.Fatalf("status -o json %v: no package %s\n%s", args, pkg, out)
	return failover.PackageView{}
}

// TestStatusAt: `status --at` shows the cluster as it was at a time given
// as RFC 3339 or as a duration ago, by the events' own times: web ran on
// node1 from 90 minutes ago and on node2 from 5 minutes ago.
func TestStatusAt(t *testing.T) {
	ctx := context.Background()
	l, cli := testServerCLI(t)
	_, raw := demoConfig(t)
	now := time.Now()
	at := func(ago time.Duration, subject string, d events.Payload) {
		t.Helper()
		e := events.Stamp(events.Event{Source: eventstest.SourceOf(d, subject), Subject: subject, Data: d}, now.Add(-ago))
		if _, err := l.Append(ctx, e); err != nil {
			t.Fatalf("append %s: %v", e.Type(), err)
		}
	}
	at(2*time.Hour, "", events.ConfigApplied{Config: raw, Hash: "h"})
	at(2*time.Hour, "node1", events.NodeJoined{})
	at(2*time.Hour, "node2", events.NodeJoined{})
	at(90*time.Minute, "web", events.PackagePlaced{Node: "node1", Epoch: 1, Reason: "auto_run"})
	at(90*time.Minute, "web", events.PackageStarted{Node: "node1", Epoch: 1})
	at(5*time.Minute, "web", events.PackageFailed{Node: "node1", Epoch: 1, Reason: "service_failed"})
	at(5*time.Minute, "web", events.PackagePlaced{Node: "node2", Epoch: 2, Reason: "failover", PreviousNode: "node1"})

	for _, tc := range []struct {
		at   []string
		node string
		ep   uint64
	}{
		{nil, "node2", 2},
		{[]string{"--at", now.Add(-time.Hour).UTC().Format(time.RFC3339)}, "node1", 1},
		{[]string{"--at", now.Add(-10 * time.Minute).Format(time.RFC3339Nano)}, "node1", 1},
		{[]string{"--at", "30m"}, "node1", 1},
		{[]string{"--at", "1m"}, "node2", 2},
		{[]string{"--at", "100m"}, "", 0},
	} {
		if p := statusPackage(t, cli, "web", tc.at...); p.Node != tc.node || p.Epoch != tc.ep {
			t.Errorf("status %v: web on %q epoch %d, want %q epoch %d", tc.at, p.Node, p.Epoch, tc.node, tc.ep)
		}
	}
	if code, _, errs := cli("status", "--at", "3 days"); code != exitUsage || !strings.Contains(errs, "neither a sequence number") {
		t.Errorf("status --at '3 days': code %d, %q; want a usage error", code, errs)
	}
}

// TestStatusSaysNoController: a package whose placement is due says that no
// failover controller runs to make it, rather than "placement due" forever.
func TestStatusSaysNoController(t *testing.T) {
	ctx := context.Background()
	l, cli := testServerCLI(t)
	if code, out, errs := cli("apply", "-f", "../../examples/demo.yaml"); code != exitOK {
		t.Fatalf("apply: code %d %s %s", code, out, errs)
	}
	c, _ := demoConfig(t)
	for _, n := range c.Nodes {
		if _, err := l.Append(ctx, events.New("/vmguard/nodes/"+n+"/host", n, events.NodeJoined{})); err != nil {
			t.Fatal(err)
		}
	}
	p := statusPackage(t, cli, "web")
	if p.Note != failover.NotePlacementDue+", but no failover controller is running: start `vmguard failover`" {
		t.Errorf("web's note %q, want it to say no controller runs", p.Note)
	}
}

// testServerCLI starts an in-process server and returns its log and a CLI
// runner pointed at it.
func testServerCLI(t *testing.T) (*events.Log, func(...string) (int, string, string)) {
	t.Helper()
	l, url := testLog(t)
	return l, func(args ...string) (int, string, string) {
		return runCLI(append([]string{"--nats", url}, args...)...)
	}
}

// demoConfig returns the built-in demo config and its JSON, as a
// config_applied event carries it.
func demoConfig(t *testing.T) (*config.Cluster, json.RawMessage) {
	t.Helper()
	c, err := config.Parse(examples.DemoName, examples.Demo)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return c, raw
}
