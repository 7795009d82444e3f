package schemas

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// ErrAmbiguousKey is returned for a JSON object with two members whose names
// are the same, or the same but for case, and for a member whose name
// differs from a known one only in case. Go's JSON decoders match member
// names to struct fields without regard to case and keep the last match,
// while the schema check reads members by their exact names: such a document
// would be checked as one object and decoded as another.
var ErrAmbiguousKey = errors.New("ambiguous member name")

// maxDepth bounds how deeply CheckKeys follows nested arrays and objects
// (encoding/json's own limit), so a hostile document cannot exhaust the stack.
const maxDepth = 10000

// smallObject is how many members an object may have before CheckKeys
// indexes their names in a map instead of comparing each with all before.
const smallObject = 16

// KeyCheck refuses JSON documents whose objects have duplicate or
// case-variant member names. The zero value checks every object; NewKeyCheck
// also refuses top-level members that differ from a known name only in case.
// It is safe for concurrent use.
type KeyCheck struct {
	top  map[string]string // folded name -> exact name of the top-level members
	pool sync.Pool         // of *keyScanner, so that a check does not allocate
}

// NewKeyCheck returns a KeyCheck that also knows the exact names of the
// top-level object's members, e.g. the CloudEvents attributes of an envelope.
func NewKeyCheck(topLevel ...string) *KeyCheck {
	k := &KeyCheck{top: make(map[string]string, len(topLevel))}
	for _, n := range topLevel {
		k.top[string(foldKey(nil, []byte(n), true))] = n
	}
	return k
}

// Check returns an error wrapping ErrAmbiguousKey naming the first ambiguous
// member of data by its path (a.b[].c), or an error for a document that is
// not JSON. It reads
// names as decoders do: escapes resolved, invalid UTF-8 as U+FFFD.
func (k *KeyCheck) Check(data []byte) error {
	s, _ := k.pool.Get().(*keyScanner)
	if s == nil {
		s = &keyScanner{keys: make([][]byte, 0, 32), path: make([]pathElem, 0, 8)}
	}
	s.data, s.pos, s.top = data, 0, k.top
	defer func() {
		// Drop what points into data before the scanner waits in the pool.
		clear(s.keys[:cap(s.keys)])
		clear(s.path[:cap(s.path)])
		s.data, s.keys, s.path = nil, s.keys[:0], s.path[:0]
		k.pool.Put(s)
	}()
	if err := s.value(0); err != nil {
		return err
	}
	s.space()
	if s.pos != len(s.data) {
		return s.syntax("data after the top-level value")
	}
	return nil
}

// CheckKeys is (&KeyCheck{}).Check (use a KeyCheck to check many): it refuses a JSON document in which an
// object has two members of the same name, or names that differ only in case.
func CheckKeys(data []byte) error { return (&KeyCheck{}).Check(data) }

// keyScanner walks one JSON document. keys holds the folded names of the
// members of every object being read, innermost last.
type keyScanner struct {
	data []byte
	pos  int
	top  map[string]string
	keys [][]byte
	path []pathElem // where the scanner is, for error messages
	buf  []byte     // scratch for names that need folding
}

// pathElem is one step of the path to a value: a member name (raw, as in
// the document) or, with array set, an array element.
type pathElem struct {
	raw   []byte
	plain bool
	array bool
}

// where names the member with raw name in the current object by its path
// from the top-level value, as a.b[].name.
func (s *keyScanner) where(raw []byte, plain bool) string {
	var b strings.Builder
	for _, e := range append(s.path, pathElem{raw: raw, plain: plain}) {
		if e.array {
			b.WriteString("[]")
			continue
		}
		if b.Len() > 0 {
			b.WriteString(".")
		}
		b.WriteString(displayName(e.raw, e.plain))
	}
	return b.String()
}

func (s *keyScanner) syntax(what string) error {
	return fmt.Errorf("not JSON: %s at offset %d", what, s.pos)
}

func (s *keyScanner) space() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// value reads one value.
func (s *keyScanner) value(depth int) error {
	s.space()
	if s.pos >= len(s.data) {
		return s.syntax("unexpected end")
	}
	if c := s.data[s.pos]; (c == '{' || c == '[') && depth >= maxDepth {
		return s.syntax("nested too deeply")
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		return s.object(depth)
	case c == '[':
		s.pos++
		s.path = append(s.path, pathElem{array: true})
		defer func() { s.path = s.path[:len(s.path)-1] }()
		s.space()
		if s.pos < len(s.data) && s.data[s.pos] == ']' {
			s.pos++
			return nil
		}
		for i := 0; ; i++ {
			if err := s.value(depth + 1); err != nil {
				return err
			}
			s.space()
			if s.pos >= len(s.data) {
				return s.syntax("unexpected end in array")
			}
			switch s.data[s.pos] {
			case ',':
				s.pos++
			case ']':
				s.pos++
				return nil
			default:
				return s.syntax("want , or ] in array")
			}
		}
	case c == '"':
		_, _, err := s.str()
		return err
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || ('0' <= c && c <= '9'):
		start := s.pos
		for s.pos < len(s.data) {
			c := s.data[s.pos]
			if c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' || ('0' <= c && c <= '9') {
				s.pos++
				continue
			}
			break
		}
		if s.pos == start+1 && c == '-' {
			return s.syntax("bad number")
		}
		return nil
	}
	return s.syntax(fmt.Sprintf("unexpected byte %q", s.data[s.pos]))
}

func (s *keyScanner) literal(word string) error {
	if len(s.data)-s.pos < len(word) || string(s.data[s.pos:s.pos+len(word)]) != word {
		return s.syntax("bad literal")
	}
	s.pos += len(word)
	return nil
}

// object reads an object, refusing a member whose folded name repeats one
// before it.
//
// Longer than 80 lines: a scanner over one JSON object (members, nested
// values, duplicate folded names), kept as one loop for speed on every
// message.
func (s *keyScanner) object(depth int) error {
	s.pos++ // '{'
	first := len(s.keys)
	defer func() { s.keys = s.keys[:first] }()
	var index map[string]struct{}
	s.space()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		return nil
	}
	for {
		s.space()
		if s.pos >= len(s.data) || s.data[s.pos] != '"' {
			return s.syntax("want a member name")
		}
		raw, plain, err := s.str()
		if err != nil {
			return err
		}
		var folded []byte
		if plain && lowerASCII(raw) {
			folded = raw // the common case: nothing to unescape or fold
		} else {
			s.buf = foldKey(s.buf[:0], raw, true)
			folded = append([]byte(nil), s.buf...)
		}
		if depth == 0 && s.top != nil {
			if exact, ok := s.top[string(folded)]; ok && !equalName(raw, plain, exact) {
				return fmt.Errorf("%s: differs from %q only in case (%w)", s.where(raw, plain), exact, ErrAmbiguousKey)
			}
		}
		siblings := s.keys[first:]
		switch {
		case index != nil:
			if _, dup := index[string(folded)]; dup {
				return fmt.Errorf("%s: repeats a member name, compared without case (%w)", s.where(raw, plain), ErrAmbiguousKey)
			}
			index[string(folded)] = struct{}{}
		default:
			for _, k := range siblings {
				if string(k) == string(folded) {
					return fmt.Errorf("%s: repeats a member name, compared without case (%w)", s.where(raw, plain), ErrAmbiguousKey)
				}
			}
			if len(siblings) == smallObject {
				index = make(map[string]struct{}, 2*smallObject)
				for _, k := range siblings {
					index[string(k)] = struct{}{}
				}
				index[string(folded)] = struct{}{}
			}
		}
		if index == nil {
			s.keys = append(s.keys, folded)
		}
		s.space()
		if s.pos >= len(s.data) || s.data[s.pos] != ':' {
			return s.syntax("want : after a member name")
		}
		s.pos++
		s.path = append(s.path, pathElem{raw: raw, plain: plain})
		err = s.value(depth + 1)
		s.path = s.path[:len(s.path)-1]
		if err != nil {
			return err
		}
		s.space()
		if s.pos >= len(s.data) {
			return s.syntax("unexpected end in object")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return nil
		default:
			return s.syntax("want , or } in object")
		}
	}
}

// str reads a string at s.pos and returns its raw bytes between the quotes
// and whether they hold neither escapes nor bytes outside printable ASCII.
func (s *keyScanner) str() (raw []byte, plain bool, err error) {
	s.pos++ // '"'
	start := s.pos
	plain = true
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			raw = s.data[start:s.pos]
			s.pos++
			return raw, plain, nil
		case c == '\\':
			plain = false
			s.pos += 2
		case c < 0x20:
			return nil, false, s.syntax("control character in string")
		default:
			if c >= utf8.RuneSelf {
				plain = false
			}
			s.pos++
		}
	}
	return nil, false, s.syntax("unterminated string")
}

// lowerASCII reports whether b has no upper-case ASCII letters (b is plain).
func lowerASCII(b []byte) bool {
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			return false
		}
	}
	return true
}

// equalName reports whether the JSON string with raw bytes decodes to name.
func equalName(raw []byte, plain bool, name string) bool {
	if plain {
		return string(raw) == name
	}
	return string(foldKey(nil, raw, false)) == name
}

// displayName is a member name for an error message, decoded, short and
// printable.
func displayName(raw []byte, plain bool) string {
	const max = 64
	if plain && len(raw) <= max {
		return string(raw)
	}
	if len(raw) > max {
		raw = raw[:max]
	}
	return printable(string(foldKey(nil, raw, false)))
}

// printable quotes a decoded name's unprintable runes, without the quotes.
func printable(name string) string {
	q := strconv.Quote(name)
	return q[1 : len(q)-1]
}

// foldKey appends to dst the name a JSON string's raw bytes decode to, with
// fold each rune replaced by the representative of its case-folding orbit
// (the lower case letter for ASCII), so that two names decoders may match to
// the same field fold to the same bytes. Invalid UTF-8 and lone surrogates
// become U+FFFD, as decoders read them.
func foldKey(dst, raw []byte, fold bool) []byte {
	for i := 0; i < len(raw); {
		c := raw[i]
		var r rune
		switch {
		case c == '\\' && i+1 < len(raw):
			r, i = unescape(raw, i)
		case c < utf8.RuneSelf:
			r, i = rune(c), i+1
		default:
			var n int
			r, n = utf8.DecodeRune(raw[i:])
			i += n
		}
		if fold {
			r = foldRune(r)
		}
		dst = utf8.AppendRune(dst, r)
	}
	return dst
}

// unescape reads the escape at raw[i] and returns its rune and the index after it.
func unescape(raw []byte, i int) (rune, int) {
	switch raw[i+1] {
	case 'b':
		return '\b', i + 2
	case 'f':
		return '\f', i + 2
	case 'n':
		return '\n', i + 2
	case 'r':
		return '\r', i + 2
	case 't':
		return '\t', i + 2
	case 'u':
		r, ok := hex4(raw, i+2)
		if !ok {
			return utf8.RuneError, i + 2
		}
		i += 6
		if utf16.IsSurrogate(r) {
			if i+1 < len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
				r2, ok := hex4(raw, i+2)
				if d := utf16.DecodeRune(r, r2); ok && d != utf8.RuneError {
					return d, i + 6
				}
			}
			return utf8.RuneError, i
		}
		return r, i
	}
	return rune(raw[i+1]), i + 2 // \" \\ \/ and anything a decoder refuses anyway
}

func hex4(raw []byte, i int) (rune, bool) {
	if i+4 > len(raw) {
		return 0, false
	}
	var r rune
	for _, c := range raw[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			r = r<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// foldRune returns the representative of r's simple case-folding orbit, the
// equivalence strings.EqualFold uses: its smallest rune, or for an ASCII
// letter the lower-case one (so that lower-case ASCII names fold to
// themselves).
func foldRune(r rune) rune {
	if r < utf8.RuneSelf {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}
	m := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		m = min(m, f)
	}
	if 'A' <= m && m <= 'Z' {
		m += 'a' - 'A'
	}
	return m
}
