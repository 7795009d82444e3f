package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/examples"
	"github.com/vmguard/vmguard/internal/natsconn"
	"github.com/vmguard/vmguard/internal/natsd"
)

// upSecureDir is where `vmguard up --secure` keeps its set-up in its store.
const upSecureDir = "secure"

// upSecure is the set-up of `vmguard up --secure`: the directory vmguard
// init's generator wrote (without TLS) and the connections up opened with
// its identities.
type upSecure struct {
	dir string // absolute

	mu    sync.Mutex
	conns []*nats.Conn
}

// secureSetup returns up's set-up in <store>/secure, generating it on the
// first start from the configuration given with -f, else the built-in
// demo. A store that has a log but no set-up needs -f: the identities
// follow the configuration's nodes and guests, and the one in force is
// in a log up cannot read before its server has its users.
func (c *upCmd) secureSetup(fileCl *config.Cluster, out io.Writer) (*upSecure, error) {
	if !natsd.Loopback(c.Host) {
		return nil, fmt.Errorf("%w: --secure --host %s: up's set-up has no TLS and is for this machine only; beyond loopback use vmguard init and vmguard server -c (docs/security.md)", errUsage, c.Host)
	}
	dir, err := filepath.Abs(filepath.Join(c.Store, upSecureDir))
	if err != nil {
		return nil, fmt.Errorf("find --store %s: %w", c.Store, err)
	}
	sec := &upSecure{dir: dir}
	if _, err := os.Stat(filepath.Join(dir, "nats.conf")); err == nil {
		return sec, nil // idempotent: the set-up of an earlier start
	}
	cl := fileCl
	if cl == nil {
		if _, err := os.Stat(filepath.Join(c.Store, "nats")); err == nil {
			return nil, fmt.Errorf("%w: --secure on store %s, which has a log but no secure set-up yet: give the configuration its identities are made for with -f FILE", errUsage, c.Store)
		}
		if cl, err = config.Parse(examples.DemoName, examples.Demo); err != nil {
			return nil, fmt.Errorf("the built-in demo config: %w", err)
		}
	}
	ic := &initCmd{Out: dir, Dir: dir, Valid: 825, plain: true,
		URL: fmt.Sprintf("nats://%s:%d", c.Host, c.Port)}
	if err := ic.generate(cl, out); err != nil {
		return nil, fmt.Errorf("generate the secure set-up: %w", err)
	}
	return sec, nil
}

// nkey is the nkey seed file of identity id.
func (s *upSecure) nkey(id string) string { return filepath.Join(s.dir, id, "user.nk") }

// connect connects to url as identity id; close closes the connection.
func (s *upSecure) connect(ctx context.Context, url, id, name string) (*nats.Conn, error) {
	if _, err := os.Stat(s.nkey(id)); err != nil {
		return nil, fmt.Errorf("identity %s: %w (the configuration has a node or guest the set-up in %s was not made for: stop up, remove that directory and start again, or use vmguard init)", id, err, s.dir)
	}
	nc, err := natsconn.Flags{NATS: url, NKey: s.nkey(id)}.Connect(name, nats.MaxReconnects(-1))
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.conns = append(s.conns, nc)
	s.mu.Unlock()
	return nc, nil
}

// close closes every connection connect opened.
func (s *upSecure) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, nc := range s.conns {
		nc.Close()
	}
	s.conns = nil
}

// guestArgs are the `vmguard agent` arguments of guest's identity: its
// nkey seed file (the file's name, not the seed, is on the command line).
func (s *upSecure) guestArgs(guest string) []string {
	return []string{"--nkey", s.nkey("guest-" + guest)}
}

// here says when the CLI finds the operator-admin identity by itself: the
// set-up is in up's default store of the current directory.
func (s *upSecure) here() string {
	if d, err := filepath.Abs(filepath.Join(".vmguard", upSecureDir)); err == nil && d == s.dir {
		return " (or just NATS_URL in this directory: the CLI finds the nkey)"
	}
	return ""
}

// banner says how operators connect, and which nodes or guests of cl the
// set-up has no identity for.
func (s *upSecure) banner(url string, cl *config.Cluster) []string {
	lines := []string{
		fmt.Sprintf("Secure (--secure): identities in %s (mode 0600); anonymous clients are refused.", s.dir),
		fmt.Sprintf("In another terminal: export NATS_URL=%s NATS_NKEY=%s%s", url, s.nkey("operator-admin"), s.here()),
		fmt.Sprintf("  then vmguard status | events -f | explain PKG | pkg ...  (read-only: NATS_NKEY=%s)", s.nkey("operator-readonly")),
	}
	var missing []string
	seen := map[string]bool{}
	for _, n := range cl.Nodes {
		seen["host-"+n] = true
	}
	for _, p := range cl.Packages {
		for _, pg := range packageGuests(p) {
			seen["guest-"+pg.name] = true
		}
	}
	for id := range seen {
		if _, err := os.Stat(s.nkey(id)); err != nil {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		lines = append(lines, fmt.Sprintf("WARNING: the set-up has no identity for %s (made for another configuration): remove %s and restart to regenerate it",
			strings.Join(missing, ", "), s.dir))
	}
	return lines
}

// upOperatorCommands are the subcommands that may act as up's
// operator-admin by default: the operator's tools, never a daemon (a host
// manager or an agent must not run as an operator by accident).
var upOperatorCommands = []string{"status", "events", "explain", "ui", "verify", "pkg", "node", "resource", "apply", "simulate"}

// upOperatorIdentity returns f with up's operator-admin identity when f
// names none (no --creds, --nkey, NATS_CREDS, NATS_NKEY, no user in the
// URL), the URL is on loopback, the command is an operator's and dir (the
// current directory) holds up's default store with a secure set-up
// (.vmguard/secure/operator-admin/user.nk): so `vmguard up` and `vmguard
// status` in the same directory work with no set-up. Otherwise f as is.
func upOperatorIdentity(f natsconn.Flags, command, dir string) natsconn.Flags {
	if f.Creds != "" || f.NKey != "" {
		return f
	}
	first, _, _ := strings.Cut(command, " ")
	if !slices.Contains(upOperatorCommands, first) {
		return f
	}
	u, err := url.Parse(strings.Split(f.NATS, ",")[0])
	if err != nil || u.User != nil || !natsd.Loopback(u.Hostname()) {
		return f
	}
	nk, err := filepath.Abs(filepath.Join(dir, ".vmguard", upSecureDir, "operator-admin", "user.nk"))
	if err != nil {
		return f
	}
	if _, err := os.Stat(nk); err != nil {
		return f
	}
	f.NKey = nk
	return f
}
