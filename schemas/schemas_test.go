package schemas

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"sort"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

func TestValidateNamesField(t *testing.T) {
	v, err := New()
	if err != nil {
		t.Fatal(err)
	}
	names, err := fs.Glob(files, "*.json")
	if err != nil {
		t.Fatal(err)
	}
	if got := len(v.Types()); got != len(names) || got < 20 {
		t.Fatalf("schemas: got %d, want one per embedded file (%d), at least the 20 of the first catalog", got, len(names))
	}
	cases := []struct {
		typ, data, want string
	}{
		{"io.vmguard.process.exited.v1", `{"guest":"g","service":"s","pid":1,"exit_code":"x","runtime_ms":1,"request_id":"r","epoch":1}`, "data.exit_code:"},
		{"io.vmguard.process.exited.v1", `{"guest":"g","service":"s","pid":1,"runtime_ms":1,"request_id":"r","epoch":1}`, "data.exit_code: missing"},
		{"io.vmguard.package.placed.v1", `{"node":"a.b","epoch":1,"reason":"x"}`, "data.node:"},
		{"io.vmguard.package.placed.v1", `[]`, "data:"},
	}
	for _, c := range cases {
		err := v.Validate(c.typ, []byte(c.data))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: got %v, want error containing %q", c.typ, c.data, err, c.want)
		}
	}
	if err := v.Validate("io.vmguard.package.placed.v1", []byte(`{"node":"n1","epoch":1,"reason":"initial","extra":true}`)); err != nil {
		t.Errorf("valid event with an unknown optional field: %v", err)
	}
	if err := v.Validate("io.vmguard.nope.v1", []byte(`{}`)); err == nil {
		t.Error("unknown type: no error")
	}
}

// TestFastAgreesWithReference checks, over generated documents, that the fast
// validator accepts exactly what the general JSON Schema engine accepts.
func TestFastAgreesWithReference(t *testing.T) {
	v, err := New()
	if err != nil {
		t.Fatal(err)
	}
	types := v.Types()
	values := []any{nil, true, false, 0, 1, -1, 3, 1.5, 2.0, 1e20, "", "ok", "a.b", "web-1_x", "2026-11-27T10:00:00Z", "not-a-time",
		strings.Repeat("x", 70), []any{}, []any{"a", "b"}, []any{1}, map[string]any{}}
	rapid.Check(t, func(rt *rapid.T) {
		typ := rapid.SampledFrom(types).Draw(rt, "type")
		props := v.fast[typ].properties
		names := make([]string, 0, len(props)+1)
		for n := range props {
			names = append(names, n)
		}
		sort.Strings(names)
		names = append(names, "extra")
		doc := map[string]any{}
		for _, n := range names {
			if rapid.Bool().Draw(rt, "has_"+n) {
				doc[n] = rapid.SampledFrom(values).Draw(rt, "val_"+n)
			}
		}
		var data []byte
		if rapid.IntRange(0, 20).Draw(rt, "notobject") == 0 {
			data = []byte(`[1,2]`)
		} else {
			data, _ = json.Marshal(doc)
		}
		fast := v.Validate(typ, data)
		ref := v.validateReference(typ, data)
		if (fast == nil) != (ref == nil) {
			rt.Fatalf("%s %s: fast=%v reference=%v", typ, data, fast, ref)
		}
	})
}

// TestValidateDoesNotDecodeTheConfig: a cluster.config_applied's config is
// checked to be an object and not decoded into generic values (a 10,000-
// package configuration is megabytes; every reader validates it), and
// still refused when it is not an object.
func TestValidateDoesNotDecodeTheConfig(t *testing.T) {
	v, err := New()
	if err != nil {
		t.Fatal(err)
	}
	const typ = "io.vmguard.cluster.config_applied.v1"
	var b strings.Builder
	b.WriteString(`{"hash":"h","by":"alice","config":{"packages":[`)
	for i := range 20000 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"name":"pkg","nodes":["node1","node2","node3"],"services":[{"name":"s","cmd":"/bin/true","restart":3}]}`)
	}
	b.WriteString(`]}}`)
	data := []byte(b.String())
	allocs := testing.Benchmark(func(tb *testing.B) {
		for range tb.N {
			if err := v.Validate(typ, data); err != nil {
				tb.Fatal(err)
			}
		}
	}).AllocedBytesPerOp()
	if allocs > int64(2*len(data)) {
		t.Errorf("validating a %d-byte config_applied allocated %d bytes, want at most twice its size: the config is decoded", len(data), allocs)
	}
	for _, bad := range []string{`{"hash":"h","config":[1]}`, `{"hash":"h","config":"x"}`, `{"hash":"h","config":{"a":}}`, `{"config":{}}`} {
		if err := v.Validate(typ, []byte(bad)); err == nil {
			t.Errorf("%s: valid, want an error", bad)
		}
	}
}

// TestValidateEscapesAtTheEnd: a member whose string ends in an escape,
// a surrogate or a cut-off one, gets the reference's verdict. Under -race
// the JSON decoder of go-json v0.10.5 stopped the process here
// (checkptr: its \u look-ahead pointed past the string's allocation;
// goccy/go-json#575); guests send such strings.
func TestValidateEscapesAtTheEnd(t *testing.T) {
	v, err := New()
	if err != nil {
		t.Fatal(err)
	}
	const typ = "io.vmguard.process.exited.v1"
	for _, s := range []string{`\ud800`, `ab\ud800`, `\ud83d\ude00`, `\ud800\u`, `\u00`, `\n`, `a\/`, `\\`, `\`, `\ud800\ud800`} {
		for _, member := range []string{"guest", "request_id", "extra"} {
			data := []byte(`{"service":"s","pid":1,"exit_code":0,"runtime_ms":1,"epoch":1,"guest":"g","request_id":"r"}`)
			data = bytes.Replace(data, []byte(`"`+member+`":`), []byte(`"`+member+`":"`+s+`","x`+member+`":`), 1)
			if member == "extra" {
				data = bytes.Replace(data, []byte(`}`), []byte(`,"extra":"`+s+`"}`), 1)
			}
			fast, ref := v.Validate(typ, data), v.validateReference(typ, data)
			if (fast == nil) != (ref == nil) {
				t.Errorf("%s: fast=%v reference=%v", data, fast, ref)
			}
		}
	}
}
