package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/cesink"
	"github.com/vmguard/vmguard/internal/termtext"
)

type eventsCmd struct {
	Package string `name:"package" short:"p" help:"Only events about this package."`
	Node    string `name:"node" short:"n" help:"Only events about this node."`
	Since   string `name:"since" help:"Start at a time: a duration ago (10m) or an RFC 3339 time."`
	From    uint64 `name:"from" help:"Start at this stream sequence."`
	Follow  bool   `name:"follow" short:"f" help:"Keep printing new events as they arrive."`
	Output  string `name:"output" short:"o" enum:"text,json" default:"text" help:"text: one line per event; json: the raw CloudEvent, one per line."`

	Sink    string `name:"sink" placeholder:"URL" help:"With -f: deliver each event, in order and at least once (its id for dedup), to this CloudEvents HTTP receiver, resuming after a restart from a durable consumer; prints each event delivered."`
	Durable string `name:"durable" placeholder:"NAME" help:"Name of --sink's durable consumer (default: sink_ and a hash of the URL and filters); the same name resumes where the last run left."`
}

// Run prints the timeline.
func (c *eventsCmd) Run(ctx context.Context, g *globals) error {
	ro := events.ReadOptions{StartSeq: c.From, ClusterWait: operatorReadWait}
	if c.Sink != "" && !c.Follow {
		return fmt.Errorf("%w: --sink needs -f (it runs until stopped)", errUsage)
	}
	if c.Durable != "" && c.Sink == "" {
		return fmt.Errorf("%w: --durable is for --sink", errUsage)
	}
	if c.Package != "" {
		if err := events.CheckName("--package", c.Package); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		ro.Subjects = append(ro.Subjects, events.PackageFilter(c.Package))
	}
	if c.Node != "" {
		if err := events.CheckName("--node", c.Node); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		ro.Subjects = append(ro.Subjects, events.NodeFilter(c.Node))
	}
	if c.Since != "" {
		t, err := parseSince(c.Since, time.Now())
		if err != nil {
			return fmt.Errorf("%w: --since: %v", errUsage, err)
		}
		ro.StartTime = t
	}
	l, closeConn, err := openLog(ctx, g, "vmguard events")
	if err != nil {
		return err
	}
	defer closeConn()
	if err := checkKnown(ctx, l, c.Package, c.Node); err != nil {
		return err
	}
	print := func(e events.Event) error { return printEvent(g.Stdout, g.Stderr, l, e, c.Output) }
	if c.Sink != "" {
		return c.forward(ctx, g, l, ro, print)
	}
	if c.Follow {
		return l.Follow(ctx, ro, print)
	}
	var n int // malformed messages in the range read (l.Skipped counts every read)
	ro.OnSkip = func(uint64, string) { n++ }
	_, err = l.Replay(ctx, ro, print)
	if n > 0 {
		fmt.Fprintf(g.Stderr, "vmguard events: skipped %d malformed events (see the log of the writer)\n", n)
	}
	return err
}

// parseSince reads "10m" (ago) or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q is negative", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (10m) nor an RFC 3339 time", s)
	}
	return t, nil
}

// printEvent writes one event to w, as a timeline line or as JSON. An event
// that does not encode again (it decoded, so it should) is reported on
// errw and skipped: one bad event does not end the listing.
func printEvent(w, errw io.Writer, l *events.Log, e events.Event, output string) error {
	if output == "json" {
		m, err := l.Codec().Encode(e)
		if err != nil {
			fmt.Fprintf(errw, "vmguard events: skip event %d: %s\n", e.Seq, termtext.Escape(err.Error()))
			return nil
		}
		_, err = fmt.Fprintf(w, "%s\n", termtext.JSON(m.Data))
		return err
	}
	_, err := fmt.Fprintln(w, formatEvent(e))
	return err
}

// formatEvent renders one timeline line (events.Event.Line).
func formatEvent(e events.Event) string { return e.Line() }

// checkKnown refuses a package or node that is neither in the configuration
// in force nor in the log, so that a typo is an error, not an empty timeline.
// A name with history (a package since removed from the config) is known.
func checkKnown(ctx context.Context, l *events.Log, pkg, node string) error {
	e, ok, err := l.Last(ctx, configSubject)
	if err != nil || !ok {
		return err // no config yet: every name may be about to appear
	}
	d, ok := e.Data.(events.ConfigApplied)
	if !ok {
		return nil
	}
	cl, err := config.FromJSON(d.Config)
	if err != nil {
		return nil
	}
	if pkg != "" {
		if _, ok := cl.Package(pkg); !ok {
			if n, err := countSubject(ctx, l, events.PackageFilter(pkg)); err != nil || n == 0 {
				names := make([]string, 0, len(cl.Packages))
				for _, p := range cl.Packages {
					names = append(names, p.Name)
				}
				return fmt.Errorf("%w: unknown package %q: not in the configuration in force (packages: %s) and nothing about it in the log", errUsage, pkg, strings.Join(names, ", "))
			}
		}
	}
	if node != "" && !cl.HasNode(node) {
		if n, err := countSubject(ctx, l, events.NodeFilter(node)); err != nil || n == 0 {
			return fmt.Errorf("%w: unknown node %q: not in the configuration in force (nodes: %s) and nothing about it in the log", errUsage, node, strings.Join(cl.Nodes, ", "))
		}
	}
	return nil
}

// countSubject returns how many events the log holds on a subject filter.
func countSubject(ctx context.Context, l *events.Log, filter string) (uint64, error) {
	st, err := l.JetStream().Stream(ctx, events.StreamName)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n, nil
}

// forward runs --sink: every event matching ro to a CloudEvents receiver.
func (c *eventsCmd) forward(ctx context.Context, g *globals, l *events.Log, ro events.ReadOptions, print func(events.Event) error) error {
	u, err := url.Parse(c.Sink)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: --sink %q: want an http:// or https:// URL", errUsage, c.Sink)
	}
	durable := c.Durable
	if durable == "" {
		h := sha256.Sum256([]byte(strings.Join(append([]string{c.Sink}, ro.Subjects...), "\x00")))
		durable = "sink_" + hex.EncodeToString(h[:6])
	}
	if err := events.CheckName("--durable", durable); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	f, err := cesink.New(cesink.Config{
		Log: l, Target: c.Sink, Durable: durable, Subjects: ro.Subjects, StartSeq: ro.StartSeq, StartTime: ro.StartTime,
		Logger:      slog.New(slog.NewTextHandler(g.Stderr, nil)),
		OnDelivered: func(e events.Event) { _ = print(e) },
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(g.Stderr, "vmguard events: delivering to %s (durable consumer %s; the same --durable resumes)\n", termtext.Escape(c.Sink), durable)
	return f.Run(ctx)
}
