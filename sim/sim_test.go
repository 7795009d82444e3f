package sim

import (
	"flag"
	"fmt"
	"strings"
	"testing"
)

var (
	seedsFlag = flag.Int("seeds", 20, "how many seeds TestSim runs")
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
