//go:build !race

package sim

// defaultSeeds is how many seeds TestSim runs by default (see race_test.go).
const defaultSeeds = 150

const raceEnabled = false
