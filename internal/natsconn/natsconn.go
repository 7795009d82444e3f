// Package natsconn is what every vmguard client shares to connect to NATS:
// the credential and TLS flags (following the `nats` CLI's names and
// environment variables), URLs with their passwords redacted for logs and
// errors, and connect errors that say plainly when authorization failed.
// The slim guest agent uses it, so it must not import nats-server.
package natsconn

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
)

// Redact returns the NATS URL list s (comma separated) with every
// password and token replaced by "xxxxx", for logs and errors. The user
// name stays: it says which identity a client uses.
func Redact(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		u, err := url.Parse(p)
		if err != nil || u.User == nil {
			if at := strings.LastIndex(p, "@"); at >= 0 && err != nil {
				// Unparseable but has userinfo: keep only what follows it.
				p = "xxxxx@" + p[at+1:]
			}
			parts[i] = p
			continue
		}
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else {
			u.User = url.User("xxxxx") // a lone user part is a token
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// IsAuthError reports whether err is the server refusing the client's
// credentials (or their absence), rather than a server that is away.
func IsAuthError(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired) ||
		(err != nil && strings.Contains(strings.ToLower(err.Error()), "authorization violation"))
}

// ConnectError wraps a failed connect to natsURL with what to do about
// it: an authorization failure says so, naming the identity used; any
// other says the server may not run. The URL's password never shows.
func ConnectError(natsURL, identity string, err error) error {
	if IsAuthError(err) {
		return fmt.Errorf("connect to NATS at %s: authorization failed (%s): %w: the server refused these credentials; check the user and password in the URL, --creds, --nkey or the client certificate", Redact(natsURL), identity, err)
	}
	return fmt.Errorf("connect to NATS at %s: %w (is `vmguard server` or `vmguard up` running? set --nats or $NATS_URL)", Redact(natsURL), err)
}

// ReadURLFile reads a NATS URL from path (the process driver hands agents
// their URL this way rather than on the command line). The file must not
// be readable by group or others.
func ReadURLFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("read NATS URL file %s: %w", path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("read NATS URL file %s: mode %v lets others read it, want 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read NATS URL file %s: %w", path, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("read NATS URL file %s: empty", path)
	}
	return s, nil
}
