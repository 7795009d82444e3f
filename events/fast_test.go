package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"pgregory.net/rapid"

	"github.com/vmguard/vmguard/schemas"
)

// genString draws strings that pass the schemas' rules and strings that
// break them: names, empty, long, JSON's special characters, HTML
// characters encoding/json escapes, U+2028, control characters, other
// scripts and invalid UTF-8.
func genString(t *rapid.T, label string) string {
	return rapid.OneOf(
		rapid.StringMatching(`[A-Za-z0-9_-]{1,12}`),
		rapid.StringMatching(`[A-Za-z0-9_-]{60,70}`),
		rapid.Just(""),
		rapid.SampledFrom([]string{"a b", `quote"d`, `back\slash`, "tab\there", "new\nline", "<b>&amp;</b>", "line\u2028sep",
			"bell\x07", "\x00", "héllo wörld", "日本語", "\xff\xfe", "emoji 😀", "a/b", strings.Repeat("x", 1025), strings.Repeat("é", 129)}),
		rapid.String(),
		rapid.Map(rapid.SliceOfN(rapid.Byte(), 0, 8), func(b []byte) string { return string(b) }),
	).Draw(t, label)
}

func genInt(t *rapid.T, label string) int64 {
	return rapid.OneOf(rapid.Int64Range(-3, 5000), rapid.SampledFrom([]int64{0, 1, -1, math.MaxInt64, math.MinInt64, 1 << 53, 1<<53 + 1}), rapid.Int64()).Draw(t, label)
}

func genTime(t *rapid.T, label string) time.Time {
	return rapid.OneOf(
		rapid.Just(time.Time{}),
		rapid.Custom(func(t *rapid.T) time.Time {
			sec := rapid.Int64Range(-1e10, 1e11).Draw(t, "sec")
			ns := rapid.Int64Range(0, 999_999_999).Draw(t, "ns")
			loc := rapid.SampledFrom([]*time.Location{time.UTC, time.FixedZone("", 3600), time.FixedZone("X", -5*3600-1800)}).Draw(t, "loc")
			return time.Unix(sec, ns).In(loc)
		}),
	).Draw(t, label)
}

// genPayload fills every field of typ's payload struct with a drawn value.
func genPayload(t *rapid.T, typ string) Payload {
	zero, err := newPayload(typ, []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	rt := reflect.TypeOf(zero)
	v := reflect.New(rt).Elem()
	for i := range rt.NumField() {
		f := v.Field(i)
		name := rt.Field(i).Name
		mode := rapid.IntRange(0, 9).Draw(t, name+".mode")
		if mode == 0 {
			continue // zero: left out if omitempty, else the zero value
		}
		if mode <= 6 { // plausible: what vmguard writes
			switch f.Kind() {
			case reflect.String:
				pattern := `[a-z0-9][a-z0-9_-]{0,10}`
				switch name { // fields whose schema allows less (node.resource_set)
				case "Status":
					pattern = `up|down`
				case "Value":
					pattern = `-?[0-9]{1,6}`
				}
				f.SetString(rapid.StringMatching(pattern).Draw(t, name))
				continue
			case reflect.Int, reflect.Int64:
				f.SetInt(rapid.Int64Range(1, 100000).Draw(t, name))
				continue
			case reflect.Uint64:
				f.SetUint(rapid.Uint64Range(0, 1000).Draw(t, name))
				continue
			case reflect.Slice:
				if f.Type() != reflect.TypeFor[[]string]() {
					break
				}
				f.Set(reflect.ValueOf(rapid.SliceOfN(rapid.StringMatching(`[ -~]{0,20}|[^\x00]{0,5}`), 0, 5).Draw(t, name)))
				continue
			}
		}
		switch {
		case f.Type() == reflect.TypeFor[time.Time]():
			f.Set(reflect.ValueOf(genTime(t, name)))
		case f.Type() == reflect.TypeFor[json.RawMessage]():
			f.SetBytes([]byte(rapid.SampledFrom([]string{`{"cluster":"demo"}`, `{}`, `[1,2]`, `"x"`, `{"a":{"b":1,"B":2}}`}).Draw(t, name)))
		case f.Kind() == reflect.String:
			f.SetString(genString(t, name))
		case f.Kind() == reflect.Int || f.Kind() == reflect.Int64:
			f.SetInt(genInt(t, name))
		case f.Kind() == reflect.Uint64:
			f.SetUint(rapid.OneOf(rapid.Uint64Range(0, 10), rapid.Uint64()).Draw(t, name))
		case f.Kind() == reflect.Bool:
			f.SetBool(rapid.Bool().Draw(t, name))
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct:
			f.Set(genStructs(t, name, f.Type()))
		case f.Type() == reflect.TypeFor[[]string]():
			n := rapid.OneOf(rapid.IntRange(0, 4), rapid.IntRange(99, 102)).Draw(t, name+".len")
			ss := make([]string, n)
			for j := range ss {
				ss[j] = rapid.OneOf(rapid.Just("line"), rapid.Custom(func(t *rapid.T) string { return genString(t, "item") })).Draw(t, "item")
			}
			if n == 0 && rapid.Bool().Draw(t, name+".nil") {
				ss = nil
			}
			f.Set(reflect.ValueOf(ss))
		default:
			// A field the fast path has no plan for (a list of objects):
			// its type is left to the sdk-go path, both sides agree.
		}
	}
	return v.Interface().(Payload)
}

// genStructs draws a slice of typ, a slice of structs of string and
// integer fields (guest.migrated's processes): plausible or wild values.
func genStructs(t *rapid.T, name string, typ reflect.Type) reflect.Value {
	n := rapid.IntRange(0, 3).Draw(t, name+".len")
	if n == 0 && rapid.Bool().Draw(t, name+".nil") {
		return reflect.Zero(typ)
	}
	out := reflect.MakeSlice(typ, n, n)
	et := typ.Elem()
	for j := range n {
		for i := range et.NumField() {
			f := out.Index(j).Field(i)
			fn := name + "." + et.Field(i).Name
			plain := rapid.IntRange(0, 3).Draw(t, fn+".wild") > 0
			switch f.Kind() {
			case reflect.String:
				if plain {
					f.SetString(rapid.StringMatching(`[a-z0-9][a-z0-9_/-]{0,10}`).Draw(t, fn))
				} else {
					f.SetString(genString(t, fn))
				}
			case reflect.Int, reflect.Int64:
				if plain {
					f.SetInt(rapid.Int64Range(0, 100000).Draw(t, fn))
				} else {
					f.SetInt(genInt(t, fn))
				}
			default:
				t.Fatalf("%s: no generator for %s", fn, f.Type())
			}
		}
	}
	return out
}

// genEvent draws an event of typ: mostly well-formed, sometimes with an
// envelope sdk-go or vmguard refuses or writes differently.
func genEvent(t *rapid.T, typ string) Event {
	attr := func(label string, plain ...string) string {
		if rapid.IntRange(0, 5).Draw(t, label+".wild") > 0 {
			return rapid.SampledFrom(plain).Draw(t, label)
		}
		return genString(t, label)
	}
	e := Event{
		ID:      attr("id", "01a234ab-a07e-7bff-889c-8fab0a77177f", "f1", "0190c0de-0000-7000-8000-000000000001"),
		Source:  attr("source", "/vmguard/guests/webvm/agent", "/vmguard/nodes/node1/host", "/x", "/vmguard/failover", "urn:vmguard:x", "http://h/p?q=1#f", "//host/p", "/a b", "/%41"),
		Subject: attr("subject", "web", "node1", "demo", ""),
		CauseID: attr("cause", "", "req-1", "01a234ab-a07e-7bff-889c-8fab0a77177f"),
		Time:    rapid.OneOf(rapid.Just(time.Date(2026, 12, 2, 2, 53, 12, 702794018, time.UTC)), rapid.Custom(func(t *rapid.T) time.Time { return genTime(t, "time") })).Draw(t, "time"),
		Data:    genPayload(t, typ),
	}
	if rapid.IntRange(0, 9).Draw(t, "validSubject") > 0 {
		e.Subject = subjectOf(typ)
	}
	return e
}

func subjectOf(typ string) string {
	switch sc, _ := ScopeOf(typ); sc {
	case ScopeCluster:
		return "demo"
	case ScopeNode:
		return "node1"
	}
	return "web"
}

// sameOutcome fails t unless the two results are the same event or the
// same error.
func sameOutcome(t *rapid.T, what string, fast Event, ferr error, ref Event, rerr error) {
	// Where the fast path declines, Decode is the sdk-go path, whose text
	// may list several problems in map order: compare the kind of error.
	if (ferr == nil) != (rerr == nil) || errors.Is(ferr, ErrInvalid) != errors.Is(rerr, ErrInvalid) || errors.Is(ferr, ErrUnknownType) != errors.Is(rerr, ErrUnknownType) {
		t.Fatalf("%s: fast path: %v; sdk-go: %v", what, ferr, rerr)
	}
	if ferr == nil && !reflect.DeepEqual(fast, ref) {
		t.Fatalf("%s: fast path: %+v\nsdk-go: %+v", what, fast, ref)
	}
}

// binaryOf returns the binary-mode headers and body of the event sdk-go
// encoded as the structured body.
func binaryOf(t *rapid.T, body []byte) (nats.Header, []byte) {
	var env map[string]json.RawMessage
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("sdk-go body is not JSON: %v", err)
	}
	h := nats.Header{}
	for k, v := range env {
		if k == "data" {
			continue
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			t.Fatalf("attribute %s: %v", k, err)
		}
		if k == "datacontenttype" {
			h.Set("Content-Type", s)
		} else {
			h.Set("ce-"+k, s)
		}
	}
	return h, env["data"]
}

// mutate applies a few edits of the kinds that make a decoder's corner
// cases differ: a byte replaced, a snippet inserted, a member repeated, a
// member name's case changed.
func mutate(t *rapid.T, body []byte) []byte {
	b := bytes.Clone(body)
	for range rapid.IntRange(1, 3).Draw(t, "edits") {
		if len(b) == 0 {
			return b
		}
		at := rapid.IntRange(0, len(b)-1).Draw(t, "at")
		switch rapid.IntRange(0, 4).Draw(t, "edit") {
		case 0:
			b[at] = rapid.SampledFrom([]byte(`"\{}[],:0 A.e-z`+"\x80\x01\n")).Draw(t, "byte")
		case 1:
			snip := rapid.SampledFrom([]string{`\u0041`, `\n`, `\ud800`, `\ud83d\ude00`, `1.0`, `-0`, `1e2`, `null`, `,"x":1`, ` `, `"`, `,"data_base64":"e30="`,
				`,"subject":"db"`, `,"Node":"x"`, `,"node":"other"`, `,"extra":{"a":1,"a":2}`, `,"datacontenttype":"text/plain"`, `,"dataschema":"urn:x"`,
				`,"causeid":7`, `,"time":"2026-01-01T00:00:00+01:00"`, `00`, `\/`, `true`, `[]`, `{}`}).Draw(t, "snip")
			b = append(b[:at], append([]byte(snip), b[at:]...)...)
		case 2:
			b = bytes.Replace(b, []byte(`"node":`), []byte(`"node":"n2","node":`), 1)
		case 3:
			k := rapid.SampledFrom([]string{"id", "type", "subject", "time", "data", "epoch", "reason", "guest", "output"}).Draw(t, "key")
			b = bytes.Replace(b, []byte(`"`+k+`":`), []byte(`"`+strings.ToUpper(k[:1])+k[1:]+`":`), 1)
		case 4:
			b = b[:at]
		}
	}
	return b
}

// TestFastAgreesWithSDK: for every catalog type, the fast path encodes to
// the bytes sdk-go's MarshalJSON writes (or refuses with sdk-go's error),
// and decodes what sdk-go wrote, in structured and binary mode, and any
// mutation of it, to the event (or the error) the sdk-go path gives.
func TestFastAgreesWithSDK(t *testing.T) {
	c, err := NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.plans[TypeProcessExited]; !ok {
		t.Fatal("no fast plan for process.exited")
	}
	for _, typ := range Types() {
		t.Run(typ, func(t *testing.T) {
			var fastEnc, fastDec, fastBin, fastMut, n int
			rapid.Check(t, func(rt *rapid.T) {
				n++
				e := genEvent(rt, typ)
				// Encode, both ways.
				m, err := c.Encode(e)
				ref, rerr := c.encodeSDK(e)
				if (err == nil) != (rerr == nil) || errors.Is(err, ErrInvalid) != errors.Is(rerr, ErrInvalid) {
					rt.Fatalf("encode: fast path: %v; sdk-go: %v", err, rerr)
				}
				if _, ok := c.encodeFast(e); ok {
					fastEnc++
				}
				if rerr != nil {
					return
				}
				if m.Subject != ref.Subject || !bytes.Equal(m.Data, ref.Data) || !reflect.DeepEqual(m.Header, ref.Header) {
					rt.Fatalf("encode: fast path:\n%s %v %s\nsdk-go:\n%s %v %s", m.Subject, m.Header, m.Data, ref.Subject, ref.Header, ref.Data)
				}
				// Decode what sdk-go wrote: structured.
				got, err := c.Decode(ref.Header, ref.Data)
				want, werr := c.decodeSDK(ref.Header, validUTF8(ref.Data))
				sameOutcome(rt, "structured", got, err, want, werr)
				if _, ok := c.decodeFast(ref.Header, validUTF8(ref.Data), false); ok {
					fastDec++
				}
				// Stored: the log's path (strings into the body) checks the
				// subject as DecodeStored does.
				for _, subj := range []string{ref.Subject, ref.Subject + "x", "vmguard.events.pkg.db.process.exited", "vmguard.events.cluster.config_applied"} {
					got, err := c.decodeStored(subj, ref.Header, bytes.Clone(ref.Data), true)
					want, werr := c.DecodeStored(subj, ref.Header, ref.Data)
					sameOutcome(rt, "stored on "+subj, got, err, want, werr)
					if _, rerr := c.decodeSDK(ref.Header, validUTF8(ref.Data)); rerr == nil {
						if w, _ := SubjectOf(want); (werr == nil) != (w == subj) {
							rt.Fatalf("stored on %s, belongs on %s: %v", subj, w, werr)
						}
					}
				}
				// Binary.
				h, body := binaryOf(rt, ref.Data)
				got, err = c.Decode(h, body)
				want, werr = c.decodeSDK(h, validUTF8(body))
				sameOutcome(rt, "binary", got, err, want, werr)
				if _, ok := c.decodeFast(h, validUTF8(body), true); ok {
					fastBin++
				}
				// Mutated.
				mb := mutate(rt, ref.Data)
				got, err = c.Decode(nil, mb)
				want, werr = c.decodeSDK(nil, validUTF8(mb))
				sameOutcome(rt, fmt.Sprintf("mutated %s", mb), got, err, want, werr)
				if _, ok := c.decodeFast(nil, validUTF8(mb), false); ok {
					fastMut++
				}
			})
			t.Logf("%d events: fast path took %d encodes, %d structured decodes, %d binary decodes, %d mutated decodes", n, fastEnc, fastDec, fastBin, fastMut)
			if _, planned := c.plans[typ]; planned && (fastEnc == 0 || fastDec == 0 || fastBin == 0) {
				t.Errorf("the fast path never ran for %s: the test proves nothing", typ)
			}
		})
	}
}

// TestNamePatternAgrees: the byte loop the fast path checks names with
// agrees with the schemas' regular expression.
func TestNamePatternAgrees(t *testing.T) {
	v, err := schemas.New()
	if err != nil {
		t.Fatal(err)
	}
	fields, _, _ := v.Fields(TypePackagePlaced)
	node := fields["node"]
	rapid.Check(t, func(rt *rapid.T) {
		s := rapid.OneOf(rapid.StringMatching(`[A-Za-z0-9_-]{0,70}`), rapid.String()).Draw(rt, "s")
		data, _ := json.Marshal(map[string]any{"node": s, "epoch": 1, "reason": "r"})
		if node.String(s) != (v.Validate(TypePackagePlaced, data) == nil) {
			rt.Fatalf("%q: Field.String %v, Validate %v", s, node.String(s), v.Validate(TypePackagePlaced, data))
		}
	})
}

// FuzzFastAgrees: whatever body the fast path accepts, the sdk-go path
// accepts too and reads as the same event, through the copying and the
// owned-body paths (a mutation it cannot judge it must decline).
func FuzzFastAgrees(f *testing.F) {
	c, err := NewCodec()
	if err != nil {
		f.Fatal(err)
	}
	t0 := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)
	seeds := []Event{
		benchEvent(1),
		{ID: "p1", Source: "/vmguard/failover", Subject: "web", Time: t0, CauseID: "c1", Data: PackagePlaced{Node: "node1", Epoch: 2, Reason: "node_lost", PreviousNode: "node2"}},
		{ID: "n1", Source: "/vmguard/failover", Subject: "node1", Time: t0, Data: NodeLost{Reason: "lease expired", LastSeen: t0}},
		{ID: "g1", Source: "/vmguard/nodes/node1/host", Subject: "web", Time: t0, Data: GuestLost{Guest: "webvm", Node: "node1", Epoch: 3, LastHeartbeat: t0}},
		{ID: "s1", Source: "/vmguard/nodes/node1/host", Subject: "web", Time: t0, Data: PackageSwitchingChanged{Node: "node2", Enabled: true, By: "alice"}},
		{ID: "r1", Source: "/vmguard/nodes/node1/host", Subject: "web", Time: t0, Data: ServiceRestarting{Service: "httpd", Node: "node1", Epoch: 1, Attempt: 2, RestartsLeft: -1, DelayMS: 100}},
	}
	for _, e := range seeds {
		m, err := c.encodeSDK(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(m.Data)
	}
	f.Add([]byte(`{"specversion":"1.0","id":"a","source":"/x","type":"io.vmguard.package.started.v1","subject":"web","time":"2026-12-02T04:00:00Z","data":{"node":"n\u0041","epoch":1}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		body = validUTF8(body)
		for _, owned := range []bool{false, true} {
			got, ok := c.decodeFast(nil, bytes.Clone(body), owned)
			if !ok {
				continue
			}
			want, err := c.decodeSDK(nil, body)
			if err != nil {
				t.Fatalf("fast path accepted what sdk-go refuses (%v): %s", err, body)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("fast path: %+v\nsdk-go: %+v\nbody: %s", got, want, body)
			}
		}
	})
}
