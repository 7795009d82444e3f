package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/vmguard/vmguard/events"
)

// noControl fails t if out holds a byte a terminal would act on: anything
// but printable UTF-8, spaces and newlines.
func noControl(t *testing.T, what, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Errorf("%s: output is not valid UTF-8: %q", what, out)
	}
	for _, r := range out {
		if r != '\n' && r != ' ' && !unicode.IsPrint(r) {
			t.Errorf("%s: output holds %U:\n%s", what, r, out)
			return
		}
	}
}

// TestReadersSurviveMalformedAndEscape: malformed messages published by hand
// (on the config subject and a package's) neither fail `apply` nor end
// `events -o json`; guest-supplied text with an escape sequence and invalid
// UTF-8 is printed escaped by status, events and explain.
func TestReadersSurviveMalformedAndEscape(t *testing.T) {
	ctx := context.Background()
	l, url := testLog(t)
	js := l.JetStream()
	cli := func(args ...string) (int, string, string) {
		return runCLI(append([]string{"--nats", url}, args...)...)
	}
	if code, out, errs := cli("apply", "-f", "../../examples/demo.yaml"); code != exitOK {
		t.Fatalf("apply: %d %s %s", code, out, errs)
	}
	// A broken config_applied after the good one: the config in force is
	// still the good one, and a new apply must not conflict with the junk.
	if _, err := js.Publish(ctx, configSubject, []byte(`{"specversion":"1.0","id":"junk"`)); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := cli("apply", "-f", "../../examples/demo.yaml"); code != exitOK || !strings.Contains(out, "unchanged") {
		t.Fatalf("apply of the same config after a malformed config_applied: code %d, out %q, err %q", code, out, errs)
	}

	// web placed, then failed with a reason a guest's output made: an escape
	// sequence that would clear the screen, a title change, invalid UTF-8.
	placed, err := l.Append(ctx, events.New("/vmguard/failover", "web", events.PackagePlaced{Node: "node1", Epoch: 1, Reason: "initial\x1b[2J"}))
	if err != nil {
		t.Fatal(err)
	}
	placedEv, err := l.Get(ctx, placed)
	if err != nil {
		t.Fatal(err)
	}
	evil := `{"specversion":"1.0","id":"evil-1","source":"/vmguard/nodes/node1/host","type":"` + events.TypePackageFailed +
		`","subject":"web","time":"2026-11-27T10:00:00Z","causeid":"` + placedEv.ID + `","data":{"node":"node1","epoch":1,"reason":"start: \u001b[2J\u001b]0;pwned\u0007 ` + "\xff\xfe" + `\u009b31m"}}`
	if _, err := js.Publish(ctx, "vmguard.events.pkg.web.package.failed", []byte(evil)); err != nil {
		t.Fatal(err)
	}
	for _, junk := range []string{`not json`, `{"specversion":"0"}`, string(smuggled())} {
		if _, err := js.Publish(ctx, "vmguard.events.pkg.web.package.failed", []byte(junk)); err != nil {
			t.Fatal(err)
		}
	}

	if _, err := l.Codec().DecodeStored("vmguard.events.pkg.web.package.failed", nil, []byte(evil)); err != nil {
		t.Fatalf("the evil event does not decode: %v", err)
	}
	code, out, errs := cli("events", "-o", "json")
	if code != exitOK || !strings.Contains(errs, "skipped 4 malformed events") {
		t.Fatalf("events -o json: code %d, stderr %q", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 { // config_applied, placed, failed
		t.Fatalf("events -o json printed %d lines, want 3:\n%s", len(lines), out)
	}
	for _, ln := range lines {
		if !json.Valid([]byte(ln)) {
			t.Errorf("not JSON: %q", ln)
		}
	}
	noControl(t, "events -o json", out)

	code, out, _ = cli("status", "-o", "json")
	if code != exitOK || !json.Valid([]byte(out)) || !strings.Contains(out, `\u009b31m`) {
		t.Errorf("status -o json: code %d\n%s", code, out)
	}
	noControl(t, "status -o json", out)
	for _, args := range [][]string{{"events"}, {"status", "-v"}, {"explain", "web"}} {
		code, out, errs := cli(args...)
		if code != exitOK {
			t.Fatalf("%v: code %d, stderr %q", args, code, errs)
		}
		noControl(t, strings.Join(args, " "), out)
		if !strings.Contains(out, `\x1b[2J`) {
			t.Errorf("%v: the escape sequence is not shown escaped:\n%s", args, out)
		}
	}
	_, out, _ = cli("status", "-v")
	if !strings.Contains(out, `Down: start: \x1b[2J\x1b]0;pwned\x07 `+"\ufffd\ufffd"+`\u009b31m`) {
		t.Errorf("status -v does not show the failure reason escaped:\n%s", out)
	}
}

// smuggled is a package.failed whose second, upper-case node member would
// pass the schema check unchecked.
func smuggled() []byte {
	return []byte(`{"specversion":"1.0","id":"s1","source":"/vmguard/nodes/node1/host","type":"` + events.TypePackageFailed +
		`","subject":"web","time":"2026-11-27T10:00:00Z","data":{"node":"node1","epoch":1,"reason":"ok","NODE":"a.b c"}}`)
}
