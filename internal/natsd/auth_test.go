package natsd

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckAuth: a server beyond loopback must authenticate its clients;
// loopback needs nothing; an anonymous user reachable from the network
// counts as none.
func TestCheckAuth(t *testing.T) {
	dir := t.TempDir()
	conf := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	users := conf("users.conf", `authorization { users = [ {user: a, password: b} ] }`)
	nkeys := conf("nkeys.conf", `authorization { users = [ {nkey: UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4} ] }`)
	accounts := conf("accounts.conf", `accounts { A { users = [ {user: a, password: b} ] } }`)
	token := conf("token.conf", `authorization { token: s3cret }`)
	openNoAuth := conf("open.conf", `no_auth_user: a
authorization { users = [ {user: a, password: b} ] }`)
	inProcess := conf("inproc.conf", `no_auth_user: s
authorization { users = [ {user: s, password: x, allowed_connection_types: ["IN_PROCESS"]}, {user: a, password: b} ] }`)
	leafOpen := conf("leaf-open.conf", `leafnodes { port: 7422 }`)
	leafLoopback := conf("leaf-loopback.conf", `leafnodes { host: 127.0.0.1, port: 7422 }`)
	leafOwnUsers := conf("leaf-users.conf", `leafnodes { port: 7422, authorization { users = [ {user: l, password: p} ] } }`)
	leafClientUsers := conf("leaf-accounts.conf", `accounts { A { users = [ {user: a, password: b, allowed_connection_types: ["LEAFNODE"]} ] } }
leafnodes { port: 7422 }`)
	for _, tc := range []struct {
		name, host, file string
		ok               bool
	}{
		{"loopback clients, open leafnodes listener", "127.0.0.1", leafOpen, false},
		{"loopback clients, leafnodes listener on loopback", "127.0.0.1", leafLoopback, true},
		{"loopback clients, leafnodes listener with its own users", "127.0.0.1", leafOwnUsers, true},
		{"everywhere, leafnodes listener with the account users", "0.0.0.0", leafClientUsers, true},
		{"loopback, no auth", "127.0.0.1", "", true},
		{"localhost, no auth", "localhost", "", true},
		{"ipv6 loopback, no auth", "::1", "", true},
		{"everywhere, no auth", "0.0.0.0", "", false},
		{"ipv6 everywhere, no auth", "::", "", false},
		{"an address, no auth", "192.0.2.1", "", false},
		{"everywhere, users", "0.0.0.0", users, true},
		{"everywhere, nkeys", "0.0.0.0", nkeys, true},
		{"everywhere, account users", "0.0.0.0", accounts, true},
		{"everywhere, token", "0.0.0.0", token, true},
		{"everywhere, anonymous user from the network", "0.0.0.0", openNoAuth, false},
		{"everywhere, anonymous user in-process only", "0.0.0.0", inProcess, true},
		{"loopback, anonymous user from the network", "127.0.0.1", openNoAuth, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := Config{StoreDir: dir, Host: tc.host, ConfigFile: tc.file}.Options()
			if err != nil {
				t.Fatal(err)
			}
			err = CheckAuth(opts)
			if tc.ok != (err == nil) {
				t.Fatalf("CheckAuth: %v, want ok=%v", err, tc.ok)
			}
			if err != nil && (!errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "--insecure") || !strings.Contains(err.Error(), "-c")) {
				t.Errorf("refusal does not say how to fix it: %v", err)
			}
		})
	}
}

// TestStartRefusesOpenServer: Start refuses an open server beyond loopback
// before it listens or locks the store, and starts it with Insecure.
func TestStartRefusesOpenServer(t *testing.T) {
	store := t.TempDir()
	if _, err := Start(Config{StoreDir: store, Host: "0.0.0.0", Port: -1, Interval: true}); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("open server on 0.0.0.0: %v, want ErrUnauthorized", err)
	}
	s, err := Start(Config{StoreDir: store, Host: "0.0.0.0", Port: -1, Interval: true, Insecure: true})
	if err != nil {
		t.Fatalf("open server on 0.0.0.0 with Insecure: %v", err)
	}
	s.Shutdown()
	s.WaitForShutdown()
}
