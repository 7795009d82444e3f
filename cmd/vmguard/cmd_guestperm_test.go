package main

import (
	"os"
	"strings"
	"testing"
)

// TestGuestPermissionsRetired: `vmguard guest-permissions`, which printed
// a guest's user for the one-account set-up, exits 2 with its old flags
// too and points at `vmguard init`; the one-account example config is
// gone, and the server's refusal of an open listener points at init.
func TestGuestPermissionsRetired(t *testing.T) {
	for _, args := range [][]string{
		{"guest-permissions", "--guest", "webvm", "-f", "../../examples/demo.yaml"},
		{"guest-permissions", "--guest", "webvm", "-p", "web", "-n", "node1", "--password-env", "X"},
		{"guest-permissions"},
	} {
		code, out, errOut := runCLI(args...)
		if code != exitUsage || out != "" || !strings.Contains(errOut, "retired") || !strings.Contains(errOut, "vmguard init -f cluster.yaml --out DIR") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q: want exit %d pointing at vmguard init", args, code, out, errOut, exitUsage)
		}
	}
	if _, err := os.Stat("../../examples/nats-guests.conf"); !os.IsNotExist(err) {
		t.Errorf("examples/nats-guests.conf (the one-account set-up): %v, want it gone", err)
	}
	code, out, errOut := runCLI("--help")
	if code != 0 || !strings.Contains(out+errOut, "init") || strings.Contains(out+errOut, "guest-permissions") {
		t.Errorf("--help: exit %d, want init listed and not guest-permissions:\n%s%s", code, out, errOut)
	}
}
