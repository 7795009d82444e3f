package guestauth

import (
	"fmt"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// User is one user of a nats-server configuration.
type User struct {
	// Name and Password are the user's credentials.
	Name     string
	Password string
	// NKey, if set, is the user's public nkey (U…): the user then signs
	// in with its seed, and Name and Password are not written (Name stays
	// in the comment).
	NKey string
	// Permissions restrict the user; nil gives full rights (hosts, the
	// failover controller, operators).
	Permissions *Permissions
	// InProcessOnly limits the user to in-process connections: the one the
	// embedded `vmguard server` opens to provision the stream, which
	// presents no credentials (see the no_auth_user of
	// vmguard init's nats.conf).
	InProcessOnly bool
	// ConnectionTypes, if set (and not InProcessOnly), are the only
	// connection types the user may use (nats-server's
	// allowed_connection_types: "STANDARD", "LEAFNODE", …).
	ConnectionTypes []string
	// Comment, if set, is written above the user's entry.
	Comment string
}

// ServerPermissions returns p as nats-server permissions.
func (p Permissions) ServerPermissions() *server.Permissions {
	sp := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: append([]string(nil), p.Publish...)},
		Subscribe: &server.SubjectPermission{Allow: append([]string(nil), p.Subscribe...)},
	}
	if p.Responses > 0 {
		sp.Response = &server.ResponsePermission{MaxMsgs: 1, Expires: p.Responses}
	}
	return sp
}

// ServerUsers returns users as nats-server options users (server.Options
// Users), for an embedded server in tests.
func ServerUsers(users ...User) []*server.User {
	out := make([]*server.User, 0, len(users))
	for _, u := range users {
		su := &server.User{Username: u.Name, Password: u.Password}
		if u.Permissions != nil {
			su.Permissions = u.Permissions.ServerPermissions()
		}
		if u.InProcessOnly {
			su.AllowedConnectionTypes = map[string]struct{}{"IN_PROCESS": {}}
		}
		out = append(out, su)
	}
	return out
}

// Render returns u as one entry of a nats-server `authorization { users =
// [ ... ] }` list, indented by indent.
func Render(u User, indent string) string {
	var b strings.Builder
	w := func(depth int, format string, args ...any) {
		b.WriteString(indent)
		b.WriteString(strings.Repeat("  ", depth))
		fmt.Fprintf(&b, format, args...)
		b.WriteByte('\n')
	}
	for line := range strings.Lines(u.Comment) {
		w(0, "# %s", strings.TrimRight(line, "\n"))
	}
	w(0, "{")
	if u.NKey != "" {
		w(1, "nkey: %s", quote(u.NKey))
	} else {
		w(1, "user: %s", quote(u.Name))
		w(1, "password: %s", quote(u.Password))
	}
	types := u.ConnectionTypes
	if u.InProcessOnly {
		types = []string{"IN_PROCESS"}
	}
	if len(types) > 0 {
		q := make([]string, len(types))
		for i, t := range types {
			q[i] = quote(t)
		}
		w(1, "allowed_connection_types: [%s]", strings.Join(q, ", "))
	}
	if p := u.Permissions; p != nil {
		w(1, "permissions: {")
		list := func(name string, subjects []string) {
			w(2, "%s: {", name)
			w(3, "allow: [")
			for _, s := range subjects {
				w(4, "%s", quote(s))
			}
			w(3, "]")
			w(2, "}")
		}
		list("publish", p.Publish)
		list("subscribe", p.Subscribe)
		if p.Responses > 0 {
			w(2, "allow_responses: { max: 1, expires: %s }", quote(p.Responses.String()))
		}
		w(1, "}")
	}
	w(0, "}")
	return b.String()
}

// RenderAuthorization returns a whole nats-server `authorization` block
// holding users, preceded by `no_auth_user: <noAuthUser>` if that is set
// (the user a client that presents no credentials connects as).
func RenderAuthorization(users []User, noAuthUser string) string {
	var b strings.Builder
	if noAuthUser != "" {
		fmt.Fprintf(&b, "no_auth_user: %s\n", quote(noAuthUser))
	}
	b.WriteString("authorization {\n")
	b.WriteString("  users = [\n")
	for _, u := range users {
		b.WriteString(Render(u, "    "))
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

// quote writes s as a double-quoted nats-server config string; quoted, a
// leading $ is not a variable reference.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, "\\x%02x", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
