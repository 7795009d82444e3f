//go:build race

package sim

// defaultSeeds is how many seeds TestSim runs by default: fewer under the
// race detector, which makes the single-threaded simulation ~10x slower
// and has nothing to find in it; the CI's plain run covers more.
const defaultSeeds = 10

// raceEnabled skips the tests that run a hundred seeds (TestMutations,
// TestShrink): the simulation runs on one goroutine, so the race detector
// has nothing to find in them, and the plain run covers them.
const raceEnabled = true
