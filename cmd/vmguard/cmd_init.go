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
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/vmguard/vmguard/config"
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
	URL   string   `name:"url" placeholder:"URL" help:"The server's client URL as the machines reach it, for each identity's env file (default tls://<the first --san, else localhost>:4222)."`
	Dir   string   `name:"install-dir" default:"/etc/vmguard" placeholder:"DIR" help:"Where each machine keeps its identity's directory (copied from --out): the env files and leaf configs name their files there."`

	Leaf       string   `name:"leaf" placeholder:"URL" help:"Guests connect to leaf nodes on their hosts (vmguard host --leaf), not to the server: the URL of the server's leafnode port as hosts reach it, e.g. tls://nats.example.com:7422 (its name in --san). Writes leaf-<node>/ for each node; guests' identities are valid only on the leaves of their packages' nodes."`
	LeafListen string   `name:"leaf-listen" default:"0.0.0.0:4223" placeholder:"HOST:PORT" help:"With --leaf: where each host's leaf node listens for its guests."`
	LeafSANs   []string `name:"leaf-san" placeholder:"NAME|IP" help:"With --leaf: a name or address guests use to reach their host's leaf node (e.g. the hypervisor bridge's 192.168.122.1, the same on every host), for each leaf's certificate (repeat; the node's name, localhost and 127.0.0.1 are always in)."`

	// plain leaves TLS out (no CA, no certificates, no tls {} block): the
	// set-up of `vmguard up --secure`, whose server listens on loopback
	// only. Not a flag: a server other machines reach needs TLS.
	plain bool
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
	return c.generate(cl, g.Stdout)
}

// generate writes the set-up of cl into c.Out and says so on out: the
// identities, the CA and the server's certificate (unless plain), each
// identity's files, the leaf nodes' (with --leaf) and nats.conf.
func (c *initCmd) generate(cl *config.Cluster, out io.Writer) error {
	conf := filepath.Join(c.Out, "nats.conf")
	if _, err := os.Stat(conf); err == nil && !c.Force {
		return fmt.Errorf("%w: --out %s is initialized already (%s exists); nothing was changed. --force regenerates every key and certificate", errUsage, c.Out, conf)
	}
	if c.Valid < 1 {
		return fmt.Errorf("%w: --valid-days %d: want at least 1", errUsage, c.Valid)
	}
	var leaf *leafPlan
	if c.Leaf != "" && !c.plain {
		var err error
		if leaf, err = c.leafPlan(); err != nil {
			return err
		}
	}
	ids, err := initIdentities(cl)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.Out, 0o700); err != nil {
		return fmt.Errorf("create --out %s: %w", c.Out, err)
	}
	valid := time.Duration(c.Valid) * 24 * time.Hour
	w := &initWriter{}
	var ca *certAuthority
	sans := compactKeep(append([]string{"localhost", "127.0.0.1", "::1"}, c.SANs...))
	if !c.plain {
		if ca, err = c.writeCA(w, cl, sans, valid); err != nil {
			return err
		}
	}
	users, guestUsers, err := c.writeIdentities(w, ids, ca, leaf, valid)
	if err != nil {
		return err
	}
	if leaf != nil {
		if err := leaf.write(w, c.Out, cl.Nodes, guestUsers, ca, valid); err != nil {
			return err
		}
	}
	accounts, err := guestauth.RenderAccounts(users, guestUsers, guestauth.DefaultLimits, "vmguard-server")
	if err != nil {
		return err
	}
	w.file(conf, []byte(c.serverConf(cl, conf, leaf)+accounts))
	if w.err != nil {
		return w.err
	}
	names := make([]string, 0, len(ids))
	for _, id := range ids {
		names = append(names, id.name)
	}
	if c.plain {
		fmt.Fprintf(out, "vmguard init: wrote %s: nats.conf (no TLS) and %d identities (%s), files mode 0600\n",
			c.Out, len(ids), strings.Join(names, ", "))
	} else {
		fmt.Fprintf(out, "vmguard init: wrote %s: nats.conf, a CA, a server certificate (%s) and %d identities (%s), files mode 0600\n",
			c.Out, strings.Join(sans, ", "), len(ids), strings.Join(names, ", "))
	}
	if leaf != nil {
		fmt.Fprintf(out, "vmguard init: guests connect to their host's leaf node (%s; leaf-<node>/leaf.conf, vmguard host --leaf), which connects to %s\n", c.LeafListen, c.Leaf)
	}
	return nil
}

// initIdentities returns cl's identities, each with its permissions: the
// controller, the operators, a host manager per node and an agent per
// guest (in configuration order).
func initIdentities(cl *config.Cluster) ([]identity, error) {
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
		for _, pg := range packageGuests(p) {
			gs := guests[pg.name]
			if gs == nil {
				gs = &guestauth.Guest{Name: pg.name, InboxPrefix: guestauth.InboxPrefix(pg.name)}
				guests[pg.name] = gs
				order = append(order, pg.name)
			}
			gs.Packages = append(gs.Packages, p.Name)
			gs.Nodes = append(gs.Nodes, pg.nodes...)
			for _, n := range pg.nodes {
				if h := hosts[n]; h != nil {
					h.Packages = append(h.Packages, p.Name)
					h.Guests = append(h.Guests, pg.name)
				}
			}
		}
	}
	for _, n := range cl.Nodes {
		perms, err := guestauth.ForHost(*hosts[n])
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", n, err)
		}
		h := hosts[n]
		what := fmt.Sprintf("the host manager of node %s (its node's events and lease key; the lifecycle events of package %s; requests to guest %s)",
			n, sortedList(h.Packages), sortedList(h.Guests))
		ids = append(ids, identity{name: "host-" + n, what: what, perms: &perms})
	}
	for _, name := range order {
		perms, err := guestauth.For(*guests[name])
		if err != nil {
			return nil, fmt.Errorf("guest %s: %w", name, err)
		}
		gs := guests[name]
		what := fmt.Sprintf("the agent in guest %s (process events of package %s; lease watch of node %s; its own requests)",
			name, sortedList(gs.Packages), sortedList(gs.Nodes))
		ids = append(ids, identity{name: "guest-" + name, what: what, perms: &perms, guest: gs})
	}
	return ids, nil
}

// sortedList is names sorted, each once, joined with ", ".
func sortedList(names []string) string {
	return strings.Join(slices.Compact(slices.Sorted(slices.Values(names))), ", ")
}

// writeCA writes a new CA of cl and the server's certificate, for sans,
// both valid for valid, and returns the CA.
func (c *initCmd) writeCA(w *initWriter, cl *config.Cluster, sans []string, valid time.Duration) (*certAuthority, error) {
	ca, err := newCA("vmguard CA "+cl.Cluster, valid)
	if err != nil {
		return nil, err
	}
	w.pem(filepath.Join(c.Out, "ca.pem"), "CERTIFICATE", ca.der)
	w.key(filepath.Join(c.Out, "ca-key.pem"), ca.key)
	sder, skey, err := ca.issue("vmguard server", sans, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, valid)
	if err != nil {
		return nil, err
	}
	w.pem(filepath.Join(c.Out, "server.pem"), "CERTIFICATE", sder)
	w.key(filepath.Join(c.Out, "server-key.pem"), skey)
	return ca, nil
}

// writeIdentities writes each identity's directory: its nkey, its env file
// and, with a CA, its client certificate. It returns the users of the
// control account (the server's own first) and the guests' users, each in
// an account of its own.
func (c *initCmd) writeIdentities(w *initWriter, ids []identity, ca *certAuthority, leaf *leafPlan, valid time.Duration) ([]guestauth.User, []guestauth.AccountGuest, error) {
	users := []guestauth.User{{Name: "vmguard-server", Password: rand.Text(), InProcessOnly: true,
		Comment: "`vmguard server`'s own in-process connection (no_auth_user); no network client can use it."}}
	var guestUsers []guestauth.AccountGuest
	for _, id := range ids {
		dir := filepath.Join(c.Out, id.name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, fmt.Errorf("create %s: %w", dir, err)
		}
		kp, err := nkeys.CreateUser()
		if err != nil {
			return nil, nil, fmt.Errorf("create nkey of %s: %w", id.name, err)
		}
		seed, _ := kp.Seed()
		pub, _ := kp.PublicKey()
		w.file(filepath.Join(dir, "user.nk"), append(seed, '\n'))
		if ca != nil {
			cder, ckey, err := ca.issue(id.name, nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, valid)
			if err != nil {
				return nil, nil, err
			}
			w.pem(filepath.Join(dir, "cert.pem"), "CERTIFICATE", cder)
			w.key(filepath.Join(dir, "key.pem"), ckey)
			w.pem(filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.der)
		}
		w.file(filepath.Join(dir, "env"), []byte(c.envFile(id, leaf)))
		u := guestauth.User{Name: id.name, NKey: pub, Permissions: id.perms, Comment: id.name + ": " + id.what}
		if id.guest != nil {
			guestUsers = append(guestUsers, guestauth.AccountGuest{Guest: *id.guest, User: u})
			continue
		}
		if leaf != nil {
			u.ConnectionTypes = []string{"STANDARD"} // no leaf node binds to the control account
		}
		users = append(users, u)
	}
	return users, guestUsers, nil
}

// serverConf is nats.conf before its accounts: how to start the server
// (conf is its path), TLS (unless plain), JetStream's bounds and, with
// --leaf, the hosts' leaf node listener.
func (c *initCmd) serverConf(cl *config.Cluster, conf string, leaf *leafPlan) string {
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	var b strings.Builder
	if c.plain {
		fmt.Fprintf(&b, "# Generated by `vmguard up --secure` for cluster %q: loopback only, no TLS.\n", cl.Cluster)
	} else {
		fmt.Fprintf(&b, "# Generated by `vmguard init -f %s` for cluster %q. Start with:\n", c.File, cl.Cluster)
		fmt.Fprintf(&b, "#   vmguard server -c %s --host 0.0.0.0 --store /var/lib/vmguard\n", conf)
		b.WriteString("# Every client needs its identity's directory (NATS_NKEY, NATS_CA, NATS_CERT, NATS_KEY in its env file).\n")
	}
	if !c.plain {
		fmt.Fprintf(&b, "tls {\n  cert_file: %q\n  key_file: %q\n  ca_file: %q\n  verify: true\n}\n", abs(filepath.Join(c.Out, "server.pem")), abs(filepath.Join(c.Out, "server-key.pem")), abs(filepath.Join(c.Out, "ca.pem")))
	}
	// A stream's ingest queue holds what the store has not written yet; the
	// server's default (128 MiB a stream) lets a guest flooding its subject
	// queue minutes of junk in front of every later append. Bounded, the
	// flood is dropped once the store falls behind, not queued.
	b.WriteString("jetstream {\n  max_buffered_size: 8MB\n  max_buffered_msgs: 10000\n}\n")
	if leaf != nil {
		fmt.Fprintf(&b, "# The hosts' leaf nodes (vmguard host --leaf) connect here, each guest's account as\n# its own leaf user (leaf-<node>-<guest>, allowed only LEAFNODE connections).\n")
		fmt.Fprintf(&b, "leafnodes {\n  port: %d\n  tls {\n    cert_file: %q\n    key_file: %q\n    ca_file: %q\n    verify: true\n  }\n}\n",
			leaf.hubPort, abs(filepath.Join(c.Out, "server.pem")), abs(filepath.Join(c.Out, "server-key.pem")), abs(filepath.Join(c.Out, "ca.pem")))
	}
	return b.String()
}

// envFile is the env file of identity id: its server URL and files, as
// installed under --install-dir; with --leaf a guest's URL is its host's
// leaf node and a host's names its leaf config (VMGUARD_LEAF).
func (c *initCmd) envFile(id identity, leaf *leafPlan) string {
	in := filepath.Join(c.Dir, id.name)
	url := c.serverURL()
	if leaf != nil && id.guest != nil {
		url = leaf.guestURL()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# %s: copy this directory to its machine as %s and source this file\n", id.what, in)
	fmt.Fprintf(&b, "NATS_URL=%s\nNATS_NKEY=%s\n", url, filepath.Join(in, "user.nk"))
	if !c.plain {
		fmt.Fprintf(&b, "NATS_CA=%s\nNATS_CERT=%s\nNATS_KEY=%s\n", filepath.Join(in, "ca.pem"), filepath.Join(in, "cert.pem"), filepath.Join(in, "key.pem"))
	}
	if node, ok := strings.CutPrefix(id.name, "host-"); ok && leaf != nil {
		fmt.Fprintf(&b, "# vmguard host --leaf: this node's leaf node for its guests (copy %s too)\nVMGUARD_LEAF=%s\n",
			filepath.Join(c.Dir, "leaf-"+node), filepath.Join(c.Dir, "leaf-"+node, "leaf.conf"))
	}
	return b.String()
}

// serverURL is --url, else tls://<first --san, else localhost>:4222.
func (c *initCmd) serverURL() string {
	if c.URL != "" {
		return c.URL
	}
	host := "localhost"
	if len(c.SANs) > 0 {
		host = c.SANs[0]
	}
	return "tls://" + net.JoinHostPort(host, "4222")
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
func (ca *certAuthority) issue(cn string, sans []string, usage []x509.ExtKeyUsage, valid time.Duration) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key of %s: %w", cn, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(valid),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage,
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

// leafPlan is what --leaf asks for.
type leafPlan struct {
	hubURL  string
	hubPort int
	host    string
	port    int
	sans    []string
	dir     string // --install-dir
}

// guestURL is the URL guests reach their host's leaf node at: the first
// --leaf-san, else 127.0.0.1, and the --leaf-listen port.
func (lp *leafPlan) guestURL() string {
	host := "127.0.0.1"
	if len(lp.sans) > 0 {
		host = lp.sans[0]
	}
	return "tls://" + net.JoinHostPort(host, strconv.Itoa(lp.port))
}

// leafPlan checks --leaf, --leaf-listen and --leaf-san.
func (c *initCmd) leafPlan() (*leafPlan, error) {
	u, err := url.Parse(c.Leaf)
	if err != nil || (u.Scheme != "tls" && u.Scheme != "nats") || u.Hostname() == "" || u.Port() == "" {
		return nil, fmt.Errorf("%w: --leaf %s: want the server's leafnode URL, tls://HOST:PORT", errUsage, c.Leaf)
	}
	hubPort, err := strconv.Atoi(u.Port())
	if err != nil || hubPort < 1 || hubPort > 65535 {
		return nil, fmt.Errorf("%w: --leaf %s: port %q", errUsage, c.Leaf, u.Port())
	}
	host, port, err := net.SplitHostPort(c.LeafListen)
	if err != nil {
		return nil, fmt.Errorf("%w: --leaf-listen %s: %v", errUsage, c.LeafListen, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return nil, fmt.Errorf("%w: --leaf-listen %s: port %q", errUsage, c.LeafListen, port)
	}
	return &leafPlan{hubURL: "tls://" + u.Host, hubPort: hubPort, host: host, port: p, sans: c.LeafSANs, dir: c.Dir}, nil
}

// write writes leaf-<node>/ for each node: the leaf's certificate (server
// for its guests, client towards the hub), the CA and leaf.conf with the
// guests that may run there. It moves each guest's user from the
// server's accounts to those leaves: guests[i].User is cleared and its
// Leaves are the server's leaf users of its nodes.
func (lp *leafPlan) write(w *initWriter, out string, nodes []string, guests []guestauth.AccountGuest, ca *certAuthority, valid time.Duration) error {
	leafGuests := map[string][]guestauth.LeafGuest{}
	for i := range guests {
		ag := &guests[i]
		perms, err := guestauth.LeafPermissions(ag.Guest)
		if err != nil {
			return fmt.Errorf("guest %s: %w", ag.Guest.Name, err)
		}
		for _, n := range slices.Compact(slices.Sorted(slices.Values(ag.Guest.Nodes))) {
			kp, err := nkeys.CreateUser()
			if err != nil {
				return fmt.Errorf("create nkey of %s: %w", guestauth.LeafUser(n, ag.Guest.Name), err)
			}
			seed, _ := kp.Seed()
			pub, _ := kp.PublicKey()
			ag.Leaves = append(ag.Leaves, guestauth.User{Name: guestauth.LeafUser(n, ag.Guest.Name), NKey: pub, Permissions: &perms,
				ConnectionTypes: []string{"LEAFNODE"},
				Comment:         guestauth.LeafUser(n, ag.Guest.Name) + ": node " + n + "'s leaf node, for guest " + ag.Guest.Name + "'s account (its JetStream reads, its inbox)"})
			u := ag.User
			if u.Permissions != nil {
				lp := guestauth.OnLeaf(*u.Permissions)
				u.Permissions = &lp
			}
			leafGuests[n] = append(leafGuests[n], guestauth.LeafGuest{Guest: ag.Guest, User: u, RemoteSeed: string(seed)})
		}
		ag.User = guestauth.User{}
	}
	for _, n := range nodes {
		dir := filepath.Join(out, "leaf-"+n)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		sans := compactKeep(append([]string{"localhost", "127.0.0.1", "::1", n}, lp.sans...))
		der, key, err := ca.issue("leaf-"+n, sans, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, valid)
		if err != nil {
			return err
		}
		cert, keyFile, caFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "ca.pem")
		w.pem(cert, "CERTIFICATE", der)
		w.key(keyFile, key)
		w.pem(caFile, "CERTIFICATE", ca.der)
		in := filepath.Join(lp.dir, "leaf-"+n) // where the host keeps this directory
		files := guestauth.TLSFiles{Cert: filepath.Join(in, "cert.pem"), Key: filepath.Join(in, "key.pem"), CA: filepath.Join(in, "ca.pem")}
		text, err := guestauth.RenderLeaf(guestauth.Leaf{
			Node: n, Host: lp.host, Port: lp.port, Hub: []string{lp.hubURL}, Listen: files, Remote: files,
			HostPassword: rand.Text(), Guests: leafGuests[n], Limits: guestauth.DefaultLimits,
		})
		if err != nil {
			return err
		}
		w.file(filepath.Join(dir, "leaf.conf"), []byte(text))
	}
	return w.err
}

// compactKeep drops repeats from names, keeping the first of each in order.
func compactKeep(names []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// packageGuest is a guest of a package and the nodes it may run on.
type packageGuest struct {
	name  string
	nodes []string
}

// packageGuests returns p's guests: its guest on each of its nodes, or for
// a multi-node package its own guest per node (config.Package.GuestOn),
// each on that node only.
func packageGuests(p config.Package) []packageGuest {
	if !p.MultiNode() {
		return []packageGuest{{p.Guest.Name, p.Nodes}}
	}
	out := make([]packageGuest, 0, len(p.Nodes))
	for _, n := range p.Nodes {
		out = append(out, packageGuest{p.GuestOn(n), []string{n}})
	}
	return out
}
