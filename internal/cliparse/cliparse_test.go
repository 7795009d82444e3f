package cliparse

import (
	"bytes"
	"strings"
	"testing"
)

type grammar struct {
	Name string `required:"" help:"A name."`
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		code     int
		done     bool
		out, err string
	}{
		{args: []string{"--name", "x"}, code: ExitOK},
		{args: []string{"--help"}, code: ExitOK, done: true, out: "A name."},
		{args: []string{}, code: ExitUsage, done: true, err: "prog: missing flags: --name"},
		{args: []string{"--name", "x", "--bogus"}, code: ExitUsage, done: true, err: "unknown flag --bogus"},
	} {
		var g grammar
		var stdout, stderr bytes.Buffer
		kctx, code, done := Parse("prog", "A test program.", &g, tc.args, &stdout, &stderr)
		if code != tc.code || done != tc.done {
			t.Errorf("%v: code %d done %v, want %d %v (stderr %q)", tc.args, code, done, tc.code, tc.done, stderr.String())
		}
		if !done && (kctx == nil || g.Name != "x") {
			t.Errorf("%v: not parsed: %v %+v", tc.args, kctx, g)
		}
		if !strings.Contains(stdout.String(), tc.out) || !strings.Contains(stderr.String(), tc.err) {
			t.Errorf("%v: stdout %q stderr %q, want %q and %q", tc.args, stdout.String(), stderr.String(), tc.out, tc.err)
		}
	}
}
