// Package sim is vmguard's deterministic simulator: a whole cluster (nodes,
// packages, guests and their services, host managers, failover
// controllers) run single-threaded on simulated time against a simulated
// log, with faults drawn from a seed, the safety invariants of `vmguard
// verify` checked as it goes, and every run replayable from its seed.
//
// log.go is the simulated JetStream: the stream (ordering, expected last
// subject sequence, message-id dedup window, reads, consumers with
// redelivery) and the key-value bucket (revisions, create/update with
// revision, TTL), with the semantics written down there and held to the
// real engine by conformance_test.go, which runs one suite against both.
//
// The package must not be imported by production code, and it never reads
// the wall clock, the network or a random source other than its seed.
package sim
