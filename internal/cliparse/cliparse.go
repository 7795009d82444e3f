// Package cliparse parses a command line with kong the way both of
// vmguard's binaries do: usage shown on an error, compact help, --version,
// and exit codes returned rather than os.Exit called, so that a test can
// run a whole command in-process.
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

// Program is what a binary's help and messages say about it.
type Program struct {
	// Name prefixes every message the parse or the run writes to stderr.
	Name string
	// Description heads the help.
	Description string
	// Version is the line a kong.VersionFlag in the grammar prints.
	Version string
}

// exitPanic unwinds kong's Exit (help, --version) out of Parse.
type exitPanic struct{}

// Parse parses args into grammar, a kong command-line struct. When parsing
// alone ends the command (--help, --version, a usage error, a grammar kong
// refuses), done is true and code is the exit code, the message already
// written to stdout or stderr; otherwise kctx is the parsed command to run.
func (p Program) Parse(grammar any, args []string, stdout, stderr io.Writer) (kctx *kong.Context, code int, done bool) {
	exited := false
	parser, err := kong.New(grammar,
		kong.Name(p.Name),
		kong.Description(p.Description),
		kong.Vars{"version": p.Version},
		kong.UsageOnError(),
		kong.Writers(stdout, stderr),
		kong.Exit(func(c int) { exited = true; code = c; panic(exitPanic{}) }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", p.Name, err)
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
		fmt.Fprintf(stderr, "%s: %v\n", p.Name, err)
		return nil, ExitUsage, true
	}
	return kctx, ExitOK, false
}

// Code returns the exit code for the error a command's run ended with:
// ExitOK for nil; else it writes "name: err" to stderr and returns
// ExitUsage where usage(err) says the command was called wrongly, ExitError
// otherwise.
func (p Program) Code(err error, stderr io.Writer, usage func(error) bool) int {
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(stderr, "%s: %v\n", p.Name, err)
	if usage(err) {
		return ExitUsage
	}
	return ExitError
}
