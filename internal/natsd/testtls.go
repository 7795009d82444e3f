package natsd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
)

// TestTLS are PEM files of a test CA, a server certificate for 127.0.0.1
// and localhost, and a client certificate, all signed by the CA.
type TestTLS struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

// WriteTestTLS generates a CA (ECDSA P-256) and server and client
// certificates signed by it into dir, for tests of TLS clients.
func WriteTestTLS(t testing.TB, dir, name string) TestTLS {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	write := func(file, typ string, der []byte) string {
		p := filepath.Join(dir, file)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, file string) (string, string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}
		if usage == x509.ExtKeyUsageServerAuth {
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return write(file+".pem", "CERTIFICATE", der), write(file+"-key.pem", "EC PRIVATE KEY", kder)
	}
	var out TestTLS
	out.CA = write("ca.pem", "CERTIFICATE", caDER)
	out.ServerCert, out.ServerKey = leaf(2, "server", x509.ExtKeyUsageServerAuth, "server")
	out.ClientCert, out.ClientKey = leaf(3, "client", x509.ExtKeyUsageClientAuth, "client")
	return out
}

// WriteTestNKey generates a user nkey, writes its seed to dir/name.nk
// (0600) and returns the seed file and the public key.
func WriteTestNKey(t testing.TB, dir, name string) (seedFile, public string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	public, err = kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	seedFile = filepath.Join(dir, name+".nk")
	if err := os.WriteFile(seedFile, append(seed, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	return seedFile, public
}

// StartTestSecure runs an embedded JetStream server that requires TLS with
// verified client certificates and one nkey user (its seed written as
// user.nk), shut down when the test ends; it returns the server's URL, the
// TLS files and the user's seed file.
func StartTestSecure(t testing.TB, user string) (url string, tl TestTLS, seedFile string) {
	t.Helper()
	dir := t.TempDir()
	tl = WriteTestTLS(t, dir, "test")
	seedFile, pub := WriteTestNKey(t, dir, user)
	srv := StartTestConf(t, dir, fmt.Sprintf("tls { cert_file: %q, key_file: %q, ca_file: %q, verify: true }\nauthorization { users = [ {nkey: %s} ] }\n",
		tl.ServerCert, tl.ServerKey, tl.CA, pub))
	return fmt.Sprintf("nats://127.0.0.1:%d", srv.Addr().(*net.TCPAddr).Port), tl, seedFile
}
