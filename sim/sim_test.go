package sim

import (
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"
)

var (
	seedsFlag = flag.Int("seeds", defaultSeeds, "how many seeds TestSim runs")
	seedFlag  = flag.Uint64("seed", 0, "run only this seed, tracing it")
	stepsFlag = flag.Int("steps", 0, "scheduler steps with faults per seed (0: Options default)")
)

// TestSim runs -seeds seeds (from 1, or only -seed) with faults and checks
// every safety promise after each step and liveness at the end.
func TestSim(t *testing.T) {
	first, n := uint64(1), uint64(*seedsFlag)
	if *seedFlag > 0 {
		first, n = *seedFlag, 1
	}
	for seed := first; seed < first+n; seed++ {
		opt := Options{Seed: seed, Steps: *stepsFlag}
		var trace []string
		if *seedFlag > 0 {
			opt.Trace = func(s string) { trace = append(trace, s) }
		}
		r := Run(opt)
		t.Log(r.Summary())
		for _, k := range r.Known {
			t.Logf("  known (docs/sim.md): %s", k)
		}
		if !r.OK() {
			t.Errorf("%s\n%s\n%s\nreplay: go test ./sim -run 'TestSim$' -seed %d -v", r.Summary(), fmtViolations(r), strings.Join(r.Faults, "\n"), seed)
		}
		if len(trace) > 0 {
			t.Log(strings.Join(trace, "\n"))
		}
	}
}

func fmtViolations(r Result) string {
	var b strings.Builder
	for _, v := range r.Violations {
		fmt.Fprintf(&b, "  violation: %s\n", v)
	}
	for _, l := range r.Liveness {
		fmt.Fprintf(&b, "  liveness: %s\n", l)
	}
	return b.String()
}

// TestReplay: a seed replays to the same event sequence (the same hash),
// and another seed does not. Seed 12 has an operator's placement, appended
// with its marker.
func TestReplay(t *testing.T) {
	for _, seed := range []uint64{1, 7, 12, 42} {
		a, b := Run(Options{Seed: seed, Steps: 3000}), Run(Options{Seed: seed, Steps: 3000})
		if a.Hash != b.Hash || a.Events != b.Events || a.Steps != b.Steps || strings.Join(a.Faults, "\n") != strings.Join(b.Faults, "\n") {
			t.Errorf("seed %d ran twice differs:\n%s\n%s", seed, a.Summary(), b.Summary())
		}
		if a.Events < 20 || len(a.Faults) == 0 {
			t.Errorf("seed %d did little: %s", seed, a.Summary())
		}
		if c := Run(Options{Seed: seed + 1000, Steps: 3000}); c.Hash == a.Hash {
			t.Errorf("seeds %d and %d gave the same hash %s", seed, seed+1000, a.Hash)
		}
	}
}

// TestMutations: each planted bug is found, as a violation of no known
// class, within a bounded number of seeds.
func TestMutations(t *testing.T) {
	if raceEnabled {
		t.Skip("single-threaded: nothing for the race detector; the plain run covers it")
	}
	const bound = 150
	for _, m := range Mutations {
		t.Run(string(m), func(t *testing.T) {
			for seed := uint64(1); seed <= bound; seed++ {
				r := Run(Options{Seed: seed, Mutation: m})
				if len(r.Violations) > 0 {
					t.Logf("found by seed %d of %d: %s\n  %s", seed, bound, r.Summary(), r.Violations[0])
					if base := Run(Options{Seed: seed}); len(base.Violations) > 0 {
						t.Errorf("seed %d breaks a promise without the mutation too: %s", seed, base.Violations[0])
					}
					return
				}
			}
			t.Errorf("mutation %s not found within %d seeds", m, bound)
		})
	}
}

// TestShrink: a planted bug's failing seed shrinks to a shorter fault
// schedule that still breaks the same promise, and replays.
func TestShrink(t *testing.T) {
	if raceEnabled {
		t.Skip("single-threaded: nothing for the race detector; the plain run covers it")
	}
	var opt Options
	var r Result
	for seed := uint64(1); seed <= 60; seed++ {
		opt = Options{Seed: seed, Mutation: MutationResetRestarts}
		if r = Run(opt); len(r.Violations) > 0 && len(r.Faults) > 2 {
			break
		}
	}
	if len(r.Violations) == 0 {
		t.Fatal("no failing seed to shrink")
	}
	small, sr := Shrink(opt, 200)
	t.Logf("seed %d: %d faults -> %d: %s\n%s", opt.Seed, len(r.Faults), len(sr.Faults), sr.Violations[0], strings.Join(sr.Faults, "\n"))
	if len(sr.Violations) == 0 || sr.Violations[0].Rule != r.Violations[0].Rule || len(sr.Faults) >= len(r.Faults) {
		t.Fatalf("shrunk: %s, from %s", sr.Summary(), r.Summary())
	}
	if again := Run(small); again.Hash != sr.Hash {
		t.Errorf("the shrunk schedule does not replay: %s vs %s", again.Hash, sr.Hash)
	}
}

// findingSeeds are the seeds that showed each fixed finding (docs/sim.md,
// "Findings"): those of the current fault schedule first, then those of
// earlier builds (their schedules differ now; they still must run clean).
var findingSeeds = map[Finding][]uint64{
	FindingActBeforeLoss:    {1784, 180},
	FindingPlaceOnLostNode:  {721, 1201, 2108, 226, 2914, 3556},
	FindingStaleLoss:        {480},
	FindingHaltOnHaltedNode: {82},
}

// depFindingSeeds are the seeds that showed a fixed finding with
// dependencies on (Options.Dependencies; docs/sim.md, "Dependencies").
var depFindingSeeds = map[Finding][]uint64{
	FindingDeposedPlacement: {2661},
}

// fixCase is a planted bug that undoes a fix and a seed of the current
// fault schedule after which it breaks a promise again (with the grace
// given, 0: Grace).
type fixCase struct {
	m        Mutation
	seed     uint64
	grace    time.Duration
	deps     bool // Options.Dependencies
	packages int  // Options.Packages (0: the default)
}

// fixCases are the witnesses of TestFixMutations. halt_on_halted_node
// needs the grace of `vmguard verify` (10 s): with the simulator's 30 s, a
// node down at most 20 s is back before the halt's bound runs out.
var fixCases = []fixCase{
	{MutationSkipLeaseRecord, 464, 0, false, 0},
	// Session 9: seed 1481 (with dependencies) no longer reached the race
	// already at 08b87bc, before the placement markers (this test skips
	// under -race and CI ran only -race then); no seed below 3,000 of the
	// 4-package schedules did, with or without dependencies. With 8
	// packages seed 556 does.
	{MutationStartVoid, 556, 0, false, 8},
	{MutationUpOnlyLeases, 227, 10 * time.Second, true, 0},
	{MutationNoMarkers, 1464, 0, true, 0},
}

// TestFixMutations: undoing the fix of a finding (in the model) makes a
// seed that showed the finding break a promise again, as a violation: the
// finding is not tolerated, and the seed still reaches the race.
func TestFixMutations(t *testing.T) {
	if raceEnabled {
		t.Skip("single-threaded: nothing for the race detector; the plain run covers it")
	}
	covered := map[Mutation]bool{}
	for _, c := range fixCases {
		covered[c.m] = true
		r := Run(Options{Seed: c.seed, Mutation: c.m, Grace: c.grace, Dependencies: c.deps, Packages: c.packages})
		if len(r.Violations) == 0 {
			t.Errorf("%s, seed %d: no violation: %s", c.m, c.seed, r.Summary())
			continue
		}
		t.Logf("%s, seed %d: %s", c.m, c.seed, r.Violations[0])
		if base := Run(Options{Seed: c.seed, Grace: c.grace, Dependencies: c.deps, Packages: c.packages}); !base.OK() {
			t.Errorf("seed %d (grace %v) breaks a promise without %s too: %s\n%s", c.seed, c.grace, c.m, base.Summary(), fmtViolations(base))
		}
	}
	for _, m := range FixMutations {
		if !covered[m] {
			t.Errorf("no witness seed for %s", m)
		}
	}
}

// TestFindingSeeds: every seed that showed one of the fixed findings keeps
// every promise now, with no violation tolerated.
func TestFindingSeeds(t *testing.T) {
	if raceEnabled {
		t.Skip("single-threaded: nothing for the race detector; the plain run covers it")
	}
	for f, seeds := range findingSeeds {
		for _, seed := range seeds {
			r := Run(Options{Seed: seed})
			if !r.OK() || len(r.Known) > 0 {
				t.Errorf("%s, seed %d: %s\n%s\nreplay: go test ./sim -run 'TestSim$' -seed %d -v", f, seed, r.Summary(), fmtViolations(r), seed)
			}
		}
	}
	for f, seeds := range depFindingSeeds {
		for _, seed := range seeds {
			r := Run(Options{Seed: seed, Dependencies: true})
			if !r.OK() || len(r.Known) > 0 {
				t.Errorf("%s, seed %d (dependencies): %s\n%s\nreplay: go test ./sim -run TestSimDependencies -seed %d -v", f, seed, r.Summary(), fmtViolations(r), seed)
			}
		}
	}
}

var depSeedsFlag = flag.Int("dep-seeds", 20, "how many seeds TestSimDependencies runs (seeds 64, 992 and 2485, findings 11, 13 and 14 of docs/sim.md, run too)")

// TestSimDependencies runs seeds with packages linked by dependencies (an
// up dependency and an exclusion with priorities), checking every promise,
// exclusion included, after each step and liveness at the end.
func TestSimDependencies(t *testing.T) {
	// A lost append reply, a dependency's stop that waited for its bound,
	// and a timer that fired before its time by a stepped-back clock
	// (docs/sim.md, findings 11, 13 and 14).
	seeds := []uint64{64, 992, 2485}
	for seed := uint64(1); seed <= uint64(*depSeedsFlag); seed++ {
		seeds = append(seeds, seed)
	}
	if *seedFlag > 0 {
		seeds = []uint64{*seedFlag}
	}
	for _, seed := range seeds {
		opt := Options{Seed: seed, Dependencies: true, Steps: *stepsFlag}
		if *seedFlag > 0 {
			opt.Trace = func(s string) { t.Log(s) }
		}
		r := Run(opt)
		t.Log(r.Summary())
		if !r.OK() {
			t.Errorf("%s\n%s\n%s\nreplay: Options{Seed: %d, Dependencies: true}", r.Summary(), fmtViolations(r), strings.Join(r.Faults, "\n"), seed)
		}
	}
}
