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
// time comes from events, and the runner around it owns every piece of I/O.
// The core returns events without ID and Time; the runner stamps them
// (events.Stamp) and appends each with State.Expect.
//
// Runner is `vmguard failover`: it follows the log (a standby is always
// warm), takes part in a leader election (KV bucket vmguard_failover), and
// as leader appends what Decide and Reconcile return, records node.lost for
// a node whose lease (internal/lease) has expired, and writes snapshots of
// its State (KV bucket vmguard_snapshots) so that a cold start reads only
// the end of the log. Every decision is guarded by the expected-sequence
// check, so two controllers deciding at once cannot both place a package.
package failover
