package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/failover"
	"github.com/vmguard/vmguard/hostmanager"
	"github.com/vmguard/vmguard/internal/termtext"
)

type simulateCmd struct {
	File string `name:"file" short:"f" required:"" type:"existingfile" placeholder:"new.yaml" help:"The changed cluster configuration to try."`
	Log  string `name:"log" type:"existingfile" placeholder:"FILE" help:"A recorded log (vmguard events -o json > FILE; one CloudEvent a line, sequence = line number) instead of the live one."`
	From uint64 `name:"from" help:"Compare from this sequence on (the state before it is folded all the same)."`
	To   uint64 `name:"to" help:"Compare up to this sequence (default: the end)."`
	All  bool   `name:"all" short:"a" help:"Show every event the cores answer, not only those answered differently."`
}

// Help is shown by `vmguard simulate --help`.
func (c *simulateCmd) Help() string {
	return `What-if for a policy change before you apply it: replays the log's real
history through the pure cores of the host manager and the failover
controller with the configuration of -f in force instead of the recorded
one, and shows, side by side, each event whose answer would differ: what
was decided, and what would have been.

It compares one step at a time: at each event the state is the real
history's (with the new configuration), so after the first difference it
shows what the new policy would decide given what really happened next,
not a whole alternative future. Node losses (decided from leases, not from
events) are taken as recorded.

Example:
  vmguard events -o json > recorded.jsonl
  vmguard simulate -f new.yaml --log recorded.jsonl      # restart: 2 -> 5`
}

// Run folds the log with the new configuration and prints the differences.
func (c *simulateCmd) Run(ctx context.Context, g *globals) error {
	if c.To > 0 && c.To < c.From {
		return fmt.Errorf("%w: --to %d is before --from %d", errUsage, c.To, c.From)
	}
	cl, err := loadConfigFile(g, c.File)
	if err != nil {
		return err
	}
	var evs []events.Event
	if c.Log != "" {
		if evs, err = readRecorded(c.Log); err != nil {
			return err
		}
	} else {
		l, closeConn, err := openLog(ctx, g, "vmguard simulate")
		if err != nil {
			return err
		}
		defer closeConn()
		if _, evs, err = foldLog(ctx, l, 0, time.Time{}, true); err != nil {
			return err
		}
	}
	rows, err := simulate(evs, cl, c.From, c.To)
	if err != nil {
		return err
	}
	return writeSimulation(g.Stdout, rows, c.File, c.All)
}

// readRecorded reads `vmguard events -o json` output: one CloudEvent a line,
// its sequence its line number.
func readRecorded(path string) ([]events.Event, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read recorded log: %w", err)
	}
	codec, err := events.NewCodec()
	if err != nil {
		return nil, err
	}
	var evs []events.Event
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 2<<20)
	var seq uint64
	for sc.Scan() {
		seq++
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		e, err := codec.Decode(nil, sc.Bytes())
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, seq, err)
		}
		e.Seq = seq
		evs = append(evs, e)
	}
	return evs, sc.Err()
}

// simRow is one event the cores answer, with the answers recorded in the
// log (its direct effects: events whose causeid is its id) and the ones
// they give under the new configuration.
type simRow struct {
	Trigger   events.Event
	Recorded  []events.Event
	Simulated []events.Event
	Differ    bool
}

// simulate replays evs with every cluster.config_applied carrying cl
// instead, and at each event in [from, to] asks the host manager core of
// every node and the failover core what they decide about it. Pure.
func simulate(evs []events.Event, cl *config.Cluster, from, to uint64) ([]simRow, error) {
	body, err := cl.JSON()
	if err != nil {
		return nil, fmt.Errorf("encode the new configuration: %w", err)
	}
	hash, err := cl.Hash()
	if err != nil {
		return nil, fmt.Errorf("hash the new configuration: %w", err)
	}
	effects := map[string][]events.Event{}
	for _, e := range evs {
		if e.CauseID != "" {
			effects[e.CauseID] = append(effects[e.CauseID], e)
		}
	}
	nodes := slices.Clone(cl.Nodes)
	hosts := map[string]*hostmanager.State{}
	for _, n := range nodes {
		hosts[n] = hostmanager.NewState(n)
	}
	fs := &failover.State{}
	var rows []simRow
	for _, e := range evs {
		se := e
		if d, ok := e.Data.(events.ConfigApplied); ok {
			d.Config, d.Hash = body, hash
			se.Data = d
		}
		for _, n := range nodes {
			hosts[n].Apply(se)
		}
		fs.Apply(se)
		if e.Seq < from || (to > 0 && e.Seq > to) {
			continue
		}
		if !isObservation(e) {
			continue
		}
		var sim []events.Event
		for _, n := range nodes {
			st := hosts[n]
			for _, pkg := range hostmanager.Affected(st, se) {
				if d, ok := hostmanager.Decide(st, pkg); ok && d.CauseID == e.ID {
					sim = append(sim, d)
				}
			}
		}
		for _, d := range failover.Decide(fs, se) {
			if d.CauseID == e.ID {
				sim = append(sim, d)
			}
		}
		var rec []events.Event
		for _, d := range effects[e.ID] {
			if isDecision(d) {
				rec = append(rec, d)
			}
		}
		if len(rec) == 0 && len(sim) == 0 {
			continue
		}
		rows = append(rows, simRow{Trigger: e, Recorded: rec, Simulated: sim, Differ: answer(rec) != answer(sim)})
	}
	return rows, nil
}

// isObservation reports whether e is what simulate replays the decisions
// of: an exit, a guest's or node's loss, a failed package (the failover
// core's trigger), or an operator's command (an event with a by). Startup
// and shutdown are left out: there the runners, not the cores, hold
// decisions back (waiting for a primary node to join, halting for a stop).
func isObservation(e events.Event) bool {
	switch e.Data.(type) {
	case events.ProcessExited, events.GuestLost, events.NodeLost, events.NodeFenced, events.PackageFailed:
		return true
	case events.ConfigApplied:
		return false // the change itself
	}
	v := reflect.ValueOf(e.Data)
	if v.Kind() != reflect.Struct {
		return false
	}
	by := v.FieldByName("By")
	return by.IsValid() && by.Kind() == reflect.String && by.String() != ""
}

// isDecision reports whether e is of a type the host manager or failover
// core decides (the rest are observations: exits, heartbeats, reports).
func isDecision(e events.Event) bool {
	switch e.Data.(type) {
	case events.ServiceRestarting, events.ServiceFailed, events.PackagePlaced, events.PackageStarting,
		events.PackageHalting, events.PackageFailed, events.PackageStarted, events.PackageHalted:
		return true
	}
	return false
}

// answer is what a list of decisions says, independent of ids and times.
func answer(evs []events.Event) string {
	var parts []string
	for _, e := range evs {
		parts = append(parts, e.Subject+" "+events.ShortType(e.Type())+" "+e.Summary())
	}
	slices.Sort(parts)
	return strings.Join(parts, "\n")
}

// writeSimulation prints the rows that differ (all with all).
func writeSimulation(w io.Writer, rows []simRow, file string, all bool) error {
	n := 0
	for _, r := range rows {
		if r.Differ {
			n++
		}
	}
	fmt.Fprintf(w, "vmguard simulate: %s: %d events answered, %d answered differently\n", termtext.Escape(file), len(rows), n)
	list := func(evs []events.Event) string {
		if len(evs) == 0 {
			return "(nothing)"
		}
		var s []string
		for _, e := range evs {
			s = append(s, termtext.Escape(e.Subject+" "+events.ShortType(e.Type())+" "+e.Summary()))
		}
		return strings.Join(s, "; ")
	}
	for _, r := range rows {
		if !r.Differ && !all {
			continue
		}
		mark := "  "
		if r.Differ {
			mark = "* "
		}
		fmt.Fprintf(w, "\n%s%s\n", mark, r.Trigger.Line())
		fmt.Fprintf(w, "    recorded: %s\n", list(r.Recorded))
		if _, err := fmt.Fprintf(w, "    new:      %s\n", list(r.Simulated)); err != nil {
			return err
		}
	}
	return nil
}
