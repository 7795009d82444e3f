package natsconn

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmguard/vmguard/internal/natsd"
)

// TestFlagsTLSAndNKey: the nats CLI's flags connect to a server that
// requires TLS with client certificates and an nkey user; each missing or
// wrong piece is refused, saying what.
func TestFlagsTLSAndNKey(t *testing.T) {
	url, tl, seed := natsd.StartTestSecure(t, "user")
	good := Flags{NATS: url, NKey: seed, TLSCA: tl.CA, TLSCert: tl.ClientCert, TLSKey: tl.ClientKey}
	nc, err := good.Connect("test")
	if err != nil {
		t.Fatalf("connect with TLS and nkey: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if !nc.TLSRequired() {
		t.Error("connected without TLS")
	}
	nc.Close()

	other := natsd.WriteTestTLS(t, t.TempDir(), "other")
	refused := func(what string, f Flags, want string) {
		t.Helper()
		nc, err := f.Connect("test")
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected", what)
			return
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want it to say %q", what, err, want)
		}
	}
	noKey := good
	noKey.NKey = ""
	refused("no nkey", noKey, "authorization failed")
	noCert := good
	noCert.TLSCert, noCert.TLSKey = "", ""
	refused("no client certificate", noCert, "connect to NATS")
	wrongCA := good
	wrongCA.TLSCA = other.CA
	refused("a CA that did not sign the server's certificate", wrongCA, "certificate")
	wrongClient := good
	wrongClient.TLSCert, wrongClient.TLSKey = other.ClientCert, other.ClientKey
	refused("a client certificate of another CA", wrongClient, "connect to NATS")
}

// TestFlagsFileErrors: errors in the credential and TLS files name the
// flag, the file and what is wrong, before any connection.
func TestFlagsFileErrors(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.txt")
	if err := os.WriteFile(junk, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tl := natsd.WriteTestTLS(t, dir, "t")
	seed, _ := natsd.WriteTestNKey(t, dir, "u")
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		f    Flags
		want []string
	}{
		{Flags{TLSCA: junk}, []string{"--tlsca", junk, "no PEM certificate"}},
		{Flags{TLSCA: missing}, []string{"--tlsca", missing, "no such file"}},
		{Flags{TLSCert: tl.ClientCert}, []string{"--tlscert", tl.ClientCert, "--tlskey"}},
		{Flags{TLSKey: tl.ClientKey}, []string{"--tlskey", tl.ClientKey, "--tlscert"}},
		{Flags{TLSCert: tl.ClientCert, TLSKey: tl.ServerKey}, []string{"--tlscert", tl.ClientCert, tl.ServerKey, "matching private key"}},
		{Flags{TLSCert: missing, TLSKey: tl.ClientKey}, []string{"--tlscert", missing, "no such file"}},
		{Flags{NKey: junk}, []string{"--nkey", junk, "not a user nkey seed"}},
		{Flags{NKey: missing}, []string{"--nkey", missing, "no such file"}},
		{Flags{Creds: junk}, []string{"--creds", junk, "not a user credentials file"}},
		{Flags{Creds: seed}, []string{"--creds", seed, "no user JWT"}},
		{Flags{Creds: missing}, []string{"--creds", missing, "no such file"}},
		{Flags{Creds: seed, NKey: seed}, []string{"--creds and --nkey"}},
	} {
		_, err := tc.f.Options()
		if err == nil {
			t.Errorf("%+v: no error", tc.f)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: %v, want it to say %q", tc.f, err, w)
			}
		}
	}
}
