package main

import (
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/vmguard/vmguard/internal/natsd"
)

// TestScripts runs the CLI scripts in testdata/script (STYLE §8): each
// script gets its own embedded JetStream server ($NATS_URL, which every
// vmguard command reads) and the examples directory ($EXAMPLES). `vmguard`
// in a script is this package's code (TestMain), run as its own process.
func TestScripts(t *testing.T) {
	examples, err := filepath.Abs("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			s, err := natsd.Start(natsd.Config{StoreDir: filepath.Join(env.WorkDir, ".nats"), Port: -1, Interval: true})
			if err != nil {
				return err
			}
			env.Defer(s.Shutdown)
			env.Setenv("NATS_URL", s.ClientURL())
			env.Setenv("EXAMPLES", examples)
			return nil
		},
	})
}
