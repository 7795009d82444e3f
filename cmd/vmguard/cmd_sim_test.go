package main

import (
	"strings"
	"testing"
)

// TestSimCommand: a seed prints its summary with the hash, the same twice;
// a planted bug makes it exit 1 naming the violation.
func TestSimCommand(t *testing.T) {
	code, out, errs := runCLI("sim", "--seed", "3", "--seeds", "2", "--steps", "800")
	if code != exitOK || !strings.Contains(out, "seed=3 ") || !strings.Contains(out, "seed=4 ") || !strings.Contains(out, "hash=") {
		t.Fatalf("sim: exit %d\n%s\n%s", code, out, errs)
	}
	_, again, _ := runCLI("sim", "--seed", "3", "--seeds", "2", "--steps", "800")
	if again != out {
		t.Errorf("same seeds, different output:\n%s\n%s", out, again)
	}
	code, out, errs = runCLI("sim", "--seed", "2", "--mutation", "skip_release")
	if code != exitError || !strings.Contains(out, "[released_first]") || !strings.Contains(errs, "1 of 1 seeds") {
		t.Errorf("mutation: exit %d\n%s\n%s", code, out, errs)
	}
}
