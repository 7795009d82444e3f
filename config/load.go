package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads, decodes, defaults and validates the configuration in the file
// at path. Problems are returned as Errors, each naming path, line and field.
func Load(path string) (*Cluster, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes a configuration from YAML data, strictly (an unknown field is
// an error), fills in defaults and validates it. name is the file name used
// in error messages. Every problem found is returned at once as Errors, each
// as "name:line: field.path: what is wrong".
func Parse(name string, data []byte) (*Cluster, error) {
	d := &decoder{file: name, lines: map[string]int{}, set: map[string]bool{}, bad: map[string]bool{}}
	root, ok := d.document(data)
	if !ok {
		return nil, d.errs.sorted()
	}
	var c Cluster
	d.value(root, reflect.ValueOf(&c).Elem(), "")
	d.defaults(&c)
	validate(&c, d)
	if len(d.errs) > 0 {
		return nil, d.errs.sorted()
	}
	return &c, nil
}

// decoder turns a yaml.Node tree into Go values by reflection, collecting
// every error with its line instead of stopping at the first, and remembering
// the line of each field path and which fields the file set.
type decoder struct {
	file  string
	errs  Errors
	lines map[string]int  // field path -> line of its key (or list item)
	set   map[string]bool // field paths the file gave a non-null value
	bad   map[string]bool // field paths that already have an error
}

// yamlLine finds "line N" in the yaml library's error messages.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// yamlParserError matches the yaml library's parser errors, whose line it
// reports counted from 0 (the block or flow that is not closed, or the
// token that does not fit).
var yamlParserError = regexp.MustCompile(`^yaml: did not find expected (key|node content|<document start>|'-' indicator|',' or '\]'|',' or '\}')$`)

// document parses data into its single YAML document and returns the root.
func (d *decoder) document(data []byte) (*yaml.Node, bool) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			d.errorf("", 1, "the file is empty: want a mapping with cluster, nodes and packages")
			return nil, false
		}
		msg := err.Error()
		line := 1
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = "yaml: " + msg[len(m[0]):]
			if yamlParserError.MatchString(msg) {
				// The yaml library counts a parser error's line from 0
				// (a scanner error's from 1).
				line++
			}
		}
		d.errs = append(d.errs, &FieldError{File: d.file, Line: line, Msg: msg})
		return nil, false
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		d.errs = append(d.errs, &FieldError{File: d.file, Line: extra.Line, Msg: "a second YAML document: want one document per file"})
	}
	d.lines[""] = doc.Line
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		return doc.Content[0], true
	}
	return &doc, true
}

// errorf records a problem with the field at path, found on line.
func (d *decoder) errorf(path string, line int, format string, args ...any) {
	if d.bad[path] {
		return
	}
	d.bad[path] = true
	d.errs = append(d.errs, &FieldError{File: d.file, Line: line, Field: path, Msg: fmt.Sprintf(format, args...)})
}

// fieldErrorf records a problem found by validation, at the line of path (or
// of its nearest ancestor in the file when the field itself is missing).
func (d *decoder) fieldErrorf(path string, format string, args ...any) {
	d.errorf(path, d.line(path), format, args...)
}

// line returns the line of the field at path, or of its closest ancestor
// present in the file.
func (d *decoder) line(path string) int {
	for {
		if l, ok := d.lines[path]; ok {
			return l
		}
		if path == "" {
			return 0
		}
		path = parentPath(path)
	}
}

// parentPath strips the last element of a field path: a.b[2].c -> a.b[2] -> a.b.
func parentPath(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

func joinPath(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// value decodes n into v, which is addressable.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	n = d.resolve(n, path)
	if n == nil {
		return
	}
	if _, ok := d.lines[path]; !ok {
		d.lines[path] = n.Line
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // like an absent field: the default applies
	}
	d.set[path] = true
	if reflect.PointerTo(v.Type()).Implements(textUnmarshaler) {
		if n.Kind != yaml.ScalarNode {
			d.errorf(path, n.Line, "want a single value, got %s", kindName(n))
			return
		}
		if err := v.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(n.Value)); err != nil {
			d.errorf(path, n.Line, "%s", err.Error())
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		nv := reflect.New(v.Type().Elem())
		d.value(n, nv.Elem(), path)
		v.Set(nv)
	case reflect.Struct:
		d.structure(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errorf(path, n.Line, "want a list such as [a, b], got %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.value(c, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	case reflect.Map:
		d.mapping(n, v, path)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.errorf(path, n.Line, "want a string, got %s", kindName(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		b, ok := parseBool(n)
		if !ok {
			d.errorf(path, n.Line, "%q: want true or false", n.Value)
			return
		}
		v.SetBool(b)
	case reflect.Float64:
		f, err := strconv.ParseFloat(n.Value, 64)
		if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") || err != nil {
			d.errorf(path, n.Line, "%q: want a number", n.Value)
			return
		}
		v.SetFloat(f)
	case reflect.Int:
		i, err := strconv.Atoi(n.Value)
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || err != nil {
			d.errorf(path, n.Line, "%q: want a whole number", n.Value)
			return
		}
		v.SetInt(int64(i))
	default:
		d.errorf(path, n.Line, "cannot decode into %s", v.Type())
	}
}

// resolve follows aliases; it reports a loop instead of recursing forever.
func (d *decoder) resolve(n *yaml.Node, path string) *yaml.Node {
	for range 100 {
		if n.Kind != yaml.AliasNode {
			return n
		}
		n = n.Alias
	}
	d.errorf(path, n.Line, "alias chain too long")
	return nil
}

// parseBool accepts YAML 1.2 booleans and, for Serviceguard habits, yes/no/on/off.
func parseBool(n *yaml.Node) (bool, bool) {
	if n.Kind != yaml.ScalarNode {
		return false, false
	}
	switch strings.ToLower(n.Value) {
	case "true", "yes", "on":
		return true, true
	case "false", "no", "off":
		return false, true
	}
	return false, false
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "nothing"
}

// pairs returns the key/value pairs of a mapping with merge keys (<<)
// expanded; keys given directly win over merged ones.
func (d *decoder) pairs(n *yaml.Node, path string) [][2]*yaml.Node {
	var direct, merged [][2]*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			src := d.resolve(val, path)
			if src == nil {
				continue
			}
			var srcs []*yaml.Node
			switch src.Kind {
			case yaml.MappingNode:
				srcs = []*yaml.Node{src}
			case yaml.SequenceNode:
				for _, s := range src.Content {
					if s = d.resolve(s, path); s != nil {
						srcs = append(srcs, s)
					}
				}
			}
			for _, s := range srcs {
				if s.Kind != yaml.MappingNode {
					d.errorf(path, k.Line, "<<: want a mapping to merge, got %s", kindName(s))
					continue
				}
				merged = append(merged, d.pairs(s, path)...)
			}
			continue
		}
		direct = append(direct, [2]*yaml.Node{k, val})
	}
	seen := map[string]bool{}
	for _, p := range direct {
		seen[p[0].Value] = true
	}
	out := direct
	for _, p := range merged {
		if !seen[p[0].Value] {
			seen[p[0].Value] = true
			out = append(out, p)
		}
	}
	return out
}

// structure decodes a mapping into a struct by its yaml tags; unknown and
// repeated keys are errors.
func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(path, n.Line, "want a mapping of fields, got %s", kindName(n))
		return
	}
	t := v.Type()
	fields := map[string]int{}
	var names []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = i
		names = append(names, name)
	}
	seen := map[string]int{}
	for _, p := range d.pairs(n, path) {
		k, val := p[0], p[1]
		if k.Kind != yaml.ScalarNode {
			d.errorf(path, k.Line, "want field names as keys, got %s", kindName(k))
			continue
		}
		fp := joinPath(path, k.Value)
		if first, dup := seen[k.Value]; dup {
			d.errorf(fp, k.Line, "given twice (first on line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		i, ok := fields[k.Value]
		if !ok {
			d.errorf(fp, k.Line, "unknown field: want one of %s", strings.Join(names, ", "))
			continue
		}
		d.lines[fp] = k.Line // a block mapping or list starts on the next line
		d.value(val, v.Field(i), fp)
	}
}

// mapping decodes a mapping with string keys into a Go map.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(path, n.Line, "want a mapping, got %s", kindName(n))
		return
	}
	m := reflect.MakeMap(v.Type())
	seen := map[string]int{}
	for _, p := range d.pairs(n, path) {
		k, val := p[0], p[1]
		fp := joinPath(path, k.Value)
		if k.Kind != yaml.ScalarNode {
			d.errorf(path, k.Line, "want text keys, got %s", kindName(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.errorf(fp, k.Line, "given twice (first on line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		ev := reflect.New(v.Type().Elem()).Elem()
		d.value(val, ev, fp)
		m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), ev)
	}
	v.Set(m)
}

// FieldError is one problem in a configuration: the file, the line, the
// field path (such as packages[0].services[1].restart) and what is wrong.
type FieldError struct {
	File  string
	Line  int
	Field string
	Msg   string
}

// Error formats the problem as "file:line: field: what is wrong", leaving
// out the parts that are not known.
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one configuration, in line order.
type Errors []*FieldError

// Error lists the problems, one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the problems for errors.Is and errors.As.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

func (es Errors) sorted() Errors {
	sort.SliceStable(es, func(i, j int) bool { return es[i].Line < es[j].Line })
	return es
}
