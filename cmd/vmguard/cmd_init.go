package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/vmguard/vmguard/internal/guestauth"
)

// initCmd is `vmguard init`: everything a secure deployment needs, from a
// cluster config: an nkey user per role, a TLS CA with server and client
// certificates, and the server config.
type initCmd struct {
	File  string   `name:"file" short:"f" required:"" type:"existingfile" placeholder:"cluster.yaml" help:"The cluster configuration: its nodes and its packages' guests get identities."`
	Out   string   `name:"out" required:"" placeholder:"DIR" help:"Directory to write into (created, mode 0700)."`
	Force bool     `name:"force" help:"Regenerate everything in an initialized --out (every machine then needs its new files)."`
	SANs  []string `name:"san" placeholder:"NAME|IP" help:"A name or address clients use to reach the server, for its certificate (repeat; localhost and 127.0.0.1 are always in)."`
	Valid int      `name:"valid-days" default:"825" help:"Validity of the certificates, in days."`
}

// identity is one NATS user vmguard init generates.
type identity struct {
	name  string // directory and certificate common name
	what  string // comment
	perms *guestauth.Permissions
	guest *guestauth.Guest // a guest's identity: its own account
}

// Run writes the files.
func (c *initCmd) Run(ctx context.Context, g *globals) error {
	cl, err := loadConfigFile(g, c.File)
	if err != nil {
		return err
	}
	conf := filepath.Join(c.Out, "nats.conf")
	if _, err := os.Stat(conf); err == nil && !c.Force {
		return fmt.Errorf("%w: --out %s is initialized already (%s exists); nothing was changed. --force regenerates every key and certificate", errUsage, c.Out, conf)
	}
	if c.Valid < 1 {
		return fmt.Errorf("%w: --valid-days %d: want at least 1", errUsage, c.Valid)
	}
	controller, reader := guestauth.Controller(), guestauth.Reader()
	ids := []identity{
		{name: "controller", what: "the failover controller (reads everything; appends placements, package.halting and node.lost; the election and snapshot buckets)", perms: &controller},
		{name: "operator-admin", what: "operators' CLI (full rights)"},
		{name: "operator-readonly", what: "operators' read-only CLI (status, events, explain: reads the log and the buckets, changes nothing)", perms: &reader},
	}
	guests := map[string]*guestauth.Guest{}
	var order []string
	hosts := map[string]*guestauth.Host{}
	for _, n := range cl.Nodes {
		hosts[n] = &guestauth.Host{Node: n}
	}
	for _, p := range cl.Packages {
		gs := guests[p.Guest.Name]
		if gs == nil {
			gs = &guestauth.Guest{Name: p.Guest.Name, InboxPrefix: guestauth.InboxPrefix(p.Guest.Name)}
			guests[p.Guest.Name] = gs
			order = append(order, p.Guest.Name)
		}
		gs.Packages = append(gs.Packages, p.Name)
		gs.Nodes = append(gs.Nodes, p.Nodes...)
		for _, n := range p.Nodes {
			if h := hosts[n]; h != nil {
				h.Packages = append(h.Packages, p.Name)
				h.Guests = append(h.Guests, p.Guest.Name)
			}
		}
	}
	for _, n := range cl.Nodes {
		perms, err := guestauth.ForHost(*hosts[n])
		if err != nil {
			return fmt.Errorf("node %s: %w", n, err)
		}
		h := hosts[n]
		what := fmt.Sprintf("the host manager of node %s (its node's events and lease key; the lifecycle events of package %s; requests to guest %s)",
			n, strings.Join(slices.Compact(slices.Sorted(slices.Values(h.Packages))), ", "), strings.Join(slices.Compact(slices.Sorted(slices.Values(h.Guests))), ", "))
		ids = append(ids, identity{name: "host-" + n, what: what, perms: &perms})
	}
	for _, name := range order {
		perms, err := guestauth.For(*guests[name])
		if err != nil {
			return fmt.Errorf("guest %s: %w", name, err)
		}
		gs := guests[name]
		what := fmt.Sprintf("the agent in guest %s (process events of package %s; lease watch of node %s; its own requests)",
			name, strings.Join(slices.Compact(slices.Sorted(slices.Values(gs.Packages))), ", "), strings.Join(slices.Compact(slices.Sorted(slices.Values(gs.Nodes))), ", "))
		ids = append(ids, identity{name: "guest-" + name, what: what, perms: &perms, guest: gs})
	}
	if err := os.MkdirAll(c.Out, 0o700); err != nil {
		return fmt.Errorf("create --out %s: %w", c.Out, err)
	}
	valid := time.Duration(c.Valid) * 24 * time.Hour
	ca, err := newCA("vmguard CA "+cl.Cluster, valid)
	if err != nil {
		return err
	}
	w := &initWriter{}
	w.pem(filepath.Join(c.Out, "ca.pem"), "CERTIFICATE", ca.der)
	w.key(filepath.Join(c.Out, "ca-key.pem"), ca.key)
	sans := append([]string{"localhost", "127.0.0.1", "::1"}, c.SANs...)
	sder, skey, err := ca.issue("vmguard server", sans, x509.ExtKeyUsageServerAuth, valid)
	if err != nil {
		return err
	}
	w.pem(filepath.Join(c.Out, "server.pem"), "CERTIFICATE", sder)
	w.key(filepath.Join(c.Out, "server-key.pem"), skey)
	users := []guestauth.User{{Name: "vmguard-server", Password: rand.Text(), InProcessOnly: true,
		Comment: "`vmguard server`'s own in-process connection (no_auth_user); no network client can use it."}}
	var guestUsers []guestauth.AccountGuest
	for _, id := range ids {
		dir := filepath.Join(c.Out, id.name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		kp, err := nkeys.CreateUser()
		if err != nil {
			return fmt.Errorf("create nkey of %s: %w", id.name, err)
		}
		seed, _ := kp.Seed()
		pub, _ := kp.PublicKey()
		w.file(filepath.Join(dir, "user.nk"), append(seed, '\n'))
		cder, ckey, err := ca.issue(id.name, nil, x509.ExtKeyUsageClientAuth, valid)
		if err != nil {
			return err
		}
		w.pem(filepath.Join(dir, "cert.pem"), "CERTIFICATE", cder)
		w.key(filepath.Join(dir, "key.pem"), ckey)
		w.pem(filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.der)
		w.file(filepath.Join(dir, "env"), []byte(fmt.Sprintf("# %s: copy this directory to its machine as /etc/vmguard/%s and source this file\nNATS_NKEY=/etc/vmguard/%[2]s/user.nk\nNATS_CA=/etc/vmguard/%[2]s/ca.pem\nNATS_CERT=/etc/vmguard/%[2]s/cert.pem\nNATS_KEY=/etc/vmguard/%[2]s/key.pem\n", id.what, id.name)))
		u := guestauth.User{Name: id.name, NKey: pub, Permissions: id.perms, Comment: id.name + ": " + id.what}
		if id.guest != nil {
			guestUsers = append(guestUsers, guestauth.AccountGuest{Guest: *id.guest, User: u})
			continue
		}
		users = append(users, u)
	}
	accounts, err := guestauth.RenderAccounts(users, guestUsers, guestauth.DefaultLimits, "vmguard-server")
	if err != nil {
		return err
	}
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	var b strings.Builder
	fmt.Fprintf(&b, "# Generated by `vmguard init -f %s` for cluster %q. Start with:\n", c.File, cl.Cluster)
	fmt.Fprintf(&b, "#   vmguard server -c %s --host 0.0.0.0 --store /var/lib/vmguard\n", conf)
	b.WriteString("# Every client needs its identity's directory (NATS_NKEY, NATS_CA, NATS_CERT, NATS_KEY in its env file).\n")
	fmt.Fprintf(&b, "tls {\n  cert_file: %q\n  key_file: %q\n  ca_file: %q\n  verify: true\n}\n", abs(filepath.Join(c.Out, "server.pem")), abs(filepath.Join(c.Out, "server-key.pem")), abs(filepath.Join(c.Out, "ca.pem")))
	// A stream's ingest queue holds what the store has not written yet; the
	// server's default (128 MiB a stream) lets a guest flooding its subject
	// queue minutes of junk in front of every later append. Bounded, the
	// flood is dropped once the store falls behind, not queued.
	b.WriteString("jetstream {\n  max_buffered_size: 8MB\n  max_buffered_msgs: 10000\n}\n")
	b.WriteString(accounts)
	w.file(conf, []byte(b.String()))
	if w.err != nil {
		return w.err
	}
	names := make([]string, 0, len(ids))
	for _, id := range ids {
		names = append(names, id.name)
	}
	fmt.Fprintf(g.Stdout, "vmguard init: wrote %s: nats.conf, a CA, a server certificate (%s) and %d identities (%s), files mode 0600\n",
		c.Out, strings.Join(sans, ", "), len(ids), strings.Join(names, ", "))
	return nil
}

// initWriter writes files mode 0600, keeping the first error.
type initWriter struct{ err error }

func (w *initWriter) file(path string, b []byte) {
	if w.err != nil {
		return
	}
	_ = os.Remove(path) // --force: a new file gets mode 0600 even if the old one had another
	if err := os.WriteFile(path, b, 0o600); err != nil {
		w.err = fmt.Errorf("write %s: %w", path, err)
	}
}

func (w *initWriter) pem(path, typ string, der []byte) {
	w.file(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func (w *initWriter) key(path string, k *ecdsa.PrivateKey) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil && w.err == nil {
		w.err = fmt.Errorf("encode key %s: %w", path, err)
	}
	w.pem(path, "EC PRIVATE KEY", der)
}

// certAuthority is a CA that issues certificates.
type certAuthority struct {
	cert *x509.Certificate
	der  []byte
	key  *ecdsa.PrivateKey
}

// newCA makes a self-signed ECDSA P-256 CA.
func newCA(cn string, valid time.Duration) (*certAuthority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(valid),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &certAuthority{cert: cert, der: der, key: key}, nil
}

// issue makes a certificate for cn (with sans, names or addresses) signed
// by the CA.
func (ca *certAuthority) issue(cn string, sans []string, usage x509.ExtKeyUsage, valid time.Duration) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key of %s: %w", cn, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(valid),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	for _, s := range sans {
		if ip := net.ParseIP(s); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate of %s: %w", cn, err)
	}
	return der, key, nil
}

// serial is a random 128-bit certificate serial number.
func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		panic(errors.New("crypto/rand failed")) // rand.Reader does not fail on Linux
	}
	return n
}
