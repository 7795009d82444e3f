package main

import (
	"context"
	"encoding/json"
	"fmt"
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
	s, _, err := foldLog(ctx, l, until, at, false)
	if err != nil {
		return err
	}
	v := failover.BuildView(s)
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
	_, err := l.Replay(ctx, events.ReadOptions{}, func(e events.Event) error {
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
	chain := failover.Explain(evs, c.Package)
	if len(chain) == 0 {
		fmt.Fprintf(g.Stdout, "package %s has no recorded placement yet\n", c.Package)
		return nil
	}
	return failover.WriteChain(g.Stdout, chain)
}
