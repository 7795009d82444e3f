// Package guestagent is vmguard's guest agent (`vmguard agent`), the
// successor of Serviceguard's cmappserver: it runs inside a VM guest, starts
// processes when the host manager asks, watches them, and reports every
// start and exit to the event log as process.started / process.exited.
//
// It owns the process supervisor, the request handlers, the on-disk spool
// that carries events to the log, and heartbeats. It must not decide
// anything about restarts or placement: the host manager does, from the
// log. The agent only does what it is asked and says what happened.
//
// # Requests (NATS micro service "vmguard-agent")
//
// Endpoints, request/reply JSON on vmguard.agent.<guest>.<endpoint>
// (`nats micro ls`, `nats micro info vmguard-agent`):
//
//	run   RunRequest  -> RunReply    start a process (idempotent by request_id)
//	stop  StopRequest -> StopReply   SIGTERM the process group, SIGKILL after halt_timeout;
//	                                 the reply comes when they have exited
//	list  ListRequest -> ListReply   processes, oldest first ({} or empty body: running ones)
//	ping  {}          -> PingReply   liveness, counts, version
//	place PlaceRequest -> PlaceReply  follow the node a host manager names, if the log agrees
//
// run request:
//
//	{"package":"web","service":"httpd","argv":["/usr/sbin/httpd","-DFOREGROUND"],
//	 "env":{"LANG":"C"},"dir":"/srv/www","request_id":"<decision id>/httpd",
//	 "cause_id":"<decision id>","epoch":3,"halt_timeout":"10s"}
//
// package, service, argv and request_id are required; halt_timeout is a Go
// duration string (absent or "0s": 10s, at most 1h); cause_id defaults to
// request_id without a trailing "/<service>". The reply is
// {"process":{ProcessInfo},"duplicate":false}.
//
// stop request: {"request_id":"..."} or {"package":"web"[,"service":"httpd"]}
// with an optional "halt_timeout". Reply: {"processes":[ProcessInfo...]},
// each with its "exit":{"exit_code","signal","reason","runtime_ms","at",
// "output","event_id"}.
//
// Requests are decoded strictly: at most 64 KiB, no unknown fields, nothing
// after the object, names valid NATS tokens (events.CheckName). A bad
// request changes nothing and gets a micro error reply (headers
// Nats-Service-Error-Code and Nats-Service-Error) whose text says what is
// wrong: 400 bad request, 404 unknown request id, 409 the service already
// runs under another request id (or the request id names another service),
// 413 too large, 422 the process could not be started, 503 at --max-procs
// or shutting down, 500 the agent failed. Client wraps all of this.
//
// One process per service: a run for a service that still runs under
// another request id is refused (409); stop it first. The agent remembers
// every running process and the last 1024 exits (also across restarts, in
// its spool), so a repeated run or stop answers from memory.
//
// # Processes
//
// Each process runs in its own process group with SIGKILL as its
// parent-death signal, stdin /dev/null, stdout and stderr into one pipe
// whose bytes go to <state>/logs/<package>/<service>.log (capped, rotated
// once to .1) and whose last 20 lines (at most 4 KiB) go into the exit
// report. The environment is the agent's own (without VMGUARD_*) plus the
// request's env plus VMGUARD_GUEST, VMGUARD_PACKAGE, VMGUARD_SERVICE,
// VMGUARD_REQUEST_ID, VMGUARD_EPOCH and VMGUARD_PROCESS_ID (the id of its
// process.started event, which marks descendants as ours).
//
// When the process ends, whatever is left of its group is killed, so a
// restart never runs next to leftovers; then every process that carries its
// VMGUARD_PROCESS_ID marker is killed too (a scan of /proc 10 ms after the
// exit, off its report's path, through pidfds), which catches descendants
// that left the group or the session (setsid, a double fork) unless they
// cleared their environment. exit_code is the exit status, or -1
// when a signal ended it (signal names it, e.g. "SIGKILL") or when the
// outcome is unknown. reason is "" for a real exit, "stopped" after a stop
// request, "agent_stopped" when the agent was stopped, "agent_restart" for
// a process the previous agent started and never saw exit (reported by the
// next agent, which first kills what is left of it: the process if its pid
// is still the same incarnation by /proc start time and boot id, and group
// members that carry its VMGUARD_PROCESS_ID).
//
// # Events and the spool
//
// Events are written first to a spool under <state>/spool (append-only; an
// exit is fdatasynced while it is published, and counts as delivered only
// once both are done; a start is synced soon after, since a start only has
// to survive an agent crash). An exit's sync is on no restart's path: its
// service may run again once the exit is written, a start is written while
// the sync runs, and the records after it are appended meanwhile (they
// count as delivered, in order, once the sync is done). Records are
// appended to the
// log one at a time, in spool order, with their stored ids as Nats-Msg-Id: a re-send
// after a crash or an outage is stored once within the log's two-minute
// duplicate window. The spool survives restarts and outages and is delivered
// as soon as the log is reachable. process.started and process.exited carry
// source /vmguard/guests/<guest>/agent, subject = the package, causeid =
// cause_id, and the run's epoch.
//
// # Heartbeats
//
// Every second (--heartbeat), a core NATS message on vmguard.hb.guest.<guest>:
// {"guest","running","version","time"[,"node"]}. None is sent while
// disconnected.
//
// # Fencing
//
// A real VM outlives a crashed host manager, so an agent started with a node
// (Config.Node, `--node N`) fences itself: a package must never run beside
// its replacement on another node. It follows key N in the KV bucket
// vmguard_leases (internal/lease; it opens the bucket again until it
// exists) two ways: a watch, which sees a change the moment it is written,
// and a poll of the key's last value by direct get every ttl/16, which any
// replica answers, so that losing the server of the watch's consumer (a
// cluster member stopping) does not look like a lapse. It takes every new
// revision of the key, from either, as a renewal, with the ttl from the
// value's ttl_ms: a live watch update is timed from its arrival, a polled
// one by the server's stamp of it, but never later than it arrived nor
// earlier than the poll before it (so a guest clock ahead of the server's
// cannot age it by more than a poll interval). It accepts runs only once it
// has seen a renewal: the host manager takes the lease before it starts
// guests, and runs refused before that get 503 "node lease of N not seen
// yet" (the host manager retries). If it then sees no renewal for
// lease.FenceAfter(ttl) (0.6 ttl, timed by its own monotonic clock from the
// last renewal, so an unreachable NATS counts the same), or sees the key
// deleted or
// purged, it fences: it stops every process, SIGTERM then SIGKILL after
// their halt timeout but at most 0.2 ttl (so all are dead by 0.8 ttl after
// the last renewal it saw, before the failover controller can find the key
// expired), reports their exits with reason "fenced" through the spool
// (they reach the log once it is reachable), and refuses runs with 503
// "node lease lapsed; fenced (...)" until it sees a fresh renewal. The value
// a new watch starts with (at start, after a reconnect) counts only if its
// revision is new, and is aged by the server's timestamp of it. Ping's
// "lease" says waiting, held or fenced. Without a node (tests, standalone
// use) the agent never fences, unless Config.Fence (`--fence`) is set.
//
// # Which node
//
// A guest moves: it boots on another host after a failover (its image may
// still say `--node` of the old one) or keeps running through a live
// migration. So Config.Node is only the node at start. The authority on
// where the guest runs is the host manager that controls it, checked
// against the log: the host manager sends a place request
// {package, node, epoch} to a guest it starts (and the target of a
// migration sends it to the guest it takes over), and every run request
// it sends carries its node too. The agent refuses an epoch older than the
// highest it was placed under for the package (a host manager acting on a
// replaced placement), and follows a node other than its current one only
// if the package's last package.placed in the log, which only the
// controller and operators write, names that node and epoch; else 409 and
// nothing changes. Following a node means watching that node's lease
// instead of the old one: the old node's lapse no longer stops the
// processes, the new node's does. The deadline the last renewal seen set
// stays, so the new lease must be seen within it.
//
// # Security groundwork
//
// The agent publishes only on:
//
//	vmguard.events.pkg.<package>.process.started|exited   for the packages it runs
//	vmguard.hb.guest.<guest>                               heartbeats
//	$JS.API.STREAM.INFO.VMGUARD                            to open the log
//	$JS.API.DIRECT.GET.VMGUARD.vmguard.events.pkg.<package>.package.placed   to confirm a placement (place)
//	$JS.API.STREAM.INFO.KV_vmguard_leases and              with --node: to watch its node's lease
//	$JS.API.CONSUMER.*.KV_vmguard_leases.>                 (an ordered consumer, key <node> only)
//	$JS.API.DIRECT.GET.KV_vmguard_leases.$KV.vmguard_leases.<node>   (the poll)
//	reply subjects                                         (micro replies, flow control; allow_responses)
//
// and subscribes to vmguard.agent.<guest>.>, $SRV.> and _INBOX.> (the lease
// watch delivers on an inbox). A later issue can lock each guest's NATS user
// to exactly these (with the package list from the config).
package guestagent
