package natsd

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// ErrUnauthorized is returned by Start when the server would accept
// clients from beyond this machine without authorization, and Insecure
// was not set.
var ErrUnauthorized = errors.New("refusing to listen beyond loopback without authorization")

// Loopback reports whether host names only this machine: a loopback
// address or "localhost". The empty host and the unspecified addresses
// (0.0.0.0, ::) listen everywhere and are not loopback.
func Loopback(host string) bool {
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Authorization says how opts authenticate clients, or "" when they do
// not: any client may connect and do anything. It counts users and nkey
// users (from authorization {} or accounts {}), a single user or token, an
// auth callout, trusted operators (JWT), custom authentication and
// verified client certificates (TLS verify). A no_auth_user that a network
// client may use makes the server open again: anonymous clients get its
// rights.
func Authorization(opts *server.Options) (how string, open string) {
	switch {
	case len(opts.TrustedOperators) > 0 || len(opts.TrustedKeys) > 0:
		how = "trusted operators (JWT)"
	case opts.AuthCallout != nil:
		how = "auth callout"
	case opts.CustomClientAuthentication != nil:
		how = "custom authentication"
	case len(opts.Users) > 0 || len(opts.Nkeys) > 0:
		how = fmt.Sprintf("%d users, %d nkey users", len(opts.Users), len(opts.Nkeys))
	case opts.Username != "":
		how = "a single user"
	case opts.Authorization != "":
		how = "a token"
	case opts.TLSVerify:
		how = "verified client certificates"
	}
	if how == "" || opts.NoAuthUser == "" {
		return how, ""
	}
	for _, u := range opts.Users {
		if u.Username == opts.NoAuthUser && networkAllowed(u.AllowedConnectionTypes) {
			return how, fmt.Sprintf("no_auth_user %q may connect over the network, so anonymous clients get its rights (restrict it with allowed_connection_types: [\"IN_PROCESS\"])", u.Username)
		}
	}
	return how, ""
}

// networkAllowed reports whether connection types allow a client from
// another machine (no restriction allows every type).
func networkAllowed(types map[string]struct{}) bool {
	if len(types) == 0 {
		return true
	}
	for _, t := range []string{"STANDARD", "WEBSOCKET", "LEAFNODE", "MQTT"} {
		if _, ok := types[t]; ok {
			return true
		}
	}
	return false
}

// CheckAuth refuses options that listen for clients, or for leaf nodes
// (a leafnodes {} listener), beyond loopback with no authorization (or an
// anonymous user reachable from the network), saying how to fix it.
func CheckAuth(opts *server.Options) error {
	if err := checkClientAuth(opts); err != nil {
		return err
	}
	return checkLeafAuth(opts)
}

// checkLeafAuth refuses a leafnodes {} listener beyond loopback (no host:
// everywhere) that authenticates nobody. A leaf connection is checked
// against the block's own user, nkey or users, and without them against
// the client users (Authorization).
func checkLeafAuth(opts *server.Options) error {
	ln := opts.LeafNode
	if ln.Port == 0 || Loopback(ln.Host) {
		return nil
	}
	if ln.Username != "" || ln.Nkey != "" || len(ln.Users) > 0 {
		return nil
	}
	how, open := Authorization(opts)
	if how != "" && open == "" {
		return nil
	}
	why := "neither its leafnodes block nor the server has users, nkeys, accounts with users, auth callout or operator"
	if open != "" {
		why = open
	}
	host := ln.Host
	if host == "" {
		host = "0.0.0.0"
	}
	return fmt.Errorf("%w: the leafnodes listener on %s lets any machine that reaches port %d join as a leaf node and reach every account it binds to, but %s. "+
		"Fix it with one of: `-c nats.conf` with users or nkeys (`vmguard init --leaf URL` writes one, docs/security.md); "+
		"leafnodes { host: 127.0.0.1 }; or `--insecure` to accept an open server (trusted networks and tests only)",
		ErrUnauthorized, host, ln.Port, why)
}

// checkClientAuth is CheckAuth's check of the client listener.
func checkClientAuth(opts *server.Options) error {
	if Loopback(opts.Host) {
		return nil
	}
	how, open := Authorization(opts)
	if how != "" && open == "" {
		return nil
	}
	why := "the server has no users, nkeys, accounts with users, auth callout or operator"
	if open != "" {
		why = open
	}
	return fmt.Errorf("%w: --host %s lets any machine that reaches port %d connect and run commands in every guest, but %s. "+
		"Fix it with one of: `-c nats.conf` with users or nkeys (`vmguard init -f cluster.yaml --out DIR` writes one, docs/security.md); "+
		"`--host 127.0.0.1` (this machine only); or `--insecure` to accept an open server (trusted networks and tests only)",
		ErrUnauthorized, opts.Host, opts.Port, why)
}
