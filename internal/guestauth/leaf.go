package guestauth

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
)

// Leaf nodes for guests (vmguard init --leaf, vmguard host --leaf): each
// host runs a leaf node its guests connect to. A guest's user exists only
// in the leaf configs of the nodes its packages list, so its credentials
// are refused by the hub. On the leaf:
//
//   - the guest is alone in its account GUEST_<guest> (limits as on the
//     hub); its agent's requests and heartbeats reach the host manager in
//     the leaf's account HOST and never leave the host;
//   - its process events go to the host's own guest gate (HOST's
//     GateSubject), which checks and rate-limits them and forwards what
//     passes to the hub's gate on the same subject, over the host
//     manager's connection: only that reaches the hub, at the guest's
//     rate, and the hub's gate still decides what is stored;
//   - its JetStream requests (the log's info, its placement, its nodes'
//     lease) cross the leaf connection to the hub's GUEST_<guest>, which
//     imports exactly those from VMGUARD. nats-server denies $JS.API.> on
//     leaf connections, so the leaf account maps $JS.API.> to
//     $JS.<LeafDomain>.API.> and the hub imports them under that name.
//
// The hub's GUEST_<guest> then has no user but one leaf user per node
// (LeafUser, allowed only LEAFNODE connections), exports nothing (no
// request from the hub reaches a guest) and imports nothing but those
// JetStream requests and the guest's inbox.

// LeafDomain is the JetStream domain name under which guests on a leaf
// reach the hub's JetStream API ($JS.<LeafDomain>.API.>).
const LeafDomain = "vmguard"

// LeafHostAccount is the leaf's account of the host manager (its
// in-process connection, the leaf's no_auth_user LeafHostUser).
const LeafHostAccount = "HOST"

// LeafHostUser is the leaf's in-process-only user of LeafHostAccount.
const LeafHostUser = "vmguard-host"

// LeafUser is the hub's user name of node's leaf connection for guest's
// account.
func LeafUser(node, guest string) string { return "leaf-" + node + "-" + guest }

// LeafJSSubject is subject of the JetStream API ($JS.API.…) as a guest on
// a leaf sends it across the leaf connection ($JS.<LeafDomain>.API.…).
func LeafJSSubject(subject string) string {
	return "$JS." + LeafDomain + ".API." + strings.TrimPrefix(subject, jsAPI)
}

// TLSFiles are the files of a tls {} block.
type TLSFiles struct {
	Cert, Key, CA string
	// Verify requires and verifies clients' certificates (a listener).
	Verify bool
}

// render writes the block at depth.
func (f TLSFiles) render(w func(int, string, ...any), depth int) {
	w(depth, "tls {")
	w(depth+1, "cert_file: %s", quote(f.Cert))
	w(depth+1, "key_file: %s", quote(f.Key))
	w(depth+1, "ca_file: %s", quote(f.CA))
	if f.Verify {
		w(depth+1, "verify: true")
	}
	w(depth, "}")
}

// LeafGuest is one guest of a Leaf.
type LeafGuest struct {
	// Guest and User are the guest and its agent's user on the leaf
	// (Permissions from For(Guest)).
	Guest Guest
	User  User
	// RemoteSeed is the nkey seed of the hub's LeafUser(node, guest):
	// the leaf connects the guest's account to the hub with it.
	RemoteSeed string
}

// Leaf is one node's leaf node configuration.
type Leaf struct {
	// Node is the node whose host runs the leaf.
	Node string
	// Host and Port are where guests connect.
	Host string
	Port int
	// Hub are the URLs of the hub's leafnode listener(s).
	Hub []string
	// Listen is the leaf's client TLS (Verify: guests' certificates);
	// Remote the leaf's certificate towards the hub.
	Listen, Remote TLSFiles
	// HostPassword is the in-process user's password (no network client
	// can use it).
	HostPassword string
	// Guests are the guests that may run on the node.
	Guests []LeafGuest
	// Limits are each guest account's limits.
	Limits Limits
}

// RenderLeaf returns the nats-server configuration of l's leaf node.
func RenderLeaf(l Leaf) (string, error) {
	if err := events.CheckName("node", l.Node); err != nil {
		return "", fmt.Errorf("render leaf: %w", err)
	}
	if len(l.Hub) == 0 {
		return "", fmt.Errorf("render leaf %s: no hub URL", l.Node)
	}
	gs, err := leafGuests(l.Guests)
	if err != nil {
		return "", fmt.Errorf("render leaf %s: %w", l.Node, err)
	}
	var b strings.Builder
	w := func(depth int, format string, args ...any) {
		b.WriteString(strings.Repeat("  ", depth))
		fmt.Fprintf(&b, format, args...)
		b.WriteByte('\n')
	}
	w(0, "# The leaf node of node %s's host (vmguard host --node %s --leaf THIS_FILE).", l.Node, l.Node)
	w(0, "# Its guests connect here; only their JetStream requests cross to the hub.")
	w(0, "server_name: %s", quote("leaf-"+l.Node))
	w(0, "host: %s", quote(l.Host))
	w(0, "port: %d", l.Port)
	l.Listen.Verify = true
	l.Listen.render(w, 0)
	w(0, "no_auth_user: %s", quote(LeafHostUser))
	w(0, "accounts {")
	writeLeafHost(&b, w, l.HostPassword, gs)
	for _, gi := range gs {
		gi.write(&b, w, l.Limits)
	}
	w(0, "}")
	w(0, "leafnodes {")
	w(1, "remotes = [")
	for _, gi := range gs {
		gi.writeRemote(w, l)
	}
	w(1, "]")
	w(0, "}")
	return b.String(), nil
}

// leafGuestImports is a guest's account on the leaf: its gate subjects
// (the host's subject, the log's subject) and its packages.
type leafGuestImports struct {
	acc   string
	gates [][2]string
	lg    LeafGuest
	pkgs  []string
}

// leafGuests checks the leaf's guests and returns their accounts, in
// order.
func leafGuests(guests []LeafGuest) ([]leafGuestImports, error) {
	var gs []leafGuestImports
	for _, lg := range guests {
		g := lg.Guest
		if err := events.CheckName("guest", g.Name); err != nil {
			return nil, err
		}
		pkgs, err := names("package", g.Packages)
		if err != nil {
			return nil, fmt.Errorf("guest %s: %w", g.Name, err)
		}
		if g.InboxPrefix == "" || g.InboxPrefix == DefaultInboxPrefix {
			return nil, fmt.Errorf("guest %s: needs its own inbox prefix (InboxPrefix)", g.Name)
		}
		if lg.RemoteSeed == "" {
			return nil, fmt.Errorf("guest %s: no remote seed", g.Name)
		}
		gi := leafGuestImports{acc: GuestAccount(g.Name), lg: lg, pkgs: pkgs}
		for _, pkg := range pkgs {
			for _, verb := range []string{"started", "exited"} {
				s := events.PackageSubject(pkg, "process", verb)
				gi.gates = append(gi.gates, [2]string{GateSubject(g.Name, s), s})
			}
		}
		gs = append(gs, gi)
	}
	return gs, nil
}

// writeLeafHost writes the leaf's host account: the host manager's
// in-process user, the guests' gate subjects it exports and the agents'
// requests and heartbeats it imports.
func writeLeafHost(b *strings.Builder, w lineWriter, hostPassword string, gs []leafGuestImports) {
	w(1, "%s {", quote(LeafHostAccount))
	w(2, "users = [")
	b.WriteString(Render(User{Name: LeafHostUser, Password: hostPassword, InProcessOnly: true,
		Comment: "the host manager's in-process connection; no network client can use it"}, "      "))
	w(2, "]")
	if len(gs) > 0 {
		w(2, "# Each guest's events come to the host's gate; its requests and heartbeats")
		w(2, "# are the host manager's.")
		w(2, "exports = [")
		for _, gi := range gs {
			for _, s := range gi.gates {
				w(3, "{service: %s, accounts: [%s]}", quote(s[0]), quote(gi.acc))
			}
		}
		w(2, "]")
		w(2, "imports = [")
		for _, gi := range gs {
			w(3, "{service: {account: %s, subject: %s}}", quote(gi.acc), quote(guestagent.Subject(gi.lg.Guest.Name, ">")))
			w(3, "{stream: {account: %s, subject: %s}}", quote(gi.acc), quote(guestagent.HeartbeatSubject(gi.lg.Guest.Name)))
		}
		w(2, "]")
	}
	w(1, "}")
}

// write writes the guest's account on the leaf: its limits, its agent's
// user, the mapping of its JetStream requests, its exports to the host
// account and its gate imports.
func (gi leafGuestImports) write(b *strings.Builder, w lineWriter, lim Limits) {
	name := gi.lg.Guest.Name
	w(1, "%s {", quote(gi.acc))
	w(2, "# guest %s: at most %d connections, %d subscriptions, %d-byte messages", name, lim.MaxConnections, lim.MaxSubscriptions, lim.MaxPayload)
	w(2, "limits: { max_connections: %d, max_subscriptions: %d, max_payload: %d }", lim.MaxConnections, lim.MaxSubscriptions, lim.MaxPayload)
	w(2, "users = [")
	b.WriteString(Render(gi.lg.User, "      "))
	w(2, "]")
	w(2, "# nats-server denies $JS.API.> on leaf connections: the hub imports the")
	w(2, "# guest's JetStream requests under this name.")
	w(2, "mappings = { %s: %s }", quote(jsAPI+">"), quote("$JS."+LeafDomain+".API.>"))
	w(2, "exports = [")
	w(3, "{service: %s, accounts: [%s], response_threshold: %s}", quote(guestagent.Subject(name, ">")), quote(LeafHostAccount), quote(ResponseExpiry.Round(time.Second).String()))
	w(3, "{stream: %s, accounts: [%s]}", quote(guestagent.HeartbeatSubject(name)), quote(LeafHostAccount))
	w(2, "]")
	w(2, "imports = [")
	for _, s := range gi.gates {
		w(3, "{service: {account: %s, subject: %s}, to: %s}", quote(LeafHostAccount), quote(s[0]), quote(s[1]))
	}
	w(2, "]")
	w(1, "}")
}

// writeRemote writes the guest's leafnode remote: its account connected
// to the hub as LeafUser(l.Node, guest).
func (gi leafGuestImports) writeRemote(w lineWriter, l Leaf) {
	name := gi.lg.Guest.Name
	w(2, "# guest %s's account, as the hub's user %s", name, LeafUser(l.Node, name))
	w(2, "{")
	urls := make([]string, len(l.Hub))
	for i, u := range l.Hub {
		urls[i] = quote(u)
	}
	w(3, "urls: [%s]", strings.Join(urls, ", "))
	w(3, "account: %s", quote(gi.acc))
	w(3, "nkey: %s", quote(gi.lg.RemoteSeed))
	l.Remote.Verify = false
	l.Remote.render(w, 3)
	// Requests to the guest and its heartbeats stay on the host, even
	// if the hub were to ask.
	w(3, "deny_imports: [%s, %s]", quote(guestagent.Subject(name, ">")), quote("$SRV.>"))
	w(3, "deny_exports: [%s, %s]", quote(guestagent.HeartbeatSubject(name)), quote("vmguard.events.>"))
	w(2, "}")
}

// LeafPermissions are the hub's rights of a leaf user of guest g: it may
// send g's JetStream requests (For's, under LeafJSSubject) and receive
// g's inbox, nothing else.
func LeafPermissions(g Guest) (Permissions, error) {
	p, err := For(g)
	if err != nil {
		return Permissions{}, err
	}
	var out Permissions
	for _, s := range p.Publish {
		if strings.HasPrefix(s, jsAPI) {
			out.Publish = append(out.Publish, LeafJSSubject(s))
		}
	}
	inbox := g.InboxPrefix
	if inbox == "" {
		inbox = DefaultInboxPrefix
	}
	out.Subscribe = []string{inbox + ".>"}
	out.Responses = ResponseExpiry
	return out, nil
}

// leafImports are the hub's GUEST_<guest> imports of a guest on leaves:
// For's JetStream requests, under LeafJSSubject.
func leafImports(g Guest) ([][2]string, error) {
	p, err := For(g)
	if err != nil {
		return nil, err
	}
	var out [][2]string
	for _, s := range p.Publish {
		if strings.HasPrefix(s, jsAPI) {
			out = append(out, [2]string{s, LeafJSSubject(s)})
		}
	}
	return slices.Clip(out), nil
}

// OnLeaf returns a guest's permissions p (For's) as its user on a leaf
// node needs them: the leaf account maps $JS.API.> to LeafJSSubject
// before the server checks the publish, so the JetStream requests are
// allowed under that name.
func OnLeaf(p Permissions) Permissions {
	out := p
	out.Publish = make([]string, len(p.Publish))
	for i, s := range p.Publish {
		if strings.HasPrefix(s, jsAPI) {
			s = LeafJSSubject(s)
		}
		out.Publish[i] = s
	}
	out.Subscribe = slices.Clone(p.Subscribe)
	return out
}
