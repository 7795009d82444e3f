package cliparse

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

type grammar struct {
	Name string           `required:"" help:"A name."`
	Ver  kong.VersionFlag `name:"version" help:"Print the version and exit."`
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
		{args: []string{"--version"}, code: ExitOK, done: true, out: "prog 1.2.3\n"},
		{args: []string{}, code: ExitUsage, done: true, err: "prog: missing flags: --name"},
		{args: []string{"--name", "x", "--bogus"}, code: ExitUsage, done: true, err: "unknown flag --bogus"},
	} {
		var g grammar
		var stdout, stderr bytes.Buffer
		kctx, code, done := Program{Name: "prog", Description: "A test program.", Version: "prog 1.2.3"}.Parse(&g, tc.args, &stdout, &stderr)
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

func TestCode(t *testing.T) {
	errWrong := errors.New("wrong call")
	usage := func(err error) bool { return errors.Is(err, errWrong) }
	for _, tc := range []struct {
		err    error
		code   int
		stderr string
	}{
		{err: nil, code: ExitOK, stderr: ""},
		{err: errors.New("boom"), code: ExitError, stderr: "prog: boom\n"},
		{err: errWrong, code: ExitUsage, stderr: "prog: wrong call\n"},
	} {
		var stderr bytes.Buffer
		if code := (Program{Name: "prog"}).Code(tc.err, &stderr, usage); code != tc.code || stderr.String() != tc.stderr {
			t.Errorf("%v: code %d stderr %q, want %d %q", tc.err, code, stderr.String(), tc.code, tc.stderr)
		}
	}
}
