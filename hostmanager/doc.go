// Package hostmanager owns what one node's host manager (`vmguard host
// --node N`) decides: starting the packages placed on its node (guest first,
// then each service through the guest agent), restarting services within
// their policy, restarting or giving up on lost guests, and halting packages
// (operator halt, a move elsewhere, a failure, fencing).
//
// The core is pure and level-triggered. State is folded from the event log
// (Apply); Decide says which event to append next for a package, and Pending
// says which actions (start or stop a guest, run or stop a service) the log
// asks for and does not yet show done. Both are functions of the state
// alone, so a runner that was killed at any point rebuilds the state from
// the log and finishes what its predecessor decided: a decision already
// appended is not made twice, and an action is repeated only with the same
// run request id, which the guest agent deduplicates.
//
// The core never reads a clock, the network, a process table or a random
// source, and never logs: time comes from event Time fields (restart windows
// from exit times, restart delays from the decision's time).
//
// A runner drives it like this (one goroutine per node, events in stream
// order from one consumer of vmguard.events.>):
//
//	for each event e read from the log:
//		if !st.Apply(e) { continue }              // duplicate, replayed, or applied already
//	pkgs:
//		for _, pkg := range hostmanager.Affected(st, e) {
//			for {                                     // append decisions one at a time
//				d, ok := hostmanager.Decide(st, pkg)
//				if !ok { break }
//				d = events.Stamp(d, now)
//				seq, err := log.Append(ctx, d, st.Expect(pkg))
//				if errors.Is(err, events.ErrConflict) {
//					continue pkgs                     // a newer event is on its way: decide again then
//				}
//				d.Seq = seq
//				st.Apply(d)                               // safe: nothing about pkg lies between
//			}
//			for _, a := range hostmanager.Pending(st, pkg) {
//				start a unless an action with a.Key() is in flight
//			}
//		}
//
// A RunService with a NotBefore in the future is started by a timer, which
// first checks that Pending still lists it (a halt may have come meanwhile).
// Results of actions are facts, appended without an expected sequence and
// applied when they come back from the log: Action.GuestStarted and
// Action.GuestStopped build them. Runs and stops of services are reported by
// the guest agent (process.started, process.exited).
package hostmanager
