// Package failover owns placement: which node each package runs on, under
// which epoch, and why.
//
// Its pure core folds the whole event log into a State (State.Apply, Fold,
// FoldUntil) and decides from it: Decide answers one event the runner has
// just applied, Reconcile lists everything due now, and State.Command checks
// and turns an operator command into events. BuildView and Explain turn a
// State and the log into what `vmguard status` and `vmguard explain` print.
//
// The core must not call time.Now, the network, os/exec, rand or a logger:
// time comes from events, and the runner around it (which consumes the log,
// appends decisions with the expected-sequence check and elects a leader)
// owns every piece of I/O. The core returns events without ID and Time; the
// runner stamps them (events.Stamp) and appends each with State.Expect.
package failover
