// Package cliparse parses a command line with kong the way both of
// vmguard's binaries do: usage shown on an error, compact help, and exit
// codes returned rather than os.Exit called, so that a test can run a
// whole command in-process.
package cliparse

import (
	"fmt"
	"io"

	"github.com/alecthomas/kong"
)

// Exit codes (DESIGN §6).
const (
	ExitOK    = 0
	ExitError = 1
	ExitUsage = 2
)

// exitPanic unwinds kong's Exit (help, --version) out of Parse.
type exitPanic struct{}

// Parse parses args into grammar, a kong command-line struct, for the
// program name. When parsing alone ends the command (--help, --version, a
// usage error, a grammar kong refuses), done is true and code is the exit
// code, the message already written to stdout or stderr; otherwise kctx is
// the parsed command to run.
func Parse(name, description string, grammar any, args []string, stdout, stderr io.Writer) (kctx *kong.Context, code int, done bool) {
	exited := false
	parser, err := kong.New(grammar,
		kong.Name(name),
		kong.Description(description),
		kong.UsageOnError(),
		kong.Writers(stdout, stderr),
		kong.Exit(func(c int) { exited = true; code = c; panic(exitPanic{}) }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return nil, ExitError, true
	}
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(exitPanic); ok && exited {
				kctx, done = nil, true
				return
			}
			panic(r)
		}
	}()
	kctx, err = parser.Parse(args)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return nil, ExitUsage, true
	}
	return kctx, ExitOK, false
}
