package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/events/eventstest"
)

// copyLog starts a new embedded server and appends evs to its log, in
// order, each changed by doctor first (nil: unchanged; doctor returns false
// to drop an event). It returns the server's URL and the sequence each
// original event got (0 if dropped).
func copyLog(t *testing.T, evs []events.Event, doctor func(i int, e *events.Event) bool) (string, []uint64) {
	t.Helper()
	ctx := context.Background()
	l, url := testLog(t)
	seqs := make([]uint64, len(evs))
	for i, e := range evs {
		e.Seq = 0
		if doctor != nil && !doctor(i, &e) {
			continue
		}
		seq, err := l.Append(ctx, e)
		if err != nil {
			t.Fatalf("copy event %d (%s): %v", i, e.Type(), err)
		}
		seqs[i] = seq
	}
	return url, seqs
}

// verifyCLI runs `vmguard verify` in-process against url.
func verifyCLI(url string, args ...string) (int, string, string) {
	return runCLI(append([]string{"--nats", url, "verify"}, args...)...)
}

// TestVerifyCommand records a small clean history on a real server and
// checks that verify passes it (text and JSON), then copies it to a second
// server with one event doctored, and checks that verify fails naming the
// sequence of the broken promise.
func TestVerifyCommand(t *testing.T) {
	ctx := context.Background()
	l, url := testLog(t)
	if code, out, errs := runCLI("--nats", url, "apply", "-f", "../../examples/demo.yaml"); code != exitOK {
		t.Fatalf("apply: %d %s %s", code, out, errs)
	}
	add := func(subject, cause string, d events.Payload) events.Event {
		t.Helper()
		e := eventstest.New(subject, d)
		e.CauseID = cause
		if _, err := l.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
		return e
	}
	j := add("node1", "", events.NodeJoined{})
	add("node2", "", events.NodeJoined{})
	p1 := add("db", j.ID, events.PackagePlaced{Node: "node1", Epoch: 1, Reason: "auto_run"})
	st := add("db", p1.ID, events.PackageStarting{Node: "node1", Epoch: 1})
	g := add("db", st.ID, events.GuestStarted{Guest: "dbvm", Node: "node1", Epoch: 1})
	ps := add("db", g.ID, events.ProcessStarted{Guest: "dbvm", Service: "store", PID: 7, RequestID: g.ID + "/store", Epoch: 1})
	add("db", ps.ID, events.PackageStarted{Node: "node1", Epoch: 1})
	h := add("db", "", events.PackageHalting{Node: "node1", Epoch: 1, Reason: "maintenance", By: "op"})
	add("db", g.ID+"/store", events.ProcessExited{Guest: "dbvm", Service: "store", PID: 7, ExitCode: -1, Signal: "SIGTERM", RequestID: g.ID + "/store", Epoch: 1, Reason: "stopped"})
	gs := add("db", h.ID, events.GuestStopped{Guest: "dbvm", Node: "node1", Epoch: 1, Reason: "maintenance"})
	halted := add("db", gs.ID, events.PackageHalted{Node: "node1", Epoch: 1, Reason: "maintenance"})
	p2 := add("db", "", events.PackagePlaced{Node: "node2", Epoch: 2, Reason: "operator_move", By: "op"})
	st2 := add("db", p2.ID, events.PackageStarting{Node: "node2", Epoch: 2})
	g2 := add("db", st2.ID, events.GuestStarted{Guest: "dbvm", Node: "node2", Epoch: 2})
	ps2 := add("db", g2.ID, events.ProcessStarted{Guest: "dbvm", Service: "store", PID: 8, RequestID: g2.ID + "/store", Epoch: 2})
	add("db", ps2.ID, events.PackageStarted{Node: "node2", Epoch: 2})

	code, out, errs := verifyCLI(url)
	if code != exitOK || !strings.Contains(out, "ok: no violations") {
		t.Fatalf("verify on a clean log: code %d\n%s%s", code, out, errs)
	}
	code, out, errs = verifyCLI(url, "-o", "json")
	var rep struct {
		OK         bool `json:"ok"`
		Events     int  `json:"events"`
		Violations []struct {
			Seq  uint64 `json:"seq"`
			Rule string `json:"rule"`
		} `json:"violations"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitOK || !rep.OK || rep.Events != 17 || rep.Violations == nil {
		t.Fatalf("verify -o json on a clean log: code %d, err %v, %+v\n%s%s", code, err, rep, out, errs)
	}

	// The doctored copy loses the package.halted: epoch 2 starts on node2
	// while epoch 1 on node1 is not released.
	evs := readLog(t, l)
	url2, seqs := copyLog(t, evs, func(i int, e *events.Event) bool { return e.ID != halted.ID })
	var startingSeq uint64
	for i, e := range evs {
		if e.ID == st2.ID {
			startingSeq = seqs[i]
		}
	}
	code, out, errs = verifyCLI(url2)
	want := fmt.Sprintf("VIOLATION seq %d db package.starting: epoch 2 starts while epoch 1 on node1", startingSeq)
	if code != exitError || !strings.Contains(out, want) || !strings.Contains(errs, "violations") {
		t.Fatalf("verify on the doctored copy: code %d, want %d and %q in\n%s%s", code, exitError, want, out, errs)
	}
	code, out, _ = verifyCLI(url2, "-o", "json")
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitError || rep.OK || len(rep.Violations) == 0 || rep.Violations[0].Seq != startingSeq || rep.Violations[0].Rule != "released_first" {
		t.Fatalf("verify -o json on the doctored copy: code %d, err %v, %+v", code, err, rep)
	}
	// --from past the problem: clean again.
	if code, out, errs := verifyCLI(url2, "--from", fmt.Sprint(seqs[len(seqs)-1])); code != exitOK {
		t.Fatalf("verify --from past the problem: code %d\n%s%s", code, out, errs)
	}
	if code, _, _ := verifyCLI(url2, "--grace", "soon"); code != exitUsage {
		t.Fatalf("verify --grace soon: code %d, want %d", code, exitUsage)
	}
}
