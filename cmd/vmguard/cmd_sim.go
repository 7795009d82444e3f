package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vmguard/vmguard/sim"
)

type simCmd struct {
	Seed     uint64        `name:"seed" default:"1" help:"The seed the run is drawn from: configuration details, faults, delays."`
	Seeds    int           `name:"seeds" default:"1" help:"Run this many seeds, from --seed on."`
	Steps    int           `name:"steps" default:"5000" help:"Scheduler steps with faults per seed; then faults stop and 2 simulated minutes check liveness."`
	Nodes    int           `name:"nodes" default:"3" help:"Nodes of the simulated cluster."`
	Packages int           `name:"packages" default:"4" help:"Packages of the simulated cluster."`
	Mutation string        `name:"mutation" enum:",skip_expect,skip_release,reset_restarts,skip_lease_record,start_void,up_only_leases,no_markers" default:"" help:"Plant a bug around the real runner loops the simulator drives (skip_expect, skip_release, reset_restarts; or undo a fix of a finding: skip_lease_record, start_void, up_only_leases, no_markers)."`
	Grace    time.Duration `name:"grace" default:"30s" help:"Slack added to every configured bound by the invariant check (vmguard verify uses 10s)."`
	Trace    bool          `name:"trace" help:"Print every fault and every appended event."`
	Shrink   bool          `name:"shrink" help:"For a seed that breaks a promise, look for a smaller fault schedule that still breaks it, and print it."`
}

// Help is shown by `vmguard sim --help`.
func (c *simCmd) Help() string {
	return `Deterministic simulation: a whole cluster (host managers and failover
controllers over the real pure cores, guests, a simulated JetStream) run on
simulated time with faults drawn from the seed (crashes, pauses, partitions,
store outages, lost and repeated messages, clock jumps, lying guests,
operator commands), the invariants of 'vmguard verify' checked after every
step and liveness once the faults stop. It prints, per seed, the seed and a
hash of the event sequence: the same seed replays to the same hash.

Example:
  vmguard sim --seed 42 --steps 20000
  vmguard sim --seed 1 --seeds 500
  vmguard sim --seed 1784 --trace         # replay one seed, event by event
  vmguard sim --seed 3 --mutation reset_restarts --shrink`
}

// errSimFailed is returned when a seed breaks a promise (exit 1).
var errSimFailed = errors.New("the simulation broke a promise")

// Run simulates each seed and prints its summary.
func (c *simCmd) Run(ctx context.Context, g *globals) error {
	if c.Seeds < 1 || c.Steps < 1 {
		return fmt.Errorf("%w: --seeds and --steps must be 1 or more", errUsage)
	}
	failed := 0
	for i := range c.Seeds {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		opt := sim.Options{Seed: c.Seed + uint64(i), Steps: c.Steps, Nodes: c.Nodes, Packages: c.Packages, Mutation: sim.Mutation(c.Mutation), Grace: c.Grace}
		if c.Trace {
			opt.Trace = func(s string) { fmt.Fprintln(g.Stdout, s) }
		}
		r := sim.Run(opt)
		fmt.Fprintln(g.Stdout, r.Summary())
		for _, k := range r.Known {
			fmt.Fprintf(g.Stdout, "  known %s\n", k)
		}
		for _, v := range r.Violations {
			fmt.Fprintf(g.Stdout, "  violation: %s\n", v)
		}
		for _, l := range r.Liveness {
			fmt.Fprintf(g.Stdout, "  liveness: %s\n", l)
		}
		if !r.OK() {
			failed++
			if len(r.Faults) > 0 {
				fmt.Fprintf(g.Stdout, "  faults:\n    %s\n", strings.Join(r.Faults, "\n    "))
			}
			if c.Shrink {
				opt.Trace = nil
				_, sr := sim.Shrink(opt, 500)
				fmt.Fprintf(g.Stdout, "  shrunk to %d faults: %s\n    %s\n", len(sr.Faults), sr.Summary(), strings.Join(sr.Faults, "\n    "))
			}
		}
	}
	if failed > 0 {
		return fmt.Errorf("%w: %d of %d seeds", errSimFailed, failed, c.Seeds)
	}
	return nil
}
