package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestCheckKeys(t *testing.T) {
	cases := []struct {
		doc, want string // want "" for no error
	}{
		{`{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}`, ""},
		{`{"a":1,"a":2}`, "a: repeats"},
		{`{"a":1,"A":2}`, "A: repeats"},
		{`{"x":{"node":"n","NODE":"m"}}`, "x.NODE: repeats"},
		{`{"x":[{"k":1},{"k":1,"K":2}]}`, "x[].K: repeats"},
		{`{"\u0061":1,"a":2}`, "a: repeats"},
		{`{"s":1,"\u017f":2}`, "ſ: repeats"},              // LATIN SMALL LETTER LONG S folds to s
		{`{"k":1,"\u212a":2}`, "\u212a: repeats"},         // KELVIN SIGN folds to k
		{"{\"a\xff\":1,\"a\xfe\":2}", "a\ufffd: repeats"}, // both decode to a U+FFFD
		{`{"\ud800":1,"\ufffd":2}`, "repeats"},            // a lone surrogate is U+FFFD
		{`{"\ud83d\ude00":1,"\ud83d\ude00":2}`, "repeats"},
		{`{"a":1}x`, "not JSON"},
		{`{"a" 1}`, "not JSON"},
		{`{"a":1,}`, "not JSON"},
		{`[`, "not JSON"},
		{`"abc`, "not JSON"},
		{`{"a":tru}`, "not JSON"},
		{strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1), "nested too deeply"},
		{strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth), ""},
	}
	for _, c := range cases {
		err := CheckKeys([]byte(c.doc))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%.60q: %v", c.doc, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%.60q: got %v, want an error containing %q", c.doc, err, c.want)
		case c.want != "" && !strings.Contains(c.want, "JSON") && c.want != "nested too deeply" && !errors.Is(err, ErrAmbiguousKey):
			t.Errorf("%.60q: %v does not wrap ErrAmbiguousKey", c.doc, err)
		}
	}
}

// TestCheckKeysManyMembers covers the map index of large objects.
func TestCheckKeysManyMembers(t *testing.T) {
	var b strings.Builder
	b.WriteString("{")
	for i := range 100 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`"k` + strings.Repeat("x", i) + `":{"a":1,"b":2}`)
	}
	ok := b.String() + "}"
	if err := CheckKeys([]byte(ok)); err != nil {
		t.Fatalf("100 distinct members: %v", err)
	}
	if err := CheckKeys([]byte(ok[:len(ok)-1] + `,"KXXXXX":1}`)); !errors.Is(err, ErrAmbiguousKey) {
		t.Fatalf("a repeat after 100 members: %v", err)
	}
}

func TestKeyCheckTopLevel(t *testing.T) {
	k := NewKeyCheck("type", "data")
	if err := k.Check([]byte(`{"type":"x","data":{"Type":1},"Other":2}`)); err != nil {
		t.Fatalf("case variants below the top level or of unknown members: %v", err)
	}
	if err := k.Check([]byte(`{"\u0074ype":"x"}`)); err != nil {
		t.Fatalf("an escaped exact name: %v", err)
	}
	err := k.Check([]byte(`{"Type":"x"}`))
	if !errors.Is(err, ErrAmbiguousKey) || !strings.Contains(err.Error(), `Type: differs from "type" only in case`) {
		t.Fatalf("Type: %v", err)
	}
}

func TestValidateRefusesCaseVariantOfProperty(t *testing.T) {
	v, err := New()
	if err != nil {
		t.Fatal(err)
	}
	const typ = "io.vmguard.package.failed.v1"
	err = v.Validate(typ, []byte(`{"node":"n1","epoch":1,"reason":"x","Service":"a.b"}`))
	if err == nil || !strings.Contains(err.Error(), `data.Service: differs from "service" only in case`) {
		t.Fatalf("lone case variant: %v", err)
	}
	err = v.Validate(typ, []byte(`{"node":"n1","epoch":1,"reason":"x","reason":"y"}`))
	if err == nil || !strings.Contains(err.Error(), `data.reason: repeats`) {
		t.Fatalf("duplicate: %v", err)
	}
}

// FuzzCheckKeys compares CheckKeys with a reference built on encoding/json:
// on valid JSON it refuses exactly the documents in which an object has two
// member names equal under strings.EqualFold; on anything else it must not
// panic.
func FuzzCheckKeys(f *testing.F) {
	for _, s := range []string{`{"a":1,"A":2}`, `{"a":[{"b":1,"c":{"B":2}}]}`, `{"\u017f":1,"S":2}`, `[1,"x",null,true,{"":0}]`,
		"{\"a\xff\":1,\"a\xfe\":2}", `{"\ud800x":1,"\ufffdx":1}`, `{"a":1e-5,"b":-0.5}`, `  {}  `, `{"a":"\"\\"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := CheckKeys(data)
		if !json.Valid(data) {
			return
		}
		dup, ok := referenceDup(data)
		if !ok {
			return
		}
		if dup != (err != nil) {
			t.Fatalf("%q: CheckKeys %v, reference finds a repeat: %v", data, err, dup)
		}
		if err != nil && !errors.Is(err, ErrAmbiguousKey) {
			t.Fatalf("%q: %v does not wrap ErrAmbiguousKey", data, err)
		}
	})
}

// referenceDup reports whether an object in valid JSON data has two member
// names equal under strings.EqualFold (false, false if it cannot tell).
func referenceDup(data []byte) (dup, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		object  bool
		wantKey bool
		keys    []string
	}
	var stack []*frame
	value := func() { // a value ended: the enclosing object wants a key next
		if n := len(stack); n > 0 && stack[n-1].object {
			stack[n-1].wantKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return false, true
		}
		if err != nil {
			return false, false
		}
		switch x := tok.(type) {
		case json.Delim:
			switch x {
			case '{':
				stack = append(stack, &frame{object: true, wantKey: true})
			case '[':
				stack = append(stack, &frame{})
			default:
				stack = stack[:len(stack)-1]
				value()
			}
		case string:
			if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].wantKey {
				top := stack[n-1]
				for _, k := range top.keys {
					if strings.EqualFold(k, x) {
						return true, true
					}
				}
				top.keys = append(top.keys, x)
				top.wantKey = false
				continue
			}
			value()
		default:
			value()
		}
	}
}
