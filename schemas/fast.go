package schemas

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	gojson "github.com/goccy/go-json"
)

// rule is one compiled schema node. Validating millions of events with a
// general JSON Schema engine costs tens of microseconds each (it builds a
// big.Rat per number), so the Validator compiles the embedded schemas a
// second time into these rules, which cover only the keywords vmguard's
// schemas use. A schema using any other keyword fails to compile, and a
// test checks that both engines agree on valid and invalid documents.
type rule struct {
	types      []string
	properties map[string]*rule
	folded     map[string]string // case-folded property name -> property name
	required   []string
	pattern    *regexp.Regexp
	minLength  int
	maxLength  int // -1: none
	minimum    *float64
	maxItems   int // -1: none
	items      *rule
	dateTime   bool
	isName     bool // pattern is namePattern
}

// annotation keywords carry no constraint.
var annotations = map[string]bool{"$schema": true, "$id": true, "title": true, "description": true}

// compileRule compiles the schema doc at path into a rule, or says which
// keyword it does not support.
//
// Longer than 80 lines: one case per JSON Schema keyword it supports,
// each a few lines.
func compileRule(doc map[string]any, path string) (*rule, error) {
	r := &rule{maxLength: -1, maxItems: -1}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := doc[k]
		switch k {
		case "type":
			switch t := v.(type) {
			case string:
				r.types = []string{t}
			case []any:
				for _, x := range t {
					s, ok := x.(string)
					if !ok {
						return nil, fmt.Errorf("%s: type: want strings", path)
					}
					r.types = append(r.types, s)
				}
			default:
				return nil, fmt.Errorf("%s: type: want a string or a list", path)
			}
		case "properties":
			props, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s: properties: want an object", path)
			}
			r.properties = map[string]*rule{}
			r.folded = map[string]string{}
			for name, p := range props {
				r.folded[string(foldKey(nil, []byte(name), true))] = name
				pm, ok := p.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("%s.%s: want an object", path, name)
				}
				sub, err := compileRule(pm, path+"."+name)
				if err != nil {
					return nil, err
				}
				r.properties[name] = sub
			}
		case "required":
			list, ok := v.([]any)
			if !ok {
				return nil, fmt.Errorf("%s: required: want a list", path)
			}
			for _, x := range list {
				s, ok := x.(string)
				if !ok {
					return nil, fmt.Errorf("%s: required: want strings", path)
				}
				r.required = append(r.required, s)
			}
		case "additionalProperties":
			if b, ok := v.(bool); !ok || !b {
				return nil, fmt.Errorf("%s: additionalProperties: only true is supported", path)
			}
		case "pattern":
			s, _ := v.(string)
			re, err := regexp.Compile(s)
			if err != nil {
				return nil, fmt.Errorf("%s: pattern: %v", path, err)
			}
			r.pattern = re
			r.isName = s == namePattern
		case "minLength", "maxLength", "maxItems":
			n, err := wholeNumber(v)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %v", path, k, err)
			}
			switch k {
			case "minLength":
				r.minLength = n
			case "maxLength":
				r.maxLength = n
			default:
				r.maxItems = n
			}
		case "minimum":
			f, err := number(v)
			if err != nil {
				return nil, fmt.Errorf("%s: minimum: %v", path, err)
			}
			r.minimum = &f
		case "items":
			im, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s: items: want an object", path)
			}
			sub, err := compileRule(im, path+"[]")
			if err != nil {
				return nil, err
			}
			r.items = sub
		case "format":
			if v != "date-time" {
				return nil, fmt.Errorf("%s: format %v: only date-time is supported", path, v)
			}
			r.dateTime = true
		default:
			if !annotations[k] {
				return nil, fmt.Errorf("%s: keyword %q is not supported by the fast validator; extend schemas/fast.go", path, k)
			}
		}
	}
	return r, nil
}

func number(v any) (float64, error) {
	switch n := v.(type) {
	case json.Number:
		return n.Float64()
	case float64:
		return n, nil
	}
	return 0, fmt.Errorf("want a number, got %T", v)
}

func wholeNumber(v any) (int, error) {
	f, err := number(v)
	if err != nil || f < 0 || f != math.Trunc(f) {
		return 0, fmt.Errorf("want a whole number >= 0")
	}
	return int(f), nil
}

// check validates a decoded value. The value's path is parent.name (name
// empty for the root); it is built only when needed, as most values are valid.
func (r *rule) check(v any, parent, name string, errs *[]string) {
	path := func() string {
		if name == "" {
			return parent
		}
		return parent + "." + name
	}
	if len(r.types) > 0 && !r.typeOK(v) {
		*errs = append(*errs, fmt.Sprintf("%s: got %s, want %s", path(), jsonType(v), strings.Join(r.types, " or ")))
		return
	}
	switch x := v.(type) {
	case map[string]any:
		for _, req := range r.required {
			if _, ok := x[req]; !ok {
				*errs = append(*errs, path()+"."+req+": missing")
			}
		}
		var p string
		if r.folded != nil {
			// A member named like a property but for case is decoded into
			// that property's field, unchecked: refuse it.
			for n := range x {
				if _, ok := r.properties[n]; ok {
					continue
				}
				if prop, ok := r.folded[string(foldKey(nil, []byte(n), true))]; ok {
					*errs = append(*errs, fmt.Sprintf("%s.%s: differs from %q only in case (%v)", path(), printable(n), prop, ErrAmbiguousKey))
				}
			}
		}
		for n, sub := range r.properties {
			if pv, ok := x[n]; ok {
				if p == "" {
					p = path()
				}
				sub.check(pv, p, n, errs)
			}
		}
	case string:
		if n := len([]rune(x)); n < r.minLength {
			*errs = append(*errs, fmt.Sprintf("%s: length must be >= %d, but got %d", path(), r.minLength, n))
		} else if r.maxLength >= 0 && n > r.maxLength {
			*errs = append(*errs, fmt.Sprintf("%s: length must be <= %d, but got %d", path(), r.maxLength, n))
		}
		if r.pattern != nil && !r.pattern.MatchString(x) {
			*errs = append(*errs, fmt.Sprintf("%s: %q does not match pattern %q", path(), x, r.pattern.String()))
		}
		if r.dateTime {
			if _, err := time.Parse(time.RFC3339Nano, x); err != nil {
				*errs = append(*errs, fmt.Sprintf("%s: %q is not a valid date-time", path(), x))
			}
		}
	case float64:
		if r.minimum != nil && x < *r.minimum {
			*errs = append(*errs, fmt.Sprintf("%s: must be >= %v, but got %v", path(), *r.minimum, x))
		}
	case []any:
		if r.maxItems >= 0 && len(x) > r.maxItems {
			*errs = append(*errs, fmt.Sprintf("%s: at most %d items, got %d", path(), r.maxItems, len(x)))
		}
		if r.items != nil {
			for i, it := range x {
				r.items.check(it, path()+"["+strconv.Itoa(i)+"]", "", errs)
			}
		}
	}
}

func (r *rule) typeOK(v any) bool {
	got := jsonType(v)
	for _, t := range r.types {
		if t == got || (t == "number" && got == "integer") {
			return true
		}
	}
	return false
}

// jsonType names the JSON Schema type of a decoded value.
func jsonType(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case float64:
		if x == math.Trunc(x) && !math.IsInf(x, 0) {
			return "integer"
		}
		return "number"
	}
	return fmt.Sprintf("%T", v)
}

// decodeFor parses data as far as r looks into it: a member of an object
// whose rule checks only that it is an object (cluster.config_applied's
// config: a whole cluster configuration, megabytes at 10,000 packages) is
// checked to be one and not decoded, and members the rule has no property
// for (their values are never checked, only their names) are not decoded
// either. Decoding the whole configuration into generic values on every
// read of it cost each reader tens of MB at once; 1,000 host managers in
// one process starting together ran out of memory (docs/bench/scale.md,
// session 9). The result judges as decodeValue's would.
func decodeFor(r *rule, data []byte) (any, error) {
	if r.properties == nil || !r.allows("object") {
		return decodeValue(data)
	}
	if !json.Valid(data) {
		return decodeValue(data) // its error
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return decodeValue(data) // not an object: whatever it is
	}
	out := make(map[string]any, len(raw))
	for n, m := range raw {
		sub, ok := r.properties[n]
		switch {
		case !ok:
			out[n] = nil // unchecked: only its name counts
		case sub.opaqueObject() && isObject(m):
			out[n] = map[string]any(nil) // an object, and nothing more is checked
		default:
			v, err := decodeValue(m)
			if err != nil {
				return nil, err
			}
			out[n] = v
		}
	}
	return out, nil
}

// opaqueObject reports whether r checks of a value only that it is an
// object.
func (r *rule) opaqueObject() bool {
	return len(r.types) == 1 && r.types[0] == "object" && r.properties == nil && r.required == nil &&
		r.pattern == nil && r.minLength == 0 && r.maxLength < 0 && r.minimum == nil && r.maxItems < 0 &&
		r.items == nil && !r.dateTime && !r.isName
}

// isObject reports whether the valid JSON value m is an object.
func isObject(m []byte) bool {
	for _, c := range m {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		return c == '{'
	}
	return false
}

// decodeValue parses JSON; numbers become float64, exact for the integers
// events carry (below 2^53).
func decodeValue(data []byte) (any, error) {
	var v any
	if err := gojson.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	return v, nil
}

// namePattern is the pattern of every name in the schemas; Field checks it
// with a byte loop instead of the regular expression (a test proves both
// agree).
const namePattern = "^[A-Za-z0-9_-]{1,64}$"

// Field is the compiled rule of one top-level member of an event type's
// data. It lets a codec check typed values as it encodes or decodes them,
// without building a generic JSON value; each method answers whether the
// value, as JSON, passes the rule, exactly as Validate would judge it.
type Field struct{ r *rule }

// Fields returns the rules of the top-level members of typ's data by name and
// the names the schema requires, and false if typ has no schema or its data
// is not an object.
func (v *Validator) Fields(typ string) (map[string]Field, []string, bool) {
	r, ok := v.fast[typ]
	if !ok || r.properties == nil || !r.allows("object") {
		return nil, nil, false
	}
	out := make(map[string]Field, len(r.properties))
	for name, p := range r.properties {
		out[name] = Field{p}
	}
	return out, r.required, true
}

func (r *rule) allows(t string) bool {
	if len(r.types) == 0 {
		return true
	}
	for _, x := range r.types {
		if x == t {
			return true
		}
	}
	return false
}

// String reports whether the JSON string s passes the rule.
func (f Field) String(s string) bool { return f.r.okString(s) }

// Integer reports whether the JSON number n, a whole number, passes the rule.
func (f Field) Integer(n float64) bool {
	r := f.r
	if !r.allows("integer") && !r.allows("number") {
		return false
	}
	return r.minimum == nil || n >= *r.minimum
}

// Bool reports whether a JSON boolean passes the rule.
func (f Field) Bool() bool { return f.r.allows("boolean") }

// Items reports whether a JSON array of n items passes the rule's own
// constraints; Item checks each item.
func (f Field) Items(n int) bool {
	return f.r.allows("array") && (f.r.maxItems < 0 || n <= f.r.maxItems)
}

// Item reports whether the string s passes the rule of an array's items.
func (f Field) Item(s string) bool { return f.r.items == nil || f.r.items.okString(s) }

func (r *rule) okString(s string) bool {
	if !r.allows("string") {
		return false
	}
	if r.minLength > 0 || r.maxLength >= 0 {
		n := utf8.RuneCountInString(s)
		if n < r.minLength || (r.maxLength >= 0 && n > r.maxLength) {
			return false
		}
	}
	if r.pattern != nil {
		if r.isName {
			if !isName(s) {
				return false
			}
		} else if !r.pattern.MatchString(s) {
			return false
		}
	}
	if r.dateTime {
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			return false
		}
	}
	return true
}

// isName matches namePattern.
func isName(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
