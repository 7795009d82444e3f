package events_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/events"
)

// fuzzSeeds returns a structured message of every catalog type, so the
// fuzzers start from events that decode.
func fuzzSeeds(f *testing.F) []*nats.Msg {
	c, err := events.NewCodec()
	if err != nil {
		f.Fatal(err)
	}
	var out []*nats.Msg
	for _, typ := range events.Types() {
		e := events.New("/vmguard/guests/webvm/agent", subjectFor(typ), samplePayloads()[typ])
		e.CauseID = "0190c0de-0000-7000-8000-000000000001"
		m, err := c.Encode(e)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// FuzzDecodeStructured: no structured-mode body makes Decode panic, and
// every event Decode accepts encodes again into a message that decodes to
// the same event (`vmguard events -o json` re-encodes what it reads).
func FuzzDecodeStructured(f *testing.F) {
	for _, m := range fuzzSeeds(f) {
		f.Add(m.Data)
	}
	f.Add(failedBody("", `{"node":"node1","epoch":3,"reason":"ok","NODE":"a.b c"}`))
	f.Add(failedBody(`,"data_base64":"e30="`, `{}`))
	f.Add(failedBody(``, "{\"node\":\"node1\",\"epoch\":3,\"reason\":\"\x1b[2J\xff\"}"))
	c, err := events.NewCodec()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkRoundTrip(t, c, nil, body)
	})
}

// FuzzDecodeBinary: the same for binary mode, the attributes in ce-*
// headers and the data in the body.
func FuzzDecodeBinary(f *testing.F) {
	c, err := events.NewCodec()
	if err != nil {
		f.Fatal(err)
	}
	for _, m := range fuzzSeeds(f) {
		e, err := c.Decode(m.Header, m.Data)
		if err != nil {
			f.Fatal(err)
		}
		data, err := dataOf(m.Data)
		if err != nil {
			f.Fatal(err)
		}
		f.Add("1.0", e.ID, e.Source, e.Type(), e.Subject, e.Time.Format(time.RFC3339Nano), e.CauseID, "application/json", data)
	}
	f.Add("1.0", "x", "/x", events.TypePackageFailed, "web", "2026-11-27T10:00:00Z", "", "", []byte(`{"node":"n","epoch":1,"reason":"r","Reason":"s"}`))
	f.Fuzz(func(t *testing.T, spec, id, source, typ, subject, at, cause, ct string, body []byte) {
		h := nats.Header{}
		set := func(k, v string) {
			if v != "" {
				h.Set(k, v)
			}
		}
		h.Set("ce-specversion", spec)
		set("ce-id", id)
		set("ce-source", source)
		set("ce-type", typ)
		set("ce-subject", subject)
		set("ce-time", at)
		set("ce-causeid", cause)
		set("Content-Type", ct)
		checkRoundTrip(t, c, h, body)
	})
}
