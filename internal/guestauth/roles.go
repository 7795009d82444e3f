package guestauth

import (
	"fmt"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/lease"
)

// The key-value buckets beside the log, by name (failover owns the last two;
// their names are repeated here, and TestRoleBuckets checks them, so that
// this package does not import the failover controller).
const (
	electionBucket = "vmguard_failover"
	snapshotBucket = "vmguard_snapshots"
)

// readStreams are the streams every role but a guest may read: the log and
// the buckets beside it.
var readStreams = []string{events.StreamName, lease.StreamName, "KV_" + electionBucket, "KV_" + snapshotBucket}

// Reader returns the rights every role but a guest has: read the log and
// the buckets beside it, nothing else. That is operator-readonly's whole
// set: stream info, direct and stored message gets, and its own ephemeral
// consumers (create, info, next, delete by name; it cannot list the
// consumers of others, whose names are random), JetStream account info,
// replies on the shared _INBOX and flow-control answers (responses).
// It cannot append an event, write, delete or purge a key, change or
// delete a stream, or send a request to a guest.
func Reader() Permissions {
	p := Permissions{Responses: ResponseExpiry}
	p.Publish = append(p.Publish, jsAPI+"INFO")
	for _, s := range readStreams {
		p.Publish = append(p.Publish,
			jsAPI+"STREAM.INFO."+s,
			jsAPI+"STREAM.MSG.GET."+s,
			jsAPI+"DIRECT.GET."+s,
			jsAPI+"DIRECT.GET."+s+".>",
			jsAPI+"CONSUMER.CREATE."+s+".*",
			jsAPI+"CONSUMER.CREATE."+s+".*.>",
			jsAPI+"CONSUMER.INFO."+s+".*",
			jsAPI+"CONSUMER.MSG.NEXT."+s+".*",
			jsAPI+"CONSUMER.DELETE."+s+".*",
		)
	}
	p.Subscribe = append(p.Subscribe, DefaultInboxPrefix+".>")
	return p
}

// Host names a node and what its host manager acts for.
type Host struct {
	// Node is the host's node (vmguard host --node).
	Node string
	// Packages are the packages that list the node: the host writes their
	// lifecycle, service, guest and process events.
	Packages []string
	// Guests are the guests of those packages: the host sends them
	// requests, watches their heartbeats and, with the process driver,
	// runs their agents on its own identity.
	Guests []string
}

// HostEventVerbs are the events a host manager writes about a package
// (entity.verb); the controller and operators write package.placed,
// switching_changed and reset, and package.halting too.
var HostEventVerbs = []string{
	"package.starting", "package.started", "package.halting", "package.halted", "package.failed",
	"guest.*", "service.*", "process.*",
}

// HostNodeVerbs are the events a host manager writes about its own node.
var HostNodeVerbs = []string{"joined", "halted", "fenced", "taken_over", "lease_taken", "resource_set"}

// ForHost returns the rights of h's host manager: Reader's, and
//
// Publish:
//   - vmguard.events.node.<node>.{joined,halted,fenced,taken_over,lease_taken,resource_set}:
//     its own node's events only (resource_set: its monitor scripts);
//   - vmguard.events.pkg.<pkg>.{package.starting|started|halting|halted|failed,
//     guest.*, service.*, process.*} for each package that lists the node:
//     never package.placed, switching_changed or reset;
//   - $KV.vmguard_leases.<node>: its own lease key (put, update, delete);
//   - $JS.API.STREAM.CREATE|UPDATE.KV_vmguard_leases: the host creates the
//     lease bucket with node_timeout as its TTL (lease.Ensure);
//   - vmguard.agent.<guest>.> and vmguard.hb.guest.<guest> for its guests:
//     requests to their agents, and the heartbeats of the agents the
//     process driver runs on the host's identity;
//   - vmguard.gate.<guest>.pkg.<pkg>.process.started|exited for its
//     guests and packages: the gate of its leaf node (vmguard host
//     --leaf) forwards its guests' events to the hub's gate (a host may
//     write its packages' process events itself anyway).
//
// Subscribe: Reader's, and for its guests their heartbeats, agent
// endpoints, per-guest inbox (_INBOX_<guest>.>) and the $SRV discovery
// subjects (process-driver agents).
func ForHost(h Host) (Permissions, error) {
	if err := events.CheckName("node", h.Node); err != nil {
		return Permissions{}, fmt.Errorf("host permissions: %w", err)
	}
	pkgs, err := names("package", h.Packages)
	if err != nil {
		return Permissions{}, fmt.Errorf("host permissions for %s: %w", h.Node, err)
	}
	guests, err := names("guest", h.Guests)
	if err != nil {
		return Permissions{}, fmt.Errorf("host permissions for %s: %w", h.Node, err)
	}
	p := Reader()
	for _, v := range HostNodeVerbs {
		p.Publish = append(p.Publish, events.NodeSubject(h.Node, v))
	}
	for _, pkg := range pkgs {
		for _, ev := range HostEventVerbs {
			p.Publish = append(p.Publish, "vmguard.events.pkg."+pkg+"."+ev)
		}
	}
	p.Publish = append(p.Publish,
		lease.KeySubject(h.Node),
		jsAPI+"STREAM.CREATE."+lease.StreamName,
		jsAPI+"STREAM.UPDATE."+lease.StreamName)
	for _, g := range guests {
		for _, pkg := range pkgs {
			for _, verb := range []string{"started", "exited"} {
				p.Publish = append(p.Publish, GateSubject(g, events.PackageSubject(pkg, "process", verb)))
			}
		}
		p.Publish = append(p.Publish, guestagent.Subject(g, ">"), guestagent.HeartbeatSubject(g))
		p.Subscribe = append(p.Subscribe, guestagent.HeartbeatSubject(g), guestagent.Subject(g, ">"), InboxPrefix(g)+".>")
	}
	if len(guests) > 0 {
		for _, verb := range []string{"PING", "INFO", "STATS"} {
			p.Subscribe = append(p.Subscribe,
				"$SRV."+verb,
				"$SRV."+verb+"."+guestagent.ServiceName,
				"$SRV."+verb+"."+guestagent.ServiceName+".*")
		}
	}
	return p, nil
}

// Controller returns the rights of the failover controller: Reader's, and
//
//   - vmguard.events.pkg.*.package.placed and .package.halting, and
//     vmguard.events.node.*.lost and .thawed (a freeze that expired): its
//     decisions; vmguard.events.pkg.*.package.checked: the marker it
//     appends with a placement on each package linked to it;
//     vmguard.events.placement.*.noted: the marker of each placement on
//     its node's placement subject (design-notes §10);
//   - $KV.vmguard_failover.> and $KV.vmguard_snapshots.>: the leader
//     election and its state snapshots, and creating or updating those two
//     buckets;
//   - $JS.API.STREAM.CREATE|UPDATE.KV_vmguard_leases: it creates the lease
//     bucket if no host has yet; $KV.vmguard_leases._probe.>: its probe key
//     (lease.Prober). It never writes a node's lease.
func Controller() Permissions {
	p := Reader()
	p.Publish = append(p.Publish,
		events.PackageSubject("*", "package", "placed"),
		events.PackageSubject("*", "package", "halting"),
		events.PackageSubject("*", "package", "checked"),
		events.PlacementSubject("*"),
		events.NodeSubject("*", "lost"),
		events.NodeSubject("*", "thawed"),
		"$KV."+electionBucket+".>",
		"$KV."+snapshotBucket+".>",
		// Its probe key in the lease bucket (lease.Prober): whether the
		// store takes writes; never a node's key (a node name has no dot).
		lease.KeySubject(lease.ProbeKey(">")),
	)
	for _, s := range []string{"KV_" + electionBucket, "KV_" + snapshotBucket, lease.StreamName} {
		p.Publish = append(p.Publish, jsAPI+"STREAM.CREATE."+s, jsAPI+"STREAM.UPDATE."+s)
	}
	return p
}
