package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/examples"
)

// testdata/demo-log.jsonl is a real log of `vmguard up` on the demo
// (`vmguard events -o json`): web's flaky service restarted twice and
// failed on node1, then on node2, and web moved on to node3.

// TestSimulateSameConfig: replayed under the configuration it ran with, the
// recorded log's answers are the cores' answers, every one.
func TestSimulateSameConfig(t *testing.T) {
	evs, err := readRecorded(filepath.Join("testdata", "demo-log.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := config.Parse(examples.DemoName, examples.Demo)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := simulate(evs, cl, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) < 5 {
		t.Fatalf("%d events answered, want the exits and failures of the demo", len(rows))
	}
	for _, r := range rows {
		if r.Differ {
			t.Errorf("#%d %s: recorded %q, the cores say %q", r.Trigger.Seq, events.ShortType(r.Trigger.Type()), answer(r.Recorded), answer(r.Simulated))
		}
	}
}

// TestSimulateRestartChange runs `vmguard simulate` with flaky's restart:
// 2 raised to 5: each third exit that failed the service is restarted
// instead, each earlier restart has more restarts left, and nothing but
// exits is answered differently.
func TestSimulateRestartChange(t *testing.T) {
	changed := strings.Replace(string(examples.Demo), "restart: 2", "restart: 5", 1)
	if changed == string(examples.Demo) {
		t.Fatal("the demo config has no 'restart: 2' any more; update the test")
	}
	file := filepath.Join(t.TempDir(), "new.yaml")
	if err := os.WriteFile(file, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"simulate", "-f", file, "--log", filepath.Join("testdata", "demo-log.jsonl")}, &out, &errb); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	t.Log("\n" + out.String())
	blocks := strings.Split(out.String(), "\n\n")[1:]
	failedNow := 0
	for _, b := range blocks {
		lines := strings.Split(strings.TrimSpace(b), "\n")
		if len(lines) != 3 || !strings.Contains(lines[0], "process.exited") {
			t.Errorf("a difference that is not an exit's answer:\n%s", b)
			continue
		}
		rec, sim := lines[1], lines[2]
		switch {
		case strings.Contains(rec, "service.failed") && strings.Contains(sim, "service.restarting") && strings.Contains(sim, "attempt=3 restarts_left=2"):
			failedNow++
		case strings.Contains(rec, "service.restarting") && strings.Contains(sim, "service.restarting"):
		default:
			t.Errorf("unexpected difference:\n%s", b)
		}
	}
	if failedNow != 2 {
		t.Errorf("%d failures restarted instead under restart: 5, want 2 (node1's and node2's)", failedNow)
	}
	if !strings.Contains(out.String(), "answered differently") {
		t.Errorf("no summary line:\n%s", out.String())
	}
}
