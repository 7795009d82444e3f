package natsconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Flags are the connection options every vmguard client takes, named and
// read from the environment as the `nats` CLI does. Embed them in a kong
// command line with `embed:""`.
type Flags struct {
	NATS    string `name:"nats" env:"NATS_URL" default:"nats://127.0.0.1:4222" help:"NATS server URL (a password in it shows in ps: prefer $NATS_URL or --creds/--nkey)."`
	Creds   string `name:"creds" env:"NATS_CREDS" placeholder:"FILE" help:"User credentials file (JWT and seed) to connect with."`
	NKey    string `name:"nkey" env:"NATS_NKEY" placeholder:"FILE" help:"User nkey seed file to connect with."`
	TLSCA   string `name:"tlsca" env:"NATS_CA" placeholder:"FILE" help:"CA certificate(s) (PEM) to verify the server's TLS certificate with."`
	TLSCert string `name:"tlscert" env:"NATS_CERT" placeholder:"FILE" help:"Client TLS certificate (PEM), with --tlskey."`
	TLSKey  string `name:"tlskey" env:"NATS_KEY" placeholder:"FILE" help:"Client TLS private key (PEM), with --tlscert."`
}

// Options checks the credential and TLS files and returns the nats.go
// options that use them. Each error names the flag, the file and what is
// wrong with it.
func (f Flags) Options() ([]nats.Option, error) {
	var opts []nats.Option
	if f.Creds != "" && f.NKey != "" {
		return nil, errors.New("--creds and --nkey: give one, not both")
	}
	if f.Creds != "" {
		b, err := os.ReadFile(f.Creds)
		if err != nil {
			return nil, fmt.Errorf("--creds %s: %w", f.Creds, err)
		}
		if _, err := nkeys.ParseDecoratedUserNKey(b); err != nil {
			return nil, fmt.Errorf("--creds %s: not a user credentials file (want a user JWT and a user nkey seed, as `nsc generate creds` writes): %w", f.Creds, err)
		}
		if j, _ := nkeys.ParseDecoratedJWT(b); !strings.HasPrefix(j, "eyJ") {
			return nil, fmt.Errorf("--creds %s: not a user credentials file: no user JWT (an nkey seed alone goes to --nkey)", f.Creds)
		}
		opts = append(opts, nats.UserCredentials(f.Creds))
	}
	if f.NKey != "" {
		if _, err := os.Stat(f.NKey); err != nil {
			return nil, fmt.Errorf("--nkey %s: %w", f.NKey, err)
		}
		o, err := nats.NkeyOptionFromSeed(f.NKey)
		if err != nil {
			return nil, fmt.Errorf("--nkey %s: not a user nkey seed (want a line starting with SU): %w", f.NKey, err)
		}
		opts = append(opts, o)
	}
	t, err := f.tlsConfig()
	if err != nil {
		return nil, err
	}
	if t != nil {
		opts = append(opts, nats.Secure(t))
	}
	return opts, nil
}

// tlsConfig builds the client's TLS configuration, or nil when no TLS flag
// is given.
func (f Flags) tlsConfig() (*tls.Config, error) {
	if f.TLSCA == "" && f.TLSCert == "" && f.TLSKey == "" {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.TLSCA != "" {
		b, err := os.ReadFile(f.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("--tlsca %s: %w", f.TLSCA, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--tlsca %s: no PEM certificate in it", f.TLSCA)
		}
		t.RootCAs = pool
	}
	switch {
	case f.TLSCert != "" && f.TLSKey == "":
		return nil, fmt.Errorf("--tlscert %s: needs its private key in --tlskey", f.TLSCert)
	case f.TLSKey != "" && f.TLSCert == "":
		return nil, fmt.Errorf("--tlskey %s: needs its certificate in --tlscert", f.TLSKey)
	case f.TLSCert != "":
		for _, a := range [][2]string{{"--tlscert", f.TLSCert}, {"--tlskey", f.TLSKey}} {
			if _, err := os.Stat(a[1]); err != nil {
				return nil, fmt.Errorf("%s %s: %w", a[0], a[1], err)
			}
		}
		c, err := tls.LoadX509KeyPair(f.TLSCert, f.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("--tlscert %s, --tlskey %s: not a PEM certificate and its matching private key: %w", f.TLSCert, f.TLSKey, err)
		}
		t.Certificates = []tls.Certificate{c}
	}
	return t, nil
}

// Identity says whom the client connects as, for errors: never a secret.
func (f Flags) Identity() string {
	var who []string
	if u, err := url.Parse(strings.Split(f.NATS, ",")[0]); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			who = append(who, "user "+u.User.Username())
		} else {
			who = append(who, "a token")
		}
	}
	if f.Creds != "" {
		who = append(who, "credentials "+f.Creds)
	}
	if f.NKey != "" {
		who = append(who, "nkey "+f.NKey)
	}
	if f.TLSCert != "" {
		who = append(who, "client certificate "+f.TLSCert)
	}
	if len(who) == 0 {
		return "no credentials"
	}
	return strings.Join(who, ", ")
}

// Args returns the credential and TLS flags as command-line arguments for
// a child vmguard process (the process driver's agents). They name files,
// never secrets.
func (f Flags) Args() []string {
	var args []string
	for _, a := range [][2]string{{"--creds", f.Creds}, {"--nkey", f.NKey}, {"--tlsca", f.TLSCA}, {"--tlscert", f.TLSCert}, {"--tlskey", f.TLSKey}} {
		if a[1] != "" {
			args = append(args, a[0], a[1])
		}
	}
	return args
}

// Connect connects to f.NATS as name with f's credentials and TLS, a 5 s
// dial timeout and extra. A refused identity is reported as such
// (ConnectError); the URL's password never shows.
func (f Flags) Connect(name string, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := f.Options()
	if err != nil {
		return nil, err
	}
	opts = append([]nats.Option{nats.Name(name), nats.Timeout(5 * time.Second)}, opts...)
	nc, err := nats.Connect(f.NATS, append(opts, extra...)...)
	if err != nil {
		return nil, ConnectError(f.NATS, f.Identity(), err)
	}
	return nc, nil
}
