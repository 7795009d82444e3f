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
//
// # The runner
//
// Runner (runner.go) is that loop around the core, for `vmguard host
// --node N` and for each node of `vmguard up` (several runners can share
// one *events.Log in one process). It replays the log, then follows it from
// the next sequence; malformed messages advance their package's sequence
// (State.Skip), so an expected-sequence append never conflicts
// forever. It acts only while the node's membership core allows it
// (Member.MayAct, member.go: the lease held, not fenced, not superseded,
// not frozen); it feeds that core the node's events and what it observes of
// the lease, and appends the node.fenced and node.joined the core decides
// (nodework.go). Actions run in goroutines, keyed by Action.Key; results
// come back to the loop, which alone owns the State. The loop's parts, each
// in its own file: the follower (follower.go) reads the log, the executor
// (executor.go) keeps actions by key and the actuator (perform.go)
// performs them, heartbeats (heartbeat.go) tracks the guests' beats, the
// lease keeper (lease.go) holds the node lease and the petter
// (guard_pet.go) pets the node guard (docs/design-notes.md section 3).
//
// Guest drivers (driver.go): "process" runs `vmguard agent --guest G --node
// N` as a child in its own process group that outlives the host manager
// (like a VM) and is found again through its pid file; "exec" runs the
// configured start/stop/status argv templates. A guest counts as started
// when the driver's start succeeded and its agent's first heartbeat (from
// this node) arrived within guest.start_timeout.
//
// The guest monitor (monitor.go) appends guest.lost, once per guest start
// and with the expected-sequence check, when no heartbeat came for
// guest_timeout; not while the host itself is cut off from NATS.
//
// The node lease (lease.go, contract in internal/lease): taken at start
// and recorded before anything is acted on (node.joined unless the log
// shows the node joined since its last lost, fenced or halted, else
// node.lease_taken; either guarded by the node's last sequence, so that a
// node.lost judged before the take conflicts and one stored before it is
// read first: Member.Recorded), renewed every ttl/4. If it cannot be renewed
// within 0.6 ttl (lease.FenceAfter) of sending the last renewal that
// succeeded, so that its guests are stopped before the key expires, or is
// found deleted or expired, the runner stops this node's guests
// at once through their drivers (self-fencing, no log needed), takes the
// lease again when it can, appends node.fenced (the core then forces the
// guests off and records package.halted, reason fenced) and joins again. A
// newer instance of the same node's host manager that takes the lease
// supersedes this one: it steps down (Run returns ErrSuperseded) and leaves
// the guests to it.
//
// # Live migration
//
// A package.placed with migrate, for another node, of an instance that
// runs and whose guest's driver can migrate (config Guest.CanMigrate) does
// not halt it: Decide appends guest.migrating, Pending asks for
// MigrateGuest (the driver's Migrator, bounded by migrateTimeout), and the
// runner appends guest.migrated (naming the processes that go with the
// guest) or guest.migration_failed, after which the instance halts as for
// any move (the fallback). guest.migrated releases the source placement
// and ends its instance without a halt; on the target node it leaves an
// Adoption, and the instance that package.starting then creates takes
// over the guest's processes (which go on reporting their old epoch:
// Instance.FromEpoch). Its StartGuest finds the guest running; its first
// guest.started runs only the services that came without a process.
//
// Every guest start names this node and epoch to the guest's agent (a
// place request, guestagent.PlaceRequest) and every run request carries
// the node: the agent checks them against the log's placement and follows
// this node's lease, so that a guest that booted here with a stale --node,
// or came here by migration, is fenced by this node's lease only.
//
// # Every action ends
//
// No action waits without a bound, and each bound ends in an event
// (DESIGN §8; the table is in the README). Stops climb a ladder that the
// pure escalate decides and the runner times: a StopService whose
// process.exited has not come by halt_timeout + StopGrace becomes a forced
// StopGuest (guest.stopped names the process: a stray no agent knows ends
// so too); a StopGuest whose driver fails (each stop bounded by
// guestStopTimeout) is forced, and a forced one that fails fences the node
// for the package (node.fenced, once per package epoch). A run the agent
// accepted but never reported started counts as a failed start after
// ReportTimeout (Action.Unreported); a run the agent does not accept
// within RunGiveUp, or cannot start at all, fails the service. Text from
// outside is cut where events are built (events.Clip); an event the log
// still refuses as invalid is replaced once by its Fallback and never
// retried.
//
// With Config.HaltOnExit, a cancelled Run halts this node's packages
// (package.halting reason node_shutdown, without `by`, so auto_run stays
// on), waits until they are down, deletes the lease and returns.
package hostmanager
