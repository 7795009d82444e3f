package config

import (
	"errors"
	"os"
	"testing"

	"github.com/vmguard/vmguard/events"
)

// FuzzParse: no file makes the loader panic; an error is a list of
// problems; and every configuration it accepts round-trips through the JSON
// that cluster.config_applied records (same hash, still valid) and fits in
// that event, so that `vmguard apply` can record what `vmguard check`
// accepted.
func FuzzParse(f *testing.F) {
	for _, p := range []string{"../examples/demo.yaml", "../examples/virsh.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(valid))
	f.Add([]byte("cluster: x\nnodes: [a]\npackages: [{name: p, nodes: [a], services: [{name: s, cmd: [\"\\e[2J\"]}]}]\n"))
	f.Add([]byte("a: &x [*x]\n"))
	codec, err := events.NewCodec()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("Parse error %v (%T) is not a list of problems", err, err)
			}
			return
		}
		b, err := c.JSON()
		if err != nil {
			t.Fatalf("accepted config does not encode: %v", err)
		}
		back, err := FromJSON(b)
		if err != nil {
			t.Fatalf("recorded config %s does not decode: %v", b, err)
		}
		if err := back.Validate(); err != nil {
			t.Fatalf("recorded config %s is not valid: %v", b, err)
		}
		h1, _ := c.Hash()
		h2, err := back.Hash()
		if err != nil || h1 != h2 {
			t.Fatalf("hash changed across the record: %s, %s (%v)", h1, h2, err)
		}
		e := events.New("/vmguard/cli/fuzz", c.Cluster, events.ConfigApplied{Config: b, Hash: h1, File: "fuzz.yaml", By: "fuzz"})
		if _, err := codec.Encode(e); err != nil {
			t.Fatalf("accepted config does not fit in config_applied: %v", err)
		}
	})
}
