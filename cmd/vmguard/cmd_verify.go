package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/invariant"
)

type verifyCmd struct {
	From   uint64 `name:"from" help:"Report only problems at or after this stream sequence (the whole log is still read: the rules need its history)."`
	Grace  string `name:"grace" default:"10s" help:"Slack added to every configured bound (start_timeout, halt_timeout, driver timeout)."`
	Output string `name:"output" short:"o" enum:"text,json" default:"text" help:"text: a report; json: the report as one JSON object."`
}

// errViolations is returned when the log breaks a promise (exit 1).
var errViolations = errors.New("the log breaks vmguard's promises")

// Run reads the whole log, checks it and prints the report.
func (c *verifyCmd) Run(ctx context.Context, g *globals) error {
	grace, err := parseGrace(c.Grace)
	if err != nil {
		return fmt.Errorf("%w: --grace: %v", errUsage, err)
	}
	l, closeConn, err := openLog(ctx, g, "vmguard verify")
	if err != nil {
		return err
	}
	defer closeConn()
	var evs []events.Event
	if _, err := l.Replay(ctx, events.ReadOptions{ClusterWait: operatorReadWait}, func(e events.Event) error {
		evs = append(evs, e)
		return nil
	}); err != nil {
		return fmt.Errorf("read log: %w", err)
	}
	r := invariant.Verify(evs, invariant.Options{Grace: grace, From: c.From})
	if err := writeReport(g.Stdout, r, l.Skipped(), c.Output); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if !r.OK() {
		return fmt.Errorf("%w: %d violations", errViolations, len(r.Violations))
	}
	return nil
}

// parseGrace reads --grace: a duration 0 or more.
func parseGrace(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q: want a duration 0 or more (e.g. 10s)", s)
	}
	return d, nil
}

// writeReport prints r as text (one line per violation, open action and
// note) or as one JSON object.
func writeReport(w io.Writer, r invariant.Report, skipped uint64, output string) error {
	if output == "json" {
		out := struct {
			invariant.Report
			OK      bool   `json:"ok"`
			Skipped uint64 `json:"skipped_malformed"`
		}{r, r.OK(), skipped}
		if out.Violations == nil {
			out.Violations = []invariant.Violation{}
		}
		enc := json.NewEncoder(w)
		return enc.Encode(out)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "checked %d events (seq %d..%d)", r.Events, r.FirstSeq, r.LastSeq)
	if skipped > 0 {
		fmt.Fprintf(&b, ", skipped %d malformed", skipped)
	}
	b.WriteString("\n")
	for _, v := range r.Violations {
		fmt.Fprintf(&b, "VIOLATION %s\n", verifyEscape(v.String()))
	}
	for _, o := range r.Open {
		fmt.Fprintf(&b, "open      seq %d %s %s on %s (epoch %d): the log ends before its bound (%s)\n",
			o.Seq, o.Package, o.Type, verifyEscape(o.Node), o.Epoch, o.Deadline.Format("15:04:05.000"))
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note      seq %d %s: %s\n", n.Seq, n.Subject, verifyEscape(n.Message))
	}
	if r.OK() {
		b.WriteString("ok: no violations\n")
	} else {
		fmt.Fprintf(&b, "%d violations\n", len(r.Violations))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// verifyEscape replaces control characters (a guest's text can hold escape
// sequences) with Go escapes, so that a report cannot drive the terminal.
func verifyEscape(s string) string {
	if !strings.ContainsFunc(s, isControl) {
		return s
	}
	q := fmt.Sprintf("%q", s)
	return q[1 : len(q)-1]
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }
