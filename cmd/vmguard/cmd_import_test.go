package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestImportThenCheck: `vmguard import` of sample Serviceguard package files
// writes a cluster file that `vmguard check` accepts, reports what it could
// not carry over, never overwrites without --force, and exits 1 under
// --strict when anything was not carried over.
func TestImportThenCheck(t *testing.T) {
	dir := t.TempDir()
	sample := func(n string) string { return filepath.Join("..", "..", "internal", "sgimport", "testdata", n) }
	out := filepath.Join(dir, "cluster.yaml")
	args := []string{"import", "-f", sample("erp.conf"), "-f", sample("mail.conf"), "-f", sample("monitor.conf"), "--cluster", "sg", "-o", out}

	code, stdout, stderr := runCLI(args...)
	if code != 0 {
		t.Fatalf("import: code %d\n%s", code, stderr)
	}
	if stdout != "" {
		t.Errorf("import -o wrote to stdout: %q", stdout)
	}
	for _, want := range []string{
		"note: " + sample("erp.conf") + ":20: successor_halt_timeout: no_timeout: vmguard bounds every wait",
		"note: " + sample("monitor.conf") + ":4: failover_policy: does not apply to a multi_node package",
		"imported 3 packages on 3 nodes from 3 files; 12 notes",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if code, stdout, stderr := runCLI("check", "-f", out); code != 0 || !strings.Contains(stdout, "ok: 3 nodes, 3 packages") {
		t.Errorf("check of the imported file: code %d, %q %q", code, stdout, stderr)
	}

	before, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCLI(append(slices.Clone(args), "--cluster", "other")...); code != 1 || !strings.Contains(stderr, "the file exists; give --force to replace it") {
		t.Errorf("import over an existing file: code %d, %q", code, stderr)
	}
	if after, _ := os.ReadFile(out); string(after) != string(before) {
		t.Error("import without --force changed the existing file")
	}
	if code, _, stderr := runCLI(append(args, "--force", "--strict")...); code != 1 || !strings.Contains(stderr, "not everything was carried over") {
		t.Errorf("import --strict with notes: code %d, %q", code, stderr)
	}

	if code, _, stderr := runCLI("import", "-f", sample("legacy.cntl")); code != 1 || !strings.Contains(stderr, "convert with cmmigratepkg first") {
		t.Errorf("import of a legacy control script: code %d, %q", code, stderr)
	}
	if code, _, stderr := runCLI("import", "-f", sample("erp.conf"), "--cluster", "bad.name"); code != 1 || !strings.Contains(stderr, "does not pass vmguard check (nothing written)") {
		t.Errorf("import with an invalid cluster name: code %d, %q", code, stderr)
	}
}
