package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/failover"
)

type applyCmd struct {
	File   string `name:"file" short:"f" required:"" placeholder:"cluster.yaml" help:"Cluster configuration to put in force."`
	Reason string `name:"reason" help:"Why the configuration changes; recorded in the event."`
	By     string `name:"by" help:"Who applies it (default: the current user)."`
}

// Run validates the file and records it as the configuration in force
// (cmapplyconf): a cluster.config_applied event, appended only if no other
// configuration was applied since this command read the one in force.
func (c *applyCmd) Run(ctx context.Context, g *globals) error {
	cl, err := loadConfigFile(g, c.File)
	if err != nil {
		return err
	}
	l, closeConn, err := openLog(ctx, g, "vmguard apply")
	if err != nil {
		return err
	}
	defer closeConn()
	by := c.By
	if by == "" {
		by = currentUser()
	}
	res, err := applyConfig(ctx, l, cl, c.File, by, c.Reason)
	if err != nil {
		return err
	}
	if res.unchanged {
		fmt.Fprintf(g.Stdout, "unchanged: the configuration in force (seq %d) is already this one (hash %s); nothing applied\n", res.seq, short(res.hash))
		return nil
	}
	fmt.Fprintf(g.Stdout, "applied: cluster %s, %s, hash %s (seq %d)", cl.Cluster, configSummary(cl), short(res.hash), res.seq)
	if c.Reason != "" {
		fmt.Fprintf(g.Stdout, ", reason: %s", c.Reason)
	}
	fmt.Fprintln(g.Stdout)
	return nil
}

func short(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return hash
}

// currentUser names who runs the command, for the event's by and source.
func currentUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "unknown"
}

// configSubject is where every cluster.config_applied is stored.
var configSubject = events.ClusterSubject("config_applied")

// inForce is the configuration the log has in force.
type inForce struct {
	seq  uint64 // stream sequence of its config_applied, 0 if none
	hash string
	tail uint64 // of the last message on the config subject, malformed or not
}

// applyResult says what applyConfig did.
type applyResult struct {
	seq       uint64 // of the new config_applied, or of the one in force if unchanged
	hash      string
	unchanged bool
}

// readInForce returns the configuration in force: the last config_applied.
func readInForce(ctx context.Context, l *events.Log) (inForce, error) {
	t, err := l.Tail(ctx, configSubject)
	if err != nil || !t.Found {
		return inForce{tail: t.Seq}, err
	}
	d, _ := t.Event.Data.(events.ConfigApplied)
	return inForce{seq: t.Event.Seq, hash: d.Hash, tail: t.Seq}, nil
}

// applyConfig reads the configuration in force and, unless it has the same
// hash, appends cl as the new one. It refuses cl if it changes the
// package_type of a package that is not halted (typeChangeError).
func applyConfig(ctx context.Context, l *events.Log, cl *config.Cluster, file, by, reason string) (applyResult, error) {
	cur, err := readInForce(ctx, l)
	if err != nil {
		return applyResult{}, fmt.Errorf("read the configuration in force: %w", err)
	}
	if cur.tail > 0 {
		s, _, err := foldLog(ctx, l, 0, time.Time{}, false)
		if err != nil {
			return applyResult{}, fmt.Errorf("read the log: %w", err)
		}
		if tc := s.TypeChanges(cl); len(tc) > 0 {
			return applyResult{}, &typeChangeError{file: file, changes: tc}
		}
	}
	return appendConfig(ctx, l, cl, file, by, reason, cur)
}

// typeChangeError refuses a configuration that changes the package_type of
// packages that still occupy a node (failover.TypeChanges): halt them
// first, as Serviceguard's cmapplyconf requires (design-notes §8).
type typeChangeError struct {
	file    string
	changes []failover.TypeChange
}

func (e *typeChangeError) Error() string {
	var b strings.Builder
	what := "a package that is not halted"
	if len(e.changes) > 1 {
		what = fmt.Sprintf("%d packages that are not halted", len(e.changes))
	}
	fmt.Fprintf(&b, "apply %s: refused: it changes the package_type of %s:", e.file, what)
	var names []string
	for _, c := range e.changes {
		fmt.Fprintf(&b, "\n  %s: runs as %s on %s; %s makes it %s", c.Package, c.From, strings.Join(c.Nodes, ", "), e.file, c.To)
		names = append(names, c.Package)
	}
	fmt.Fprintf(&b, "\nhalt it first (`vmguard pkg halt %s`), wait until `vmguard status` shows it halted, apply again, then `vmguard pkg run %s`",
		strings.Join(names, "`, `vmguard pkg halt "), strings.Join(names, "`, `vmguard pkg run "))
	return b.String()
}

// appendConfig appends cl as the configuration in force, expecting cur to be
// the one in force; if another was applied since, it fails with a
// conflictError (errors.Is events.ErrConflict).
func appendConfig(ctx context.Context, l *events.Log, cl *config.Cluster, file, by, reason string, cur inForce) (applyResult, error) {
	hash, err := cl.Hash()
	if err != nil {
		return applyResult{}, err
	}
	if cur.seq > 0 && cur.hash == hash {
		return applyResult{seq: cur.seq, hash: hash, unchanged: true}, nil
	}
	body, err := cl.JSON()
	if err != nil {
		return applyResult{}, err
	}
	e := events.New(events.OperatorSource(url.PathEscape(by)), cl.Cluster, events.ConfigApplied{Config: body, Hash: hash, File: file, By: by, Reason: reason})
	seq, err := l.Append(ctx, e, events.ExpectLastSeq(configSubject, cur.tail))
	if errors.Is(err, events.ErrConflict) {
		now, rerr := readInForce(ctx, l)
		if rerr != nil {
			now = cur
		}
		return applyResult{}, &conflictError{file: file, seq: now.seq}
	}
	if err != nil {
		return applyResult{}, fmt.Errorf("apply %s: %w", file, err)
	}
	return applyResult{seq: seq, hash: hash}, nil
}

// conflictError reports that another configuration was applied between
// reading the one in force and appending.
type conflictError struct {
	file string
	seq  uint64 // of the configuration now in force
}

func (e *conflictError) Error() string {
	return fmt.Sprintf("apply %s: the config changed since you read it (seq %d); check and apply again", e.file, e.seq)
}

func (e *conflictError) Unwrap() error { return events.ErrConflict }
