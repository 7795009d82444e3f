package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/events/eventstest"
	"github.com/vmguard/vmguard/internal/natsd"
)

// runCLI runs the CLI in-process and returns its exit code and output.
func runCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// testLog starts an in-process server and opens the event log on it; it
// returns the log and the server's client URL.
func testLog(t *testing.T) (*events.Log, string) {
	t.Helper()
	s := natsd.StartTest(t)
	l, err := events.Open(context.Background(), natsd.Connect(t, s))
	if err != nil {
		t.Fatal(err)
	}
	return l, s.ClientURL()
}

func TestCheckCommand(t *testing.T) {
	for _, f := range []string{"../../examples/demo.yaml", "../../examples/virsh.yaml"} {
		code, out, errs := runCLI("check", "-f", f)
		if code != exitOK || !strings.HasPrefix(out, "ok: ") {
			t.Errorf("check %s: code %d, out %q, err %q", f, code, out, errs)
		}
	}
	if _, out, _ := runCLI("check", "-f", "../../examples/demo.yaml"); out != "ok: 3 nodes, 2 packages\n" {
		t.Errorf("demo summary: %q", out)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	src := "cluster: demo\nnodes: [node1]\npackages:\n  - name: web\n    nodes: [node2]\n    services:\n      - name: s\n        cmd: [x]\n        restart: many\n"
	if err := os.WriteFile(bad, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI("check", "-f", bad)
	want := bad + `:5: packages[0].nodes[0]: "node2" is not one of the cluster's nodes (node1)` + "\n" +
		bad + `:9: packages[0].services[0].restart: "many": want none, unlimited or a whole number 0 or more` + "\n" +
		"vmguard: check " + bad + ": 2 problems\n"
	if code != exitError || out != "" || errs != want {
		t.Errorf("bad file: code %d, out %q, stderr\n%s\nwant\n%s", code, out, errs, want)
	}
	if code, _, errs := runCLI("check", "-f", filepath.Join(t.TempDir(), "none.yaml")); code != exitError || !strings.Contains(errs, "no such file") {
		t.Errorf("missing file: code %d, %q", code, errs)
	}
	if code, _, _ := runCLI("check"); code != exitUsage {
		t.Errorf("no -f: code %d, want %d", code, exitUsage)
	}
}

// configEvents returns every cluster.config_applied in the log.
func configEvents(t *testing.T, l *events.Log) []events.Event {
	t.Helper()
	var out []events.Event
	if _, err := l.Replay(context.Background(), events.ReadOptions{Subjects: []string{configSubject}}, func(e events.Event) error {
		out = append(out, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestApplyCommand(t *testing.T) {
	l, url := testLog(t)
	demo := "../../examples/demo.yaml"

	code, out, errs := runCLI("apply", "--nats", url, "-f", demo, "--by", "alice", "--reason", "first")
	if code != exitOK || !strings.HasPrefix(out, "applied: cluster demo, 3 nodes, 2 packages, hash ") || !strings.Contains(out, "reason: first") {
		t.Fatalf("apply: code %d out %q err %q", code, out, errs)
	}
	evs := configEvents(t, l)
	if len(evs) != 1 {
		t.Fatalf("%d config_applied events, want 1", len(evs))
	}
	e := evs[0]
	d := e.Data.(events.ConfigApplied)
	want, err := config.Load(demo)
	if err != nil {
		t.Fatal(err)
	}
	wantHash, _ := want.Hash()
	got, err := config.FromJSON(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	gotHash, _ := got.Hash()
	if d.Hash != wantHash || gotHash != wantHash || d.File != demo || d.By != "alice" || e.Source != "/vmguard/cli/alice" || e.Subject != "demo" {
		t.Errorf("event: source %s subject %s data %+v", e.Source, e.Subject, d)
	}

	// The same configuration again: nothing is appended.
	code, out, _ = runCLI("apply", "--nats", url, "-f", demo)
	if code != exitOK || !strings.HasPrefix(out, fmt.Sprintf("unchanged: the configuration in force (seq %d)", e.Seq)) {
		t.Errorf("re-apply: code %d out %q", code, out)
	}
	if n := len(configEvents(t, l)); n != 1 {
		t.Errorf("re-apply appended: %d events", n)
	}

	// A changed file is applied.
	changed := filepath.Join(t.TempDir(), "demo.yaml")
	src, _ := os.ReadFile(demo)
	if err := os.WriteFile(changed, []byte(strings.Replace(string(src), "restart: 3", "restart: 4", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := runCLI("apply", "--nats", url, "-f", changed); code != exitOK || !strings.HasPrefix(out, "applied:") {
		t.Errorf("changed: code %d out %q err %q", code, out, errs)
	}
	if n := len(configEvents(t, l)); n != 2 {
		t.Errorf("after a change: %d events, want 2", n)
	}

	// An invalid file is refused before anything is written.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("cluster: demo\nnodes: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runCLI("apply", "--nats", url, "-f", bad); code != exitError || !strings.Contains(errs, bad+":2: nodes: missing") {
		t.Errorf("bad file: code %d err %q", code, errs)
	}
	if n := len(configEvents(t, l)); n != 2 {
		t.Errorf("a bad file was applied: %d events", n)
	}
}

func parseDemo(t *testing.T, restart int) *config.Cluster {
	t.Helper()
	src, err := os.ReadFile("../../examples/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse("demo.yaml", []byte(strings.Replace(string(src), "restart: 3", fmt.Sprintf("restart: %d", restart), 1)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestApplyStaleLoses: two operators read the same configuration in force;
// the first apply wins, the second is told the config changed.
func TestApplyStaleLoses(t *testing.T) {
	ctx := context.Background()
	l, _ := testLog(t)
	if _, err := applyConfig(ctx, l, parseDemo(t, 1), "a.yaml", "alice", ""); err != nil {
		t.Fatal(err)
	}
	alice, err := readInForce(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	bob := alice
	won, err := appendConfig(ctx, l, parseDemo(t, 2), "a.yaml", "alice", "", alice)
	if err != nil {
		t.Fatalf("first apply: %v", err)
	}
	_, err = appendConfig(ctx, l, parseDemo(t, 3), "b.yaml", "bob", "", bob)
	if !errors.Is(err, events.ErrConflict) {
		t.Fatalf("stale apply: %v, want a conflict", err)
	}
	want := fmt.Sprintf("apply b.yaml: the config changed since you read it (seq %d); check and apply again", won.seq)
	if err.Error() != want {
		t.Errorf("message %q, want %q", err.Error(), want)
	}
	evs := configEvents(t, l)
	if len(evs) != 2 || evs[1].Seq != won.seq {
		t.Errorf("log: %d config events", len(evs))
	}
	// Even a stale apply of the very configuration in force is no conflict.
	if res, err := appendConfig(ctx, l, parseDemo(t, 2), "b.yaml", "bob", "", inForce{seq: won.seq, hash: won.hash}); err != nil || !res.unchanged {
		t.Errorf("identical: %+v %v", res, err)
	}
}

// TestApplyConcurrent runs applies of different configurations at once:
// each one either wins or is told of the conflict, and the log holds
// exactly the winners.
func TestApplyConcurrent(t *testing.T) {
	ctx := context.Background()
	l, _ := testLog(t)
	const n = 8
	cfgs := make([]*config.Cluster, n)
	for i := range cfgs {
		cfgs[i] = parseDemo(t, i+1)
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	results := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, results[i] = applyConfig(ctx, l, cfgs[i], fmt.Sprintf("%d.yaml", i), "op", "")
		}()
	}
	close(start)
	wg.Wait()
	wins := 0
	for i, err := range results {
		switch {
		case err == nil:
			wins++
		case errors.Is(err, events.ErrConflict) && strings.Contains(err.Error(), "the config changed since you read it"):
		default:
			t.Errorf("apply %d: %v", i, err)
		}
	}
	if wins == 0 {
		t.Error("no apply won")
	}
	if got := len(configEvents(t, l)); got != wins {
		t.Errorf("%d config events for %d winners", got, wins)
	}
}

// TestApplyLargeConfig: a configuration of 3,000 packages (over the
// 1 MB a message holds) is applied, stored in parts, read back whole as the
// one in force (apply again: unchanged; status: every package), and a
// change to it is applied on top.
func TestApplyLargeConfig(t *testing.T) {
	l, url := testLog(t)
	gen := benchScaleCmd{Nodes: 50, Packages: 3000, Candidates: 3, NodeTimeout: 20 * time.Second}
	file := filepath.Join(t.TempDir(), "large.yaml")
	if err := os.WriteFile(file, []byte(gen.scaleConfig()), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI("apply", "--nats", url, "-f", file)
	if code != exitOK || !strings.HasPrefix(out, "applied: cluster scale, 50 nodes, 3000 packages") {
		t.Fatalf("apply: code %d out %q err %q", code, out, errs)
	}
	evs := configEvents(t, l)
	if len(evs) != 1 {
		t.Fatalf("%d config_applied events, want 1", len(evs))
	}
	d := evs[0].Data.(events.ConfigApplied)
	if len(d.Config) <= events.MaxEventSize {
		t.Fatalf("the configuration takes %d bytes, want more than one message (%d)", len(d.Config), events.MaxEventSize)
	}
	if evs[0].Seq < 2 { // the first event of the log: its sequence counts its parts
		t.Fatalf("%d bytes stored in %d message(s), want parts", len(d.Config), evs[0].Seq)
	}
	t.Logf("%d packages: %d bytes of configuration in %d parts", gen.Packages, len(d.Config), evs[0].Seq)
	code, out, _ = runCLI("apply", "--nats", url, "-f", file)
	if code != exitOK || !strings.HasPrefix(out, fmt.Sprintf("unchanged: the configuration in force (seq %d)", evs[0].Seq)) {
		t.Fatalf("re-apply: code %d out %q", code, out)
	}
	code, out, errs = runCLI("status", "--nats", url)
	if code != exitOK || !strings.Contains(out, "p02999") {
		t.Fatalf("status: code %d err %q, the last package missing from %d bytes of output", code, errs, len(out))
	}
	src, _ := os.ReadFile(file)
	if err := os.WriteFile(file, []byte(strings.Replace(string(src), "guest_timeout: 10s", "guest_timeout: 12s", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := runCLI("apply", "--nats", url, "-f", file); code != exitOK || !strings.HasPrefix(out, "applied:") {
		t.Fatalf("changed: code %d out %q err %q", code, out, errs)
	}
	if n := len(configEvents(t, l)); n != 2 {
		t.Fatalf("after a change: %d events, want 2", n)
	}
}

// TestApplyRefusesTypeChange: `vmguard apply` refuses a configuration that
// changes the package_type of a package that still occupies a node, naming
// the package, its types, its nodes and the fix, and appends nothing; once
// the package is halted the same file is applied. Both ways: multi_node to
// failover and back.
func TestApplyRefusesTypeChange(t *testing.T) {
	ctx := context.Background()
	l, url := testLog(t)
	dir := t.TempDir()
	const base = "cluster: tc\nnodes: [node1, node2]\npackages:\n  - name: web\n%s    nodes: [node1, node2]\n" +
		"    guest: {name: webvm, driver: process}\n    services:\n      - name: s\n        cmd: [\"true\"]\n"
	multi, single := filepath.Join(dir, "multi.yaml"), filepath.Join(dir, "failover.yaml")
	for f, typ := range map[string]string{multi: "    package_type: multi_node\n", single: ""} {
		if err := os.WriteFile(f, fmt.Appendf(nil, base, typ), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	add := func(subject string, d events.Payload) {
		t.Helper()
		if _, err := l.Append(ctx, events.New(eventstest.SourceOf(d, subject), subject, d)); err != nil {
			t.Fatalf("append %T: %v", d, err)
		}
	}
	apply := func(f string, wantOK bool, wantErr ...string) {
		t.Helper()
		before := len(configEvents(t, l))
		code, out, errs := runCLI("apply", "--nats", url, "-f", f, "--by", "alice")
		after := len(configEvents(t, l))
		if wantOK {
			if code != exitOK || !strings.HasPrefix(out, "applied:") || after != before+1 {
				t.Fatalf("apply %s: code %d out %q err %q, %d -> %d configs", filepath.Base(f), code, out, errs, before, after)
			}
			return
		}
		if code != exitError || out != "" || after != before {
			t.Fatalf("apply %s: code %d out %q err %q, %d -> %d configs; want a refusal", filepath.Base(f), code, out, errs, before, after)
		}
		for _, w := range wantErr {
			if !strings.Contains(errs, w) {
				t.Errorf("apply %s: stderr %q lacks %q", filepath.Base(f), errs, w)
			}
		}
	}

	apply(multi, true)
	add("node1", events.NodeJoined{})
	add("node2", events.NodeJoined{})
	add("web", events.PackagePlaced{Node: "node1", Epoch: 1, Reason: "auto_run"})
	add("web", events.PackageStarted{Node: "node1", Epoch: 1})
	add("web", events.PackagePlaced{Node: "node2", Epoch: 2, Reason: "auto_run"})
	apply(single, false, "refused", "web: runs as multi_node on node1, node2; "+single+" makes it failover",
		"`vmguard pkg halt web`", "`vmguard pkg run web`")
	add("web", events.PackageHalting{Epoch: 0, Reason: "operator_halt", By: "alice"})
	add("web", events.PackageHalted{Node: "node1", Epoch: 1, Reason: "operator_halt"})
	// node2's instance is still halting.
	apply(single, false, "web: runs as multi_node on node2;")
	add("web", events.PackageHalted{Node: "node2", Epoch: 2, Reason: "operator_halt"})
	apply(single, true)

	// And back: a failover placement, running, then halting, is refused.
	add("web", events.PackagePlaced{Node: "node2", Epoch: 3, Reason: "operator_run", By: "alice"})
	add("web", events.PackageStarted{Node: "node2", Epoch: 3})
	apply(multi, false, "web: runs as failover on node2; "+multi+" makes it multi_node")
	add("web", events.PackageHalting{Node: "node2", Epoch: 3, Reason: "operator_halt", By: "alice"})
	apply(multi, false, "web: runs as failover on node2;")
	add("web", events.PackageHalted{Node: "node2", Epoch: 3, Reason: "operator_halt"})
	apply(multi, true)
}
