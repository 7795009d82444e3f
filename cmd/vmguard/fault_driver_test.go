package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

// driverFaultConfig is app with an exec-driver guest whose start command
// runs script (through sh) and whose status says it is down.
func driverFaultConfig(script string) string {
	return fmt.Sprintf(`cluster: faults
node_timeout: %s
guest_timeout: 3s
nodes: [node1, node2]
packages:
  - name: app
    nodes: [node1, node2]
    guest:
      name: appvm
      driver: exec
      start_timeout: 5s
      exec:
        start: ["sh", "-c", %q]
        stop: ["true"]
        status: ["false"]
        timeout: 5s
    services:
      - name: main
        cmd: ["sh", "-c", "while :; do sleep 1; done"]
        halt_timeout: 1s
`, faultNodeTimeout, script)
}

// TestFaultDriverOutputAndFailure runs app with a driver whose start command
// prints a lot, or invalid UTF-8, or terminal escape sequences, and fails:
// the start fails on node1, then on node2, each within its bound, and the
// package ends failed on every node with a reason that fits the schema.
func TestFaultDriverOutputAndFailure(t *testing.T) {
	for _, tc := range []struct{ name, script string }{
		{"40 bytes", `echo "cannot start: no such domain appvm" >&2; exit 1`},
		{"4 KB", `head -c 4096 /dev/zero | tr '\0' x >&2; exit 1`},
		{"1 MB", `head -c 1048576 /dev/zero | tr '\0' y; exit 1`},
		{"invalid UTF-8", `printf 'bad \377\376 bytes \300\n' >&2; exit 1`},
		{"escape sequences", `printf '\033[2J\033]0;owned\007\033[31mred\n' >&2; exit 1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFaultEnv(t, driverFaultConfig(tc.script))
			// Bound per node: exec timeout + start_timeout + 10 s grace.
			f.waitFor(2*(5*time.Second+5*time.Second+10*time.Second), "app failed on node2", func(e events.Event) bool {
				d, ok := e.Data.(events.PackageFailed)
				return ok && e.Subject == "app" && d.Node == "node2"
			})
			f.verify()
		})
	}
}
