// Package sgimport reads Serviceguard modular package configuration files
// (the files cmmakepkg writes and cmapplyconf reads) and maps them to
// vmguard's cluster configuration, saying what could not be mapped and why.
//
// Parsing and mapping are pure: no file system, no clock. The command
// `vmguard import` reads the files and writes the result.
package sgimport

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/vmguard/vmguard/events"
)

// MaxLineLen bounds one logical line (continuations joined); Serviceguard's
// own limit on a parameter value is far smaller.
const MaxLineLen = 64 << 10

// Attr is one "parameter_name value" line of a package file.
type Attr struct {
	Name  string // lower case: Serviceguard's parameter names are not case-sensitive
	Value string // without surrounding double quotes
	Line  int    // line of the parameter's name (the first of a continued line)
}

// File is a parsed package configuration file: its parameters in order.
// Serviceguard repeats a parameter for list values (node_name) and groups
// the parameters of one service, dependency or generic resource after its
// *_name line; the order is kept so that the mapper can rebuild the groups.
type File struct {
	Name  string
	Attrs []Attr
}

// ParseError is a line Parse could not read.
type ParseError struct {
	File string
	Line int
	Msg  string
}

func (e *ParseError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// Parse reads a package configuration file as the Serviceguard manual
// describes it: one parameter per line, its name, white space and its value;
// '#' starts a comment outside double quotes; a line ending in a backslash
// continues on the next. A value in double quotes may hold spaces and '#'
// (\" and \\ stand for a quote and a backslash).
func Parse(name string, r io.Reader) (*File, error) {
	f := &File{Name: name}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxLineLen)
	var (
		buf   strings.Builder
		start int
		n     int
	)
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), " \t\r")
		if buf.Len() == 0 {
			start = n
		}
		if strings.HasSuffix(line, `\`) && !strings.HasSuffix(line, `\\`) {
			buf.WriteString(strings.TrimSuffix(line, `\`))
			buf.WriteByte(' ')
			if buf.Len() > MaxLineLen {
				return nil, &ParseError{name, start, fmt.Sprintf("a continued line longer than %d bytes", MaxLineLen)}
			}
			continue
		}
		buf.WriteString(line)
		logical := buf.String()
		buf.Reset()
		a, ok, err := parseLine(logical)
		if err != nil {
			return nil, &ParseError{name, start, err.Error()}
		}
		if ok {
			a.Line = start
			f.Attrs = append(f.Attrs, a)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, &ParseError{name, n + 1, fmt.Sprintf("read: %v", err)}
	}
	if buf.Len() > 0 {
		return nil, &ParseError{name, start, "the file ends inside a continued line (a last line ending in a backslash)"}
	}
	return f, nil
}

// parseLine splits one logical line into a parameter; ok is false for a
// blank or comment line.
func parseLine(s string) (Attr, bool, error) {
	s = strings.TrimLeft(s, " \t")
	if s == "" || s[0] == '#' {
		return Attr{}, false, nil
	}
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		i = len(s)
	}
	name := strings.ToLower(s[:i])
	if strings.ContainsAny(s[:i], "=[") {
		return Attr{}, false, fmt.Errorf("%q looks like a legacy package control script line; vmguard import reads modular package files (convert with cmmigratepkg first)", clip(s[:i]))
	}
	if !validParam(name) {
		return Attr{}, false, fmt.Errorf("%q is not a parameter name (want letters, digits and '_')", clip(s[:i]))
	}
	rest := strings.TrimLeft(s[i:], " \t")
	val, err := parseValue(rest)
	if err != nil {
		return Attr{}, false, fmt.Errorf("%s: %v", name, err)
	}
	return Attr{Name: name, Value: val}, true, nil
}

// parseValue reads a value: a double-quoted string or the text up to a
// comment, with trailing white space removed.
func parseValue(s string) (string, error) {
	if s == "" || s[0] != '"' {
		if j := strings.IndexByte(s, '#'); j >= 0 {
			s = s[:j]
		}
		return strings.TrimRight(s, " \t"), nil
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\\'):
			i++
			b.WriteByte(s[i])
		case c == '"':
			after := strings.TrimLeft(s[i+1:], " \t")
			if after != "" && after[0] != '#' {
				return "", fmt.Errorf("text after the closing quote: %q", clip(after))
			}
			return b.String(), nil
		default:
			b.WriteByte(c)
		}
	}
	return "", fmt.Errorf("a double quote that is not closed")
}

func validParam(s string) bool {
	if s == "" || len(s) > 80 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// clip cuts text quoted back to the operator in an error (DESIGN §8),
// rune-safe, with the marker events.Clip writes.
func clip(s string) string { return events.Clip(s, 60) }
