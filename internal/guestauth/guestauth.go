// Package guestauth derives the NATS permissions of a guest agent's user:
// exactly the subjects the agent of one guest publishes and subscribes to
// (see the guestagent package doc), and nothing else, so that a guest, which
// is less trusted than a host, can only speak for itself. It renders them as
// nats-server configuration and as server options for tests.
//
// It must not decide who may connect; that is the operator's nats-server
// configuration. It only says what a guest's user may do once connected.
package guestauth

import (
	"fmt"
	"slices"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
	"github.com/vmguard/vmguard/internal/lease"
)

// DefaultInboxPrefix is the inbox prefix of a NATS connection that does not
// set one (nats.CustomInboxPrefix).
const DefaultInboxPrefix = "_INBOX"

// ResponseExpiry is how long a guest may answer a request it received: a
// stop is answered once its processes have exited, after at most
// guestagent.MaxHaltTimeout, so replies must stay allowed a little longer.
const ResponseExpiry = guestagent.MaxHaltTimeout + 5*time.Minute

// Guest names a guest and what its agent speaks for.
type Guest struct {
	// Name is the guest's name (--guest).
	Name string
	// Packages are the packages whose services run in the guest; the agent
	// publishes process.started and process.exited for them only.
	Packages []string
	// Nodes are the nodes whose lease the agent may watch (--node). A guest
	// fails over with its package, so list every node it may run on (the
	// nodes of its packages). None: the agent runs without fencing.
	Nodes []string
	// InboxPrefix is the agent connection's inbox prefix (default
	// DefaultInboxPrefix, which every client shares; see InboxPrefix).
	InboxPrefix string
}

// InboxPrefix is a per-guest inbox prefix. An agent connected with
// nats.CustomInboxPrefix(InboxPrefix(guest)) and a user made with
// Guest.InboxPrefix set to it receives replies on its own inboxes only,
// instead of being able to read every client's replies under _INBOX.>.
func InboxPrefix(guest string) string { return guestagent.InboxPrefix(guest) }

// Permissions are a NATS user's rights: the subjects it may publish to and
// subscribe to (nothing else), and whether it may answer requests it
// received.
type Permissions struct {
	// Publish lists the subjects the user may publish to.
	Publish []string
	// Subscribe lists the subjects the user may subscribe to.
	Subscribe []string
	// Responses, when positive, lets the user publish one reply to the
	// reply subject of each message it received, within this long
	// (nats-server's allow_responses).
	Responses time.Duration
}

// For returns the permissions of guest g's agent user:
//
// Publish:
//   - vmguard.hb.guest.<guest>: heartbeats;
//   - vmguard.events.pkg.<pkg>.process.started and .exited for each package:
//     the only events an agent writes (acknowledged JetStream publishes);
//   - $JS.API.STREAM.INFO.VMGUARD: the agent opens the log (events.Open);
//   - $JS.API.DIRECT.GET.VMGUARD.vmguard.events.pkg.<pkg>.package.placed
//     for each package, with nodes: the agent reads the package's last placement to
//     confirm a node a host manager names (guestagent.PlaceRequest) before
//     it follows that node's lease;
//   - for each node: $JS.API.STREAM.INFO.KV_vmguard_leases,
//     $JS.API.CONSUMER.CREATE.KV_vmguard_leases.*.$KV.vmguard_leases.<node>
//     and $JS.API.DIRECT.GET.KV_vmguard_leases.$KV.vmguard_leases.<node>:
//     the agent watches its node's lease key, an ordered consumer whose
//     filter (checked by the server against the subject) is that key only,
//     and polls the key's last value by direct get, which any replica
//     answers (the watch's consumer lives on one server).
//
// Subscribe: vmguard.agent.<guest>.> (its micro service endpoints), the
// $SRV.PING|INFO|STATS discovery subjects of the vmguard-agent service,
// and <inbox prefix>.> (JetStream acks, API replies, lease deliveries).
//
// Replies (micro responses, discovery answers, JetStream flow control) go
// through Responses, not through a publish right on any inbox, so a guest
// can answer only what it was asked.
func For(g Guest) (Permissions, error) {
	if err := events.CheckName("guest", g.Name); err != nil {
		return Permissions{}, fmt.Errorf("guest permissions: %w", err)
	}
	if len(g.Packages) == 0 {
		return Permissions{}, fmt.Errorf("guest permissions for %s: no package: a guest runs the services of at least one package", g.Name)
	}
	pkgs, err := names("package", g.Packages)
	if err != nil {
		return Permissions{}, fmt.Errorf("guest permissions for %s: %w", g.Name, err)
	}
	nodes, err := names("node", g.Nodes)
	if err != nil {
		return Permissions{}, fmt.Errorf("guest permissions for %s: %w", g.Name, err)
	}
	inbox := g.InboxPrefix
	if inbox == "" {
		inbox = DefaultInboxPrefix
	}
	if err := checkPrefix(inbox); err != nil {
		return Permissions{}, fmt.Errorf("guest permissions for %s: inbox prefix: %w", g.Name, err)
	}

	p := Permissions{Responses: ResponseExpiry}
	p.Publish = append(p.Publish, guestagent.HeartbeatSubject(g.Name))
	for _, pkg := range pkgs {
		p.Publish = append(p.Publish,
			events.PackageSubject(pkg, "process", "started"),
			events.PackageSubject(pkg, "process", "exited"))
	}
	p.Publish = append(p.Publish, jsAPI+"STREAM.INFO."+events.StreamName)
	if len(nodes) > 0 {
		for _, pkg := range pkgs {
			p.Publish = append(p.Publish, jsAPI+"DIRECT.GET."+events.StreamName+"."+events.PackageSubject(pkg, "package", "placed"))
		}
		p.Publish = append(p.Publish, jsAPI+"STREAM.INFO."+leaseStream)
		for _, n := range nodes {
			p.Publish = append(p.Publish, jsAPI+"CONSUMER.CREATE."+leaseStream+".*."+LeaseKeySubject(n))
		}
		for _, n := range nodes {
			p.Publish = append(p.Publish, jsAPI+"DIRECT.GET."+leaseStream+"."+LeaseKeySubject(n))
		}
	}

	p.Subscribe = append(p.Subscribe, guestagent.Subject(g.Name, ">"))
	for _, verb := range []string{"PING", "INFO", "STATS"} {
		p.Subscribe = append(p.Subscribe,
			"$SRV."+verb,
			"$SRV."+verb+"."+guestagent.ServiceName,
			"$SRV."+verb+"."+guestagent.ServiceName+".*")
	}
	p.Subscribe = append(p.Subscribe, inbox+".>")
	return p, nil
}

// JetStream names the permissions refer to.
const (
	jsAPI       = "$JS.API."
	leaseStream = lease.StreamName
)

// LeaseKeySubject is the subject of node's key in the lease bucket.
func LeaseKeySubject(node string) string { return lease.KeySubject(node) }

// names checks a list of names and returns it sorted without repeats.
func names(field string, in []string) ([]string, error) {
	out := slices.Clone(in)
	for _, n := range out {
		if err := events.CheckName(field, n); err != nil {
			return nil, err
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// checkPrefix accepts an inbox prefix nats.go would: tokens without
// wildcards, not starting or ending with a dot.
func checkPrefix(p string) error {
	if p == "" || p[0] == '.' || p[len(p)-1] == '.' {
		return fmt.Errorf("%q: want dot-separated tokens", p)
	}
	for _, c := range p {
		switch c {
		case '*', '>', ' ', '\t', '\r', '\n':
			return fmt.Errorf("%q: no wildcards or white space", p)
		}
	}
	return nil
}
