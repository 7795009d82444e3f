package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/failover"
)

// operatorOpts are the options every operator command shares.
type operatorOpts struct {
	Reason string `name:"reason" help:"Why; recorded in the event."`
	By     string `name:"by" help:"Who asks (default: the current user)."`
}

func (o operatorOpts) who() string {
	if o.By != "" {
		return o.By
	}
	return currentUser()
}

type pkgCmd struct {
	Run     pkgRunCmd    `cmd:"" help:"Start a halted package (cmrunpkg), on NODE or where failover_policy says."`
	Halt    pkgHaltCmd   `cmd:"" help:"Halt a package (cmhaltpkg); also disables its auto_run."`
	Enable  pkgSwitchCmd `cmd:"" help:"Enable package switching (auto_run), or node switching with -n (cmmodpkg -e)."`
	Disable pkgSwitchCmd `cmd:"" help:"Disable package switching (auto_run), or node switching with -n (cmmodpkg -d)."`
	Move    pkgMoveCmd   `cmd:"" help:"Move a running package to NODE."`
	Reset   pkgResetCmd  `cmd:"" help:"Reset restart counters (of -s SERVICE or all), failed nodes and the failed state (cmmodpkg -R)."`
}

type pkgRunCmd struct {
	Package string `arg:"" help:"Package."`
	Node    string `name:"node" short:"n" help:"Node to run it on."`
	operatorOpts
}

type pkgHaltCmd struct {
	Package string `arg:"" help:"Package."`
	operatorOpts
}

type pkgSwitchCmd struct {
	Package string `arg:"" help:"Package."`
	Node    string `name:"node" short:"n" help:"Change node switching on this node instead of package switching."`
	operatorOpts
}

type pkgMoveCmd struct {
	Package string `arg:"" help:"Package."`
	Node    string `name:"node" short:"n" required:"" help:"Node to move it to."`
	operatorOpts
}

type pkgResetCmd struct {
	Package string `arg:"" help:"Package."`
	Service string `name:"service" short:"s" help:"Reset only this service's restart counter."`
	operatorOpts
}

// Run carries out `pkg run`.
func (c *pkgRunCmd) Run(ctx context.Context, g *globals) error {
	return operate(ctx, g, failover.Command{Op: failover.OpRun, Package: c.Package, Node: c.Node, Reason: c.Reason, By: c.who()})
}

// Run carries out `pkg halt`: the packages that depend on the package
// first (haltInOrder).
func (c *pkgHaltCmd) Run(ctx context.Context, g *globals) error {
	return haltInOrder(ctx, g, failover.Command{Op: failover.OpHalt, Package: c.Package, Reason: c.Reason, By: c.who()})
}

// Run carries out `pkg move`.
func (c *pkgMoveCmd) Run(ctx context.Context, g *globals) error {
	return operate(ctx, g, failover.Command{Op: failover.OpMove, Package: c.Package, Node: c.Node, Reason: c.Reason, By: c.who()})
}

// Run carries out `pkg reset`.
func (c *pkgResetCmd) Run(ctx context.Context, g *globals) error {
	return operate(ctx, g, failover.Command{Op: failover.OpReset, Package: c.Package, Service: c.Service, Reason: c.Reason, By: c.who()})
}

// Run carries out `pkg enable` or `pkg disable`, told apart by kong's path.
func (c *pkgSwitchCmd) Run(ctx context.Context, g *globals, path commandPath) error {
	op := failover.OpDisable
	if strings.HasPrefix(string(path), "pkg enable") {
		op = failover.OpEnable
	}
	return operate(ctx, g, failover.Command{Op: op, Package: c.Package, Node: c.Node, Reason: c.Reason, By: c.who()})
}

type nodeCmd struct {
	Run    nodeOpCmd     `cmd:"" help:"Let a halted or drained node run packages again (cmrunnode)."`
	Halt   nodeOpCmd     `cmd:"" help:"Halt a node: its packages move elsewhere (cmhaltnode)."`
	Drain  nodeOpCmd     `cmd:"" help:"Put a node in maintenance: its packages move elsewhere by their policy, nothing is placed on it until 'node run'."`
	Freeze nodeFreezeCmd `cmd:"" help:"Freeze a node (e.g. to upgrade vmguard): its guests keep running, its guard is disarmed, nothing is decided about it until 'node thaw' or --for ends."`
	Thaw   nodeOpCmd     `cmd:"" help:"End a node's freeze."`
}

type nodeOpCmd struct {
	Node string `arg:"" help:"Node."`
	operatorOpts
}

type nodeFreezeCmd struct {
	Node string        `arg:"" help:"Node."`
	For  time.Duration `name:"for" help:"How long the freeze lasts at most (default 1h); the controller records node.thawed when it ends."`
	operatorOpts
}

// Run carries out `node run`, `node halt`, `node drain` or `node thaw`.
func (c *nodeOpCmd) Run(ctx context.Context, g *globals, path commandPath) error {
	op := failover.OpNodeHalt
	switch {
	case strings.HasPrefix(string(path), "node run"):
		op = failover.OpNodeRun
	case strings.HasPrefix(string(path), "node drain"):
		op = failover.OpNodeDrain
	case strings.HasPrefix(string(path), "node thaw"):
		op = failover.OpNodeThaw
	}
	return operate(ctx, g, failover.Command{Op: op, Node: c.Node, Reason: c.Reason, By: c.who()})
}

// Run carries out `node freeze`.
type resourceCmd struct {
	Set resourceSetCmd `cmd:"" help:"Set a generic resource's status on a node (cmsetresource): up, down, or a whole-number value (an extended resource, up with that value). Monitors call it; packages list the resources they need."`
}

type resourceSetCmd struct {
	Node  string `arg:"" help:"Node."`
	Name  string `arg:"" help:"Resource name (as the packages' resources: list it)."`
	Value string `arg:"" help:"up, down, or a whole number."`
	operatorOpts
}

func (c *resourceSetCmd) Run(ctx context.Context, g *globals) error {
	return operate(ctx, g, failover.Command{Op: failover.OpResourceSet, Node: c.Node, Resource: c.Name, Value: c.Value, Reason: c.Reason, By: c.who()})
}

func (c *nodeFreezeCmd) Run(ctx context.Context, g *globals) error {
	if c.For < 0 {
		return fmt.Errorf("%w: --for %s: want a positive duration", errUsage, c.For)
	}
	return operate(ctx, g, failover.Command{Op: failover.OpNodeFreeze, Node: c.Node, For: c.For, Reason: c.Reason, By: c.who()})
}

// commandPath is the subcommand path kong parsed, e.g. "pkg enable".
type commandPath string

// operate checks an operator command against the log's current state and
// appends its events with the expected-sequence check, re-reading and
// checking again if something changed in between.
func operate(ctx context.Context, g *globals, cmd failover.Command) error {
	if err := checkOperands(cmd); err != nil {
		return err
	}
	l, closeConn, err := openLog(ctx, g, "vmguard operator")
	if err != nil {
		return err
	}
	defer closeConn()
	evs, err := runCommand(ctx, l, cmd)
	if err != nil {
		return err
	}
	printEvents(g, evs)
	return nil
}

// checkOperands refuses, whole, a --reason too long for the schemas and
// names that are not names.
func checkOperands(cmd failover.Command) error {
	// Refused here, whole, rather than cut: the operator's words are kept as
	// written or not at all (room is left for the "operator_move: " prefix).
	if n := utf8.RuneCountInString(cmd.Reason); n > maxReasonFlag || !utf8.ValidString(cmd.Reason) {
		return fmt.Errorf("%w: --reason: %d characters; at most %d, in UTF-8", errUsage, n, maxReasonFlag)
	}
	for _, name := range []struct{ field, v string }{{"package", cmd.Package}, {"--node", cmd.Node}, {"--service", cmd.Service}, {"--by", cmd.By}} {
		if name.v != "" {
			if err := events.CheckName(name.field, name.v); err != nil {
				return fmt.Errorf("%w: %v", errUsage, err)
			}
		}
	}
	return nil
}

// printEvents writes one line per event an operator command appended.
func printEvents(g *globals, evs []events.Event) {
	for _, e := range evs {
		if sum := e.Summary(); sum != "" {
			fmt.Fprintf(g.Stdout, "%s %s: %s\n", events.ShortType(e.Type()), e.Subject, sum)
		} else {
			fmt.Fprintf(g.Stdout, "%s %s\n", events.ShortType(e.Type()), e.Subject)
		}
	}
}

// successorPoll is how often `pkg halt` reads the log while it waits for
// the package's successors to halt.
const successorPoll = 500 * time.Millisecond

// haltInOrder carries out `pkg halt PKG` as Serviceguard halts a package
// that others depend on: it halts PKG's successors (the packages that
// depend on it, directly or not, and run) first, waits until they are down
// or PKG's successor_halt_timeout has passed (then it says so and goes on),
// and halts PKG. The successors are halted by the operator (their auto_run
// off, so that none is placed again while PKG still runs); once PKG is
// halting, auto_run is turned back on for those that had it, so they start
// again, by their dependency, when PKG runs again. A halt the core would
// refuse is refused before anything is written.
func haltInOrder(ctx context.Context, g *globals, cmd failover.Command) error {
	if err := checkOperands(cmd); err != nil {
		return err
	}
	l, closeConn, err := openLog(ctx, g, "vmguard operator")
	if err != nil {
		return err
	}
	defer closeConn()
	s, _, err := foldLog(ctx, l, 0, time.Time{}, false)
	if err != nil {
		return err
	}
	if _, err := s.Command(cmd); err != nil {
		return err
	}
	var back []string // successors whose auto_run is on
	for _, name := range s.ActiveSuccessors(cmd.Package) {
		if s.AutoRunEnabled(name) {
			back = append(back, name)
		}
	}
	first := cmd
	first.Op = failover.OpHaltSuccessors
	evs, err := runCommand(ctx, l, first)
	if err != nil {
		return err
	}
	printEvents(g, evs)
	if len(evs) > 0 {
		var names []string
		for _, e := range evs {
			names = append(names, e.Subject)
		}
		cp, _ := s.Config.Package(cmd.Package)
		if err := waitDown(ctx, g, l, names, cp.SuccessorHalt()); err != nil {
			return err
		}
	}
	evs, err = runCommand(ctx, l, cmd)
	if err != nil {
		return err
	}
	printEvents(g, evs)
	for _, name := range back {
		evs, err := runCommand(ctx, l, failover.Command{Op: failover.OpEnable, Package: name, By: cmd.By,
			Reason: "back when " + cmd.Package + ", which it depends on, runs again"})
		if err != nil {
			return fmt.Errorf("enable %s again: %w", name, err)
		}
		printEvents(g, evs)
	}
	return nil
}

// waitDown polls the log until none of pkgs occupies a node, at most limit;
// past it, it says which are still up and returns nil.
func waitDown(ctx context.Context, g *globals, l *events.Log, pkgs []string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		s, _, err := foldLog(ctx, l, 0, time.Time{}, false)
		if err != nil {
			return err
		}
		if s.Down(pkgs) {
			return nil
		}
		if !time.Now().Before(deadline) {
			fmt.Fprintf(g.Stderr, "vmguard: %s not down within successor_halt_timeout (%s): halting all the same\n", strings.Join(pkgs, ", "), limit)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(successorPoll, time.Until(deadline))):
		}
	}
}

// runCommand is an operator command's round on the log: fold it, let the
// core check the command and turn it into events, and append them guarded by
// the sequences the fold saw. When something else was written in between
// (events.ErrConflict) it reads again and retries, up to five times, and
// returns the events appended.
func runCommand(ctx context.Context, l *events.Log, cmd failover.Command) ([]events.Event, error) {
	const attempts = 5
	for attempt := 1; ; attempt++ {
		s, _, err := foldLog(ctx, l, 0, time.Time{}, false)
		if err != nil {
			return nil, err
		}
		cmd.Now = time.Now()
		evs, err := s.Command(cmd)
		if err != nil {
			return nil, err
		}
		err = appendAll(ctx, l, s, evs)
		if err == nil {
			return evs, nil
		}
		if !errors.Is(err, events.ErrConflict) || attempt == attempts {
			return nil, err
		}
	}
}

// maxReasonFlag is the longest --reason an operator command takes: the
// schemas' limit less room for the code the controller puts before it.
const maxReasonFlag = events.MaxReason - 64

// appendAll stamps and appends evs, each guarded by the state's sequence;
// a placement goes in one atomic batch after its marker (the host manager
// of its node reads the marker, design-notes §10).
func appendAll(ctx context.Context, l *events.Log, s *failover.State, evs []events.Event) error {
	now := time.Now()
	for _, e := range evs {
		e = events.Stamp(e, now)
		var seq uint64
		var err error
		if m, ok := events.PlacementMarker(e); ok {
			var seqs []uint64
			seqs, err = l.AppendBatch(ctx, events.BatchItem{Event: m}, events.BatchItem{Event: e, Opts: []events.AppendOption{s.Expect(e)}})
			if err == nil {
				seq = seqs[1]
			}
		} else {
			seq, err = l.Append(ctx, e, s.Expect(e))
		}
		if err != nil {
			return err
		}
		e.Seq = seq
		s.Apply(e)
	}
	return nil
}
