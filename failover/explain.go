package failover

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/internal/termtext"
)

// Explain returns why package pkg is where it is, as chains of causes, newest
// first: the event that set its current state (its latest placement, or the
// failure, halt, reset or node loss that took it down), then the event its
// CauseID names, and so on back to a root cause (an event without a cause,
// or whose cause is not in evs). When that chain does not pass through the
// current placement, the placement's own chain follows. nil if the package
// was never placed nor taken down. Fold evs up to a sequence first to
// explain a past moment.
//
// For a multi-node package it is the chain of the instance whose phase the
// package shows; ExplainInstances has each instance's.
func Explain(evs []events.Event, pkg string) []events.Event {
	p := Fold(evs).Packages[pkg]
	if p == nil {
		return nil
	}
	return explain(byID(evs), p)
}

// ExplainInstances returns, for a multi-node package, each instance's chain
// of causes (Explain's, for that node's placements), by node; nil for a
// failover package or one never placed.
func ExplainInstances(evs []events.Event, pkg string) map[string][]events.Event {
	p := Fold(evs).Packages[pkg]
	if p == nil || len(p.Instances) == 0 {
		return nil
	}
	ids := byID(evs)
	out := make(map[string][]events.Event, len(p.Instances))
	for node, in := range p.Instances {
		if chain := explain(ids, in); len(chain) > 0 {
			out[node] = chain
		}
	}
	return out
}

// explain is Explain's chain for p (a package, or an instance).
func explain(ids map[string]events.Event, p *PackageState) []events.Event {
	if p.StateID == "" {
		return nil
	}
	out := Chain(ids, p.StateID)
	if p.PlacedID != "" && !slices.ContainsFunc(out, func(e events.Event) bool { return e.ID == p.PlacedID }) {
		out = append(out, Chain(ids, p.PlacedID)...)
	}
	return out
}

// byID indexes evs by id, the first of each id.
func byID(evs []events.Event) map[string]events.Event {
	out := make(map[string]events.Event, len(evs))
	for _, e := range evs {
		if _, dup := out[e.ID]; e.ID != "" && !dup {
			out[e.ID] = e
		}
	}
	return out
}

// Chain returns the event with id and its causes, following CauseID through
// byID until an event has no cause, its cause is unknown, or a cause repeats.
// A cause that is a run request id of an initial start, "<guest.started
// id>/<service>", leads to that guest.started.
func Chain(byID map[string]events.Event, id string) []events.Event {
	var out []events.Event
	seen := map[string]bool{}
	for id != "" && !seen[id] {
		e, ok := byID[id]
		if !ok {
			req, _, cut := strings.Cut(id, "/")
			if e, ok = byID[req]; !cut || !ok || seen[req] {
				break
			}
			id = req
		}
		seen[id] = true
		out = append(out, e)
		id = e.CauseID
	}
	return out
}

// WriteChain writes the events Explain returned, one a line: the first
// event, then each cause after "<-"; a chain that starts afresh (the
// previous event did not name it) is introduced by "placed by:". Control
// characters are escaped (termtext.Escape).
func WriteChain(w io.Writer, chain []events.Event) error {
	bw := bufio.NewWriter(w)
	for i, e := range chain {
		prefix := ""
		if i > 0 {
			if c := chain[i-1].CauseID; c == e.ID || strings.HasPrefix(c, e.ID+"/") {
				prefix = "  <- "
			} else {
				fmt.Fprintf(bw, "placed by:\n")
			}
		}
		about := e.Subject
		if sc, _ := events.ScopeOf(e.Type()); sc == events.ScopeNode {
			about = "node/" + about
		} else if sc == events.ScopeCluster {
			about = "cluster"
		}
		facts := e.Summary()
		if facts != "" {
			facts += " "
		}
		line := fmt.Sprintf("%s#%d %s %s %s %s[%s]", prefix, e.Seq, e.Time.UTC().Format(time.RFC3339Nano),
			about, events.ShortType(e.Type()), facts, e.Source)
		bw.WriteString(termtext.Escape(line) + "\n") // source and facts come from outside

	}
	return bw.Flush()
}
