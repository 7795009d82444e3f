package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/failover"
	"github.com/vmguard/vmguard/internal/termtext"
)

type statusCmd struct {
	Verbose bool   `name:"verbose" short:"v" help:"Show policies, each node of each package and each service (cmviewcl -v)."`
	Output  string `name:"output" short:"o" enum:"text,json" default:"text" help:"text or json."`
	At      string `name:"at" help:"Show the state as it was at a stream sequence (a number) or a time (RFC 3339, or a duration ago like 10m)."`
}

// Run folds the log (up to --at) and prints the cluster's state.
func (c *statusCmd) Run(ctx context.Context, g *globals) error {
	until, at, err := parseAt(c.At, time.Now())
	if err != nil {
		return fmt.Errorf("%w: --at: %v", errUsage, err)
	}
	l, closeConn, err := openLog(ctx, g, "vmguard status")
	if err != nil {
		return err
	}
	defer closeConn()
	var last uint64
	if c.At != "" {
		if last, err = l.LastSeq(ctx); err != nil {
			return err
		}
		switch {
		case until > last:
			return fmt.Errorf("%w: --at %d: the log ends at seq %d", errUsage, until, last)
		case !at.IsZero() && at.After(time.Now()):
			return fmt.Errorf("%w: --at %s: that is in the future (now %s)", errUsage, c.At, time.Now().Local().Format(time.DateTime))
		}
	}
	s, evs, err := foldLog(ctx, l, until, at, c.At != "")
	if err != nil {
		return err
	}
	if c.At != "" {
		seq := until
		if !at.IsZero() {
			seq = failover.SeqAt(evs, at)
		}
		if seq == 0 {
			first := "the log is empty"
			if len(evs) > 0 {
				first = fmt.Sprintf("its first event, seq %d, was written %s", evs[0].Seq, evs[0].Time.Local().Format(time.DateTime))
			}
			return fmt.Errorf("%w: --at %s: before anything was recorded (%s)", errUsage, c.At, first)
		}
		// Name the moment shown: the last event at or before it.
		var when time.Time
		for _, e := range evs {
			if e.Seq <= seq {
				when = e.Time
			}
		}
		note := fmt.Sprintf("state at seq %d of %d, written %s (--at %s)", seq, last, when.Local().Format("2006-01-02 15:04:05.000"), c.At)
		if c.Output == "json" {
			fmt.Fprintln(g.Stderr, "vmguard status: "+note)
		} else {
			fmt.Fprintln(g.Stdout, "# "+note)
		}
	}
	v := failover.BuildView(s)
	if c.At == "" {
		noteNoController(ctx, l, &v)
	}
	if c.Output == "json" {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("encode status: %w", err)
		}
		_, err = g.Stdout.Write(append(termtext.JSON(b), '\n'))
		return err
	}
	return v.WriteText(g.Stdout, c.Verbose)
}

// parseAt reads --at: a sequence number, an RFC 3339 time or a duration ago.
func parseAt(s string, now time.Time) (uint64, time.Time, error) {
	if s == "" {
		return 0, time.Time{}, nil
	}
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		if n == 0 {
			return 0, time.Time{}, fmt.Errorf("sequence numbers start at 1")
		}
		return n, time.Time{}, nil
	}
	t, err := parseSince(s, now)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("%q is neither a sequence number, a duration (10m) nor an RFC 3339 time", s)
	}
	return 0, t, nil
}

// foldLog replays the log into a failover State, up to sequence until or
// time at when set, and, when keep is set, returns the events too.
func foldLog(ctx context.Context, l *events.Log, until uint64, at time.Time, keep bool) (*failover.State, []events.Event, error) {
	var evs []events.Event
	if !at.IsZero() {
		// The moment's sequence needs the writers' times: read everything first.
		keep = true
	}
	s := &failover.State{}
	_, err := l.Replay(ctx, events.ReadOptions{ClusterWait: operatorReadWait}, func(e events.Event) error {
		if until > 0 && e.Seq > until {
			return nil
		}
		if keep {
			evs = append(evs, e)
		}
		if at.IsZero() {
			s.Apply(e)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if !at.IsZero() {
		s = failover.FoldUntil(evs, failover.SeqAt(evs, at))
	}
	return s, evs, nil
}

type explainCmd struct {
	Package string `arg:"" name:"package" help:"The package to explain."`
}

// Run prints the chain of causes that put the package where it is.
func (c *explainCmd) Run(ctx context.Context, g *globals) error {
	if err := events.CheckName("package", c.Package); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	l, closeConn, err := openLog(ctx, g, "vmguard explain")
	if err != nil {
		return err
	}
	defer closeConn()
	s, evs, err := foldLog(ctx, l, 0, time.Time{}, true)
	if err != nil {
		return err
	}
	if s.Config != nil {
		if _, ok := s.Config.Package(c.Package); !ok && s.Package(c.Package) == nil {
			return fmt.Errorf("unknown package %q", c.Package)
		}
	}
	if chains := failover.ExplainInstances(evs, c.Package); len(chains) > 0 {
		// A multi-node package: each instance's chain, by node.
		for _, node := range slices.Sorted(maps.Keys(chains)) {
			fmt.Fprintf(g.Stdout, "instance on %s:\n", node)
			if err := failover.WriteChain(g.Stdout, chains[node]); err != nil {
				return err
			}
		}
		return nil
	}
	chain := failover.Explain(evs, c.Package)
	if len(chain) == 0 {
		fmt.Fprintf(g.Stdout, "package %s has no recorded placement yet\n", c.Package)
		return nil
	}
	if err := failover.WriteChain(g.Stdout, chain); err != nil {
		return err
	}
	if p := s.Package(c.Package); p != nil && p.Phase.Owned() {
		// What holds the package where it is, beyond the chain: its node's
		// drain or freeze.
		if h := s.Node(p.Node).Hold(); h != "" {
			fmt.Fprintf(g.Stdout, "node %s: %s\n", p.Node, termtext.Escape(h))
		}
	}
	return nil
}

// noteNoController says so where a placement is due but no failover
// controller leads to make it: "placement due" alone would wait forever.
func noteNoController(ctx context.Context, l *events.Log, v *failover.View) {
	due := false
	for _, p := range v.Packages {
		due = due || p.Note == failover.NotePlacementDue
	}
	if !due {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, ok, err := failover.CurrentLeader(cctx, l.JetStream()); err != nil || ok {
		return
	}
	for i := range v.Packages {
		if v.Packages[i].Note == failover.NotePlacementDue {
			v.Packages[i].Note += ", but no failover controller is running: start `vmguard failover`"
		}
	}
}
