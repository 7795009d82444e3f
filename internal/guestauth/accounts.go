package guestauth

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/guestagent"
)

// ControlAccount is the account of the log, the buckets and every role but
// the guests (vmguard init's nats.conf).
const ControlAccount = "VMGUARD"

// GuestAccount is the account of guest's agent: one account a guest, so
// that its limits are its own and it sees nothing of the others.
func GuestAccount(guest string) string { return "GUEST_" + guest }

// GatePrefix is where guests' events reach the control account: a guest
// account imports the service GateSubject(guest, subject) under the log's
// subject, so an agent publishes as it always did, and the gate
// (internal/guestgate) checks the event, limits the guest's rate and
// appends it to the log. Only what passes is stored.
const GatePrefix = "vmguard.gate"

// GateSubject is the subject in the control account that guest's events
// for the log's subject logSubject arrive on: vmguard.gate.<guest> and
// logSubject without its vmguard.events prefix. The server, not the
// payload, says which guest sent it.
func GateSubject(guest, logSubject string) string {
	return GatePrefix + "." + guest + "." + strings.TrimPrefix(logSubject, "vmguard.events.")
}

// ParseGateSubject is GateSubject's inverse: the guest and the log's
// subject of a gate subject, or false.
func ParseGateSubject(subject string) (guest, logSubject string, ok bool) {
	rest, ok := strings.CutPrefix(subject, GatePrefix+".")
	if !ok {
		return "", "", false
	}
	guest, rest, ok = strings.Cut(rest, ".")
	if !ok || !events.ValidName(guest) || rest == "" {
		return "", "", false
	}
	return guest, "vmguard.events." + rest, true
}

// Limits are a guest account's limits (nats-server account `limits`).
type Limits struct {
	// MaxConnections bounds the account's connections: an agent needs
	// one; a few more let it reconnect before the server noticed the old
	// one gone.
	MaxConnections int
	// MaxSubscriptions bounds its subscriptions (an agent has about ten).
	MaxSubscriptions int
	// MaxPayload bounds one message: the largest event an agent writes is
	// a process.exited with its output tail (4 KiB, up to six times that
	// escaped as JSON) and reason (1 KiB).
	MaxPayload int
}

// DefaultLimits are vmguard init's guest account limits.
var DefaultLimits = Limits{MaxConnections: 4, MaxSubscriptions: 64, MaxPayload: 64 << 10}

// AccountGuest is one guest of RenderAccounts: its agent's user (whose
// Permissions are For(Guest)) and what the guest speaks for.
//
// Leaves are the hub's users of the leaf nodes the guest may connect
// to (vmguard init --leaf; LeafUser, LeafPermissions, ConnectionTypes
// LEAFNODE). A guest with leaves and no User (its Name and NKey empty)
// is on leaves only: its account imports its JetStream requests under
// LeafJSSubject and exports nothing, and its events and heartbeats
// never reach the hub but through its host's gate.
type AccountGuest struct {
	Guest  Guest
	User   User
	Leaves []User
}

// direct reports whether the guest's agent connects to the hub itself.
func (ag AccountGuest) direct() bool { return ag.User.Name != "" || ag.User.NKey != "" }

// RenderAccounts returns nats-server `accounts {}` configuration: the
// control account (JetStream, the users control) and one account a guest
// (no JetStream, limits) that imports exactly what its agent uses from the
// control account and exports its agent's requests to it:
//
//   - its packages' process.started and process.exited subjects, as
//     services of the control account's gate subjects (GateSubject);
//   - its heartbeat subject;
//   - the JetStream API requests of For (the log's STREAM.INFO, its
//     packages' placement by direct get, and for each node the lease
//     bucket's STREAM.INFO, the consumer create of that key and its direct
//     get), answered by the control account's JetStream;
//   - $JS.API.INFO, which its permissions do not let it use: without an
//     import shadowing it the server would import all of $JS.API.> into
//     the account and answer "JetStream not enabled" to every request;
//   - a stream of its inbox prefix (the lease watch's deliveries);
//   - exported: vmguard.agent.<guest>.> (its micro endpoints), answered
//     for up to ResponseExpiry.
//
// noAuthUser, if set, is written as the server's no_auth_user (a user of
// control).
func RenderAccounts(control []User, guests []AccountGuest, lim Limits, noAuthUser string) (string, error) {
	var pl accountPlan
	for _, ag := range guests {
		if err := pl.guest(ag); err != nil {
			return "", fmt.Errorf("render accounts: %w", err)
		}
	}
	var b strings.Builder
	w := func(depth int, format string, args ...any) {
		b.WriteString(strings.Repeat("  ", depth))
		fmt.Fprintf(&b, format, args...)
		b.WriteByte('\n')
	}
	if noAuthUser != "" {
		w(0, "no_auth_user: %s", quote(noAuthUser))
	}
	w(0, "accounts {")
	pl.writeControl(&b, w, control)
	for _, gi := range pl.guests {
		gi.write(&b, w, lim)
	}
	w(0, "}")
	return b.String(), nil
}

// accountExport is a subject the control account exports to guest accounts.
type accountExport struct {
	subject  string
	stream   bool
	accounts []string
}

// guestImports is what one guest account imports from the control account.
type guestImports struct {
	acc      string
	services [][2]string // subject in the control account, local subject
	streams  []string
	guest    string
	users    []User
	direct   bool
}

// accountPlan is what RenderAccounts writes, before it is written: the
// control account's exports, in first-use order, and each guest's imports.
type accountPlan struct {
	exports []*accountExport
	byKey   map[string]*accountExport
	guests  []guestImports
}

// lineWriter writes one line of configuration at an indentation depth.
type lineWriter func(depth int, format string, args ...any)

// export records that the control account exports subject (a stream, or
// a service) to the account acc.
func (pl *accountPlan) export(subject string, stream bool, acc string) {
	if pl.byKey == nil {
		pl.byKey = map[string]*accountExport{}
	}
	k := fmt.Sprint(stream, subject)
	e := pl.byKey[k]
	if e == nil {
		e = &accountExport{subject: subject, stream: stream}
		pl.byKey[k] = e
		pl.exports = append(pl.exports, e)
	}
	if !slices.Contains(e.accounts, acc) {
		e.accounts = append(e.accounts, acc)
	}
}

// guest adds the account of one guest: its users and what it imports (see
// RenderAccounts).
func (pl *accountPlan) guest(ag AccountGuest) error {
	g := ag.Guest
	if err := events.CheckName("guest", g.Name); err != nil {
		return err
	}
	pkgs, err := names("package", g.Packages)
	if err != nil {
		return fmt.Errorf("guest %s: %w", g.Name, err)
	}
	nodes, err := names("node", g.Nodes)
	if err != nil {
		return fmt.Errorf("guest %s: %w", g.Name, err)
	}
	inbox := g.InboxPrefix
	if inbox == "" || inbox == DefaultInboxPrefix {
		return fmt.Errorf("guest %s: needs its own inbox prefix (InboxPrefix)", g.Name)
	}
	acc := GuestAccount(g.Name)
	gi := guestImports{acc: acc, guest: g.Name, users: ag.Leaves, direct: ag.direct()}
	if gi.direct {
		gi.users = append([]User{ag.User}, gi.users...)
	}
	svc := func(controlSubject, local string) {
		pl.export(controlSubject, false, acc)
		gi.services = append(gi.services, [2]string{controlSubject, local})
	}
	if len(ag.Leaves) > 0 {
		imps, err := leafImports(g)
		if err != nil {
			return err
		}
		for _, s := range imps {
			svc(s[0], s[1])
		}
	}
	if gi.direct {
		directImports(g.Name, pkgs, nodes, svc)
	} else {
		// On leaves only: the JetStream requests above, the shadow
		// of $JS.API.INFO and the inbox; nothing else.
		info := jsAPI + "INFO"
		svc(info, info)
	}
	if len(nodes) > 0 {
		pl.export(inbox+".>", true, acc)
		gi.streams = append(gi.streams, inbox+".>")
	}
	pl.guests = append(pl.guests, gi)
	return nil
}

// directImports passes to svc the services a guest whose agent connects to
// the hub itself imports from the control account (see RenderAccounts).
func directImports(guest string, pkgs, nodes []string, svc func(controlSubject, local string)) {
	for _, pkg := range pkgs {
		for _, verb := range []string{"started", "exited"} {
			s := events.PackageSubject(pkg, "process", verb)
			svc(GateSubject(guest, s), s)
		}
	}
	// Imported so that the server does not import the whole JetStream
	// API ($JS.API.>) into the account, whose answers ("JetStream not
	// enabled for account") would race with the imported ones: it
	// skips that when an import shadows $JS.API.INFO. The guest's
	// permissions do not let it publish there.
	info := jsAPI + "INFO"
	svc(info, info)
	hb := guestagent.HeartbeatSubject(guest)
	svc(hb, hb)
	api := jsAPI + "STREAM.INFO." + events.StreamName
	svc(api, api)
	if len(nodes) == 0 {
		return
	}
	for _, pkg := range pkgs {
		s := jsAPI + "DIRECT.GET." + events.StreamName + "." + events.PackageSubject(pkg, "package", "placed")
		svc(s, s)
	}
	s := jsAPI + "STREAM.INFO." + leaseStream
	svc(s, s)
	for _, n := range nodes {
		c := jsAPI + "CONSUMER.CREATE." + leaseStream + ".*." + LeaseKeySubject(n)
		svc(c, c)
		d := jsAPI + "DIRECT.GET." + leaseStream + "." + LeaseKeySubject(n)
		svc(d, d)
	}
}

// writeControl writes the control account: its users, JetStream, its
// exports and its imports of the direct agents' services.
func (pl *accountPlan) writeControl(b *strings.Builder, w lineWriter, control []User) {
	w(1, "%s {", quote(ControlAccount))
	w(2, "jetstream: enabled")
	w(2, "users = [")
	for _, u := range control {
		b.WriteString(Render(u, "      "))
	}
	w(2, "]")
	if len(pl.exports) > 0 {
		w(2, "# What each guest account may reach: its events through the gate, its")
		w(2, "# heartbeats, the JetStream requests of its agent, its inbox.")
		w(2, "exports = [")
		for _, e := range pl.exports {
			kind := "service"
			if e.stream {
				kind = "stream"
			}
			accs := make([]string, len(e.accounts))
			for i, a := range e.accounts {
				accs[i] = quote(a)
			}
			w(3, "{%s: %s, accounts: [%s]}", kind, quote(e.subject), strings.Join(accs, ", "))
		}
		w(2, "]")
		w(2, "imports = [")
		for _, gi := range pl.guests {
			if gi.direct {
				w(3, "{service: {account: %s, subject: %s}}", quote(gi.acc), quote(guestagent.Subject(gi.guest, ">")))
				for _, s := range srvSubjects() {
					w(3, "{service: {account: %s, subject: %s}}", quote(gi.acc), quote(s))
				}
			}
		}
		w(2, "]")
	}
	w(1, "}")
}

// write writes the guest's account: its limits, users, the exports of a
// direct agent's services and its imports.
func (gi guestImports) write(b *strings.Builder, w lineWriter, lim Limits) {
	w(1, "%s {", quote(gi.acc))
	w(2, "# guest %s: no JetStream of its own; at most %d connections, %d subscriptions, %d-byte messages", gi.guest, lim.MaxConnections, lim.MaxSubscriptions, lim.MaxPayload)
	w(2, "limits: { max_connections: %d, max_subscriptions: %d, max_payload: %d }", lim.MaxConnections, lim.MaxSubscriptions, lim.MaxPayload)
	w(2, "users = [")
	for _, u := range gi.users {
		b.WriteString(Render(u, "      "))
	}
	w(2, "]")
	if gi.direct {
		w(2, "exports = [")
		w(3, "{service: %s, accounts: [%s], response_threshold: %s}", quote(guestagent.Subject(gi.guest, ">")), quote(ControlAccount), quote(ResponseExpiry.Round(time.Second).String()))
		for _, s := range srvSubjects() {
			w(3, "{service: %s, accounts: [%s]}", quote(s), quote(ControlAccount))
		}
		w(2, "]")
	}
	w(2, "imports = [")
	for _, s := range gi.services {
		if s[0] == s[1] {
			w(3, "{service: {account: %s, subject: %s}}", quote(ControlAccount), quote(s[0]))
		} else {
			w(3, "{service: {account: %s, subject: %s}, to: %s}", quote(ControlAccount), quote(s[0]), quote(s[1]))
		}
	}
	for _, s := range gi.streams {
		w(3, "{stream: {account: %s, subject: %s}}", quote(ControlAccount), quote(s))
	}
	w(2, "]")
	w(1, "}")
}

// srvSubjects are the micro discovery subjects of an agent ($SRV.PING,
// .INFO, .STATS, each also for the vmguard-agent service and its
// instances): each guest account exports them and the control account
// imports them from each, so that `nats micro ls` there lists the agents
// in their own accounts (every import of a subject gets the request).
func srvSubjects() []string {
	var out []string
	for _, verb := range []string{"PING", "INFO", "STATS"} {
		out = append(out, "$SRV."+verb, "$SRV."+verb+"."+guestagent.ServiceName, "$SRV."+verb+"."+guestagent.ServiceName+".*")
	}
	return out
}
