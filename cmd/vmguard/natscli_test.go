package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"

	"github.com/vmguard/vmguard/events"
)

// natsCLI returns the real `nats` CLI as a command: natscli v0.5.0, pinned as
// a Go tool of the separate tools module (tools/go.mod), so that its large
// dependency tree stays out of vmguard's own build graph. It runs as
// `go tool nats` in that module's directory.
func natsCLI(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "tools"))
	if err != nil {
		t.Fatalf("find the tools module: %v", err)
	}
	cmd := exec.Command("go", append([]string{"tool", "nats"}, args...)...)
	cmd.Dir = dir
	return cmd
}

// TestNatsCLIReadsValidCloudEvents runs the real `nats` CLI (natscli v0.5.0,
// pinned in the tools module) against the server and checks that what it
// reads from the stream is a valid structured CloudEvent.
func TestNatsCLIReadsValidCloudEvents(t *testing.T) {
	ctx := context.Background()
	l, url := testLog(t)
	exited := events.New("/vmguard/guests/webvm/agent", "web", events.ProcessExited{
		Guest: "webvm", Service: "httpd", PID: 42, ExitCode: 3, RuntimeMS: 12, RequestID: "req-1", Epoch: 1,
		Output: []string{"oops"},
	})
	exited.CauseID = "req-1"
	seq, err := l.Append(ctx, exited)
	if err != nil {
		t.Fatal(err)
	}

	cmd := natsCLI(t, "--server", url, "stream", "get", events.StreamName, fmt.Sprint(seq), "--json")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go tool nats stream get: %v\n%s%s", err, out, stderr)
	}
	var stored struct {
		Subject string `json:"subject"`
		Seq     uint64 `json:"seq"`
		Hdrs    []byte `json:"hdrs"`
		Data    []byte `json:"data"`
	}
	if err := json.Unmarshal(out, &stored); err != nil {
		t.Fatalf("parse nats output: %v\n%s", err, out)
	}
	if stored.Subject != "vmguard.events.pkg.web.process.exited" || stored.Seq != seq {
		t.Errorf("nats read subject %q seq %d", stored.Subject, stored.Seq)
	}
	if h := string(stored.Hdrs); !strings.Contains(h, "Content-Type: application/cloudevents+json") || !strings.Contains(h, "Nats-Msg-Id: "+exited.ID) {
		t.Errorf("headers as nats shows them: %q", h)
	}
	// The body alone is a valid CloudEvent by the CloudEvents SDK ...
	var ce cloudevents.Event
	if err := json.Unmarshal(stored.Data, &ce); err != nil {
		t.Fatalf("body is not a CloudEvent: %v\n%s", err, stored.Data)
	}
	if err := ce.Validate(); err != nil {
		t.Fatalf("CloudEvent invalid: %v", err)
	}
	if ce.Type() != events.TypeProcessExited || ce.ID() != exited.ID || ce.Subject() != "web" || ce.Extensions()["causeid"] != "req-1" {
		t.Errorf("CloudEvent attributes: %s", ce.String())
	}
	// ... and decodes to the same event with its schema checked.
	got, err := l.Codec().Decode(nil, stored.Data)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != exited.ID || got.Data.(events.ProcessExited).ExitCode != 3 {
		t.Errorf("decoded: %#v", got)
	}
}
