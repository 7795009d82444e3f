// Command vmguard is the one binary of vmguard: the daemons (server, agent,
// host, failover, up) and the operator tools (status, events, pkg, node,
// check, apply). Each subcommand lives in a cmd_<name>.go file with an
// options struct and a Run method; main only parses and maps exit codes.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/vmguard/vmguard/internal/cliparse"
	"github.com/vmguard/vmguard/internal/natsconn"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = defaultVersion

// defaultVersion is the version of a build that did not set one.
const defaultVersion = "0.1.0-dev"

// commit may be set at build time with -ldflags "-X main.commit=$(git
// rev-parse HEAD)" where the build's VCS stamp is missing (-buildvcs=false,
// a build outside the repository).
var commit string

// Exit codes (DESIGN §6).
const (
	exitOK    = cliparse.ExitOK
	exitError = cliparse.ExitError
	exitUsage = cliparse.ExitUsage
)

// globals are the options every subcommand shares.
type globals struct {
	natsconn.Flags `embed:""`
	Stdout         io.Writer        `kong:"-"`
	Stderr         io.Writer        `kong:"-"`
	Ver            kong.VersionFlag `name:"version" help:"Print the version and exit."`
}

// buildVersion is what --version prints: versionLine of this build, with
// the commit given at build time where the VCS stamp has none.
func buildVersion() string {
	bi, _ := debug.ReadBuildInfo()
	if bi != nil && commit != "" {
		bi.Settings = append(bi.Settings, debug.BuildSetting{Key: "vcs.revision", Value: commit})
	}
	return versionLine(version, bi)
}

// versionLine says which build this is: the version (set with -ldflags
// "-X main.version=...", else the module version `go install` recorded),
// the commit and its time from the build's VCS stamp (marked modified when
// the tree had changes), and the Go version.
func versionLine(v string, bi *debug.BuildInfo) string {
	if bi == nil {
		return fmt.Sprintf("vmguard %s commit unknown", v)
	}
	if mv := bi.Main.Version; v == defaultVersion && mv != "" && mv != "(devel)" {
		v = mv
	}
	var rev, at string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if rev == "" {
				rev = s.Value
			}
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	line := "commit unknown (no VCS stamp in this build)"
	if rev != "" {
		line = "commit " + rev
		var notes []string
		if at != "" {
			notes = append(notes, at)
		}
		if modified {
			notes = append(notes, "modified")
		}
		if len(notes) > 0 {
			line += " (" + strings.Join(notes, ", ") + ")"
		}
	}
	return fmt.Sprintf("vmguard %s %s %s", v, line, bi.GoVersion)
}

// cli is the command tree. Subcommands add one field each.
type cli struct {
	globals

	// Daemons.
	Up       upCmd       `cmd:"" group:"Run" help:"Run everything in one process on an embedded server: the failover controller, a host manager per node and their guests (demo config by default)."`
	Server   serverCmd   `cmd:"" group:"Run" help:"Run an embedded NATS server with JetStream holding the event log."`
	Init     initCmd     `cmd:"" group:"Run" help:"Generate a secure set-up from a cluster config: an nkey user per role, a TLS CA with server and client certificates, the server config."`
	Host     hostCmd     `cmd:"" group:"Run" help:"Run the host manager of one node: start, restart and halt its packages; guest monitor; node lease."`
	Guard    guardCmd    `cmd:"" group:"Run" help:"Run the node guard (vmguard host starts it): stop the node's guests when the host manager stops petting it."`
	Failover failoverCmd `cmd:"" group:"Run" help:"Run the failover controller: place packages, fail them over, record lost nodes (any number of instances, one leads)."`
	Agent    agentCmd    `cmd:"" group:"Run" help:"Run the guest agent: run, watch and report processes inside a guest."`

	// Operator tools.
	Status   statusCmd   `cmd:"" group:"Watch" help:"Show the cluster, its nodes and packages (cmviewcl); --at for any past moment."`
	Events   eventsCmd   `cmd:"" group:"Watch" help:"Show the event timeline, one line per event (-o json for raw CloudEvents)."`
	Explain  explainCmd  `cmd:"" group:"Watch" help:"Show the chain of causes that put a package where it is."`
	UI       uiCmd       `cmd:"" name:"ui" group:"Watch" help:"Serve the web console of a running cluster (read-only, live): status, timeline, explain, time travel."`
	Verify   verifyCmd   `cmd:"" group:"Watch" help:"Check the whole log for vmguard's safety and liveness promises; exit 1 naming the sequences that break one."`
	Pkg      pkgCmd      `cmd:"" group:"Operate" help:"Operator commands on a package: run, halt, enable, disable, move, reset."`
	Node     nodeCmd     `cmd:"" group:"Operate" help:"Operator commands on a node: run, halt."`
	Resource resourceCmd `cmd:"" group:"Operate" help:"Generic resources of the nodes (cmsetresource): set one's status for the packages that need it."`
	Check    checkCmd    `cmd:"" group:"Configure" help:"Check a cluster configuration file (cmcheckconf)."`
	Apply    applyCmd    `cmd:"" group:"Configure" help:"Put a cluster configuration in force by recording it in the log (cmapplyconf)."`
	Import   importCmd   `cmd:"" group:"Configure" help:"Write a vmguard cluster file from Serviceguard modular package files, with a report of what could not be carried over."`

	GuestPermissions guestPermCmd `cmd:"" name:"guest-permissions" group:"Configure" hidden:"" help:"Retired: use vmguard init (guests in accounts of their own; docs/security.md)."`
	Simulate         simulateCmd  `cmd:"" group:"Configure" help:"What-if: replay the log through the cores under a changed config and show which decisions would differ."`
	Sim              simCmd       `cmd:"" group:"Configure" help:"Deterministic simulation of a whole cluster under random faults from a seed; prints the seed and the event sequence's hash."`

	Bench benchCmd `cmd:"" group:"Measure" help:"Measure vmguard's speed (see BENCHMARKS.md)."`
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks an error caused by how the command was called (exit 2).
var errUsage = errors.New("usage")

// run parses args, runs the subcommand and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	var c cli
	c.Stdout, c.Stderr = stdout, stderr
	prog := cliparse.Program{
		Name:        "vmguard",
		Description: "vmguard keeps applications inside VM guests running and fails whole guests over to another host.\nEvery decision is an event in the NATS JetStream stream VMGUARD.",
		Version:     buildVersion(),
	}
	kctx, code, done := prog.Parse(&c, args, stdout, stderr)
	if done {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	kctx.BindTo(ctx, (*context.Context)(nil))
	kctx.Bind(commandPath(kctx.Command()))
	c.Flags = upOperatorIdentity(c.Flags, kctx.Command(), ".")
	return prog.Code(kctx.Run(&c.globals), stderr, func(err error) bool { return errors.Is(err, errUsage) })
}
