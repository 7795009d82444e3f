package events_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/events"
)

// failedBody is a structured package.failed about web whose envelope has the
// extra members envExtra and whose data is data.
func failedBody(envExtra, data string) []byte {
	return []byte(`{"specversion":"1.0","id":"f1","source":"/x","type":"` + events.TypePackageFailed +
		`","subject":"web","time":"2026-11-27T10:00:00Z"` + envExtra + `,"data":` + data + `}`)
}

// TestAmbiguousKeysRefused: the schema check reads members by their exact
// names while the typed decode matches them without case and keeps the last,
// so a second member spelled in another case would smuggle a value past the
// schema (a node name that is no name, a reason over its limit). Such
// events are refused, in the envelope and in the data, in both modes.
func TestAmbiguousKeysRefused(t *testing.T) {
	c, err := events.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 5000)
	good := `{"node":"node1","epoch":3,"reason":"ok"}`
	if e, err := c.Decode(nil, failedBody("", good)); err != nil || e.Data != (events.PackageFailed{Node: "node1", Epoch: 3, Reason: "ok"}) {
		t.Fatalf("the event without tricks: %+v %v", e, err)
	}
	cases := []struct {
		name, body, want string
	}{
		{"data: second member in upper case", string(failedBody("", `{"node":"node1","epoch":3,"reason":"ok","NODE":"a.b c"}`)), "data.NODE"},
		{"data: upper case first", string(failedBody("", `{"REASON":"`+long+`","node":"node1","epoch":3,"reason":"ok"}`)), "data.reason"},
		{"data: lone upper-case member", string(failedBody("", `{"node":"node1","epoch":3,"reason":"ok","Service":"a.b"}`)), `differs from "service" only in case`},
		{"data: exact duplicate", string(failedBody("", `{"node":"node1","epoch":3,"reason":"ok","reason":"`+long+`"}`)), "data.reason: repeats"},
		{"data: escaped duplicate", string(failedBody("", `{"node":"node1","epoch":3,"reason":"ok","\u0072eason":"`+long+`"}`)), "data.reason: repeats"},
		{"data: Kelvin sign", string(failedBody("", `{"node":"node1","epoch":3,"reason":"ok","\u212Aey":1,"key":2}`)), "data.key: repeats"},
		{"envelope: subject twice", string(failedBody(`,"subject":"db"`, good)), "subject: repeats"},
		{"envelope: Subject", string(failedBody(`,"Subject":"db"`, good)), "Subject: differs"},
		{"envelope: lone TIME", `{"specversion":"1.0","id":"f1","source":"/x","type":"` + events.TypePackageFailed + `","subject":"web","TIME":"2026-11-27T10:00:00Z","data":` + good + `}`, `differs from "time" only in case`},
		{"envelope: data twice", string(failedBody("", good+`,"DATA":{"node":"a.b","epoch":1,"reason":"`+long+`"}`)), "DATA: differs"},
		{"envelope: data and data_base64", string(failedBody(`,"data_base64":"`+base64.StdEncoding.EncodeToString([]byte(good))+`"`, good)), "both present"},
		{"data_base64: duplicate inside", `{"specversion":"1.0","id":"f1","source":"/x","type":"` + events.TypePackageFailed + `","subject":"web","time":"2026-11-27T10:00:00Z","data_base64":"` +
			base64.StdEncoding.EncodeToString([]byte(`{"node":"node1","epoch":3,"reason":"ok","Node":"x.y"}`)) + `"}`, "data.Node"},
	}
	for _, tc := range cases {
		_, err := c.Decode(nil, []byte(tc.body))
		if !errors.Is(err, events.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want ErrInvalid naming %q", tc.name, err, tc.want)
		}
	}

	// Binary mode: the headers are the envelope.
	binary := func(edit func(nats.Header), body string) error {
		h := nats.Header{}
		h.Set("ce-specversion", "1.0")
		h.Set("ce-id", "b1")
		h.Set("ce-source", "/x")
		h.Set("ce-type", events.TypePackageFailed)
		h.Set("ce-subject", "web")
		h.Set("ce-time", "2026-11-27T10:00:00Z")
		h.Set("Content-Type", "application/json")
		if edit != nil {
			edit(h)
		}
		_, err := c.Decode(h, []byte(body))
		return err
	}
	if err := binary(nil, good); err != nil {
		t.Fatalf("binary event without tricks: %v", err)
	}
	bcases := []struct {
		name string
		edit func(nats.Header)
		body string
		want string
	}{
		{"two ce-subject values", func(h nats.Header) { h.Add("ce-subject", "db") }, good, "2 values"},
		{"Ce-Subject", func(h nats.Header) { h["Ce-Subject"] = []string{"db"} }, good, `"Ce-Subject"`},
		{"content-type", func(h nats.Header) { h["content-type"] = []string{"text/plain"} }, good, `"content-type"`},
		{"duplicate in the body", nil, `{"node":"node1","epoch":3,"reason":"ok","Reason":"` + long + `"}`, "data.Reason"},
	}
	for _, tc := range bcases {
		err := binary(tc.edit, tc.body)
		if !errors.Is(err, events.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("binary, %s: got %v, want ErrInvalid naming %q", tc.name, err, tc.want)
		}
	}
}

// TestDecodedEventReencodes: whatever Decode accepts, Encode accepts and
// reads back the same (`vmguard events -o json` re-encodes what it read).
func TestDecodedEventReencodes(t *testing.T) {
	c, err := events.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	for typ, p := range samplePayloads() {
		m, err := c.Encode(events.New("/x", subjectFor(typ), p))
		if err != nil {
			t.Fatal(err)
		}
		checkRoundTrip(t, c, m.Header, m.Data)
	}
	// Invalid UTF-8 reads as U+FFFD, byte by byte, as encoding/json reads it,
	// so the event encodes back to itself (found by FuzzDecodeStructured).
	body := failedBody("", "{\"node\":\"node1\",\"epoch\":3,\"reason\":\"a\xff\xfeb\xe2\x82\"}")
	e, err := c.Decode(nil, body)
	if err != nil || e.Data.(events.PackageFailed).Reason != "a\ufffd\ufffdb\ufffd\ufffd" {
		t.Fatalf("invalid UTF-8: %+v %v", e, err)
	}
	checkRoundTrip(t, c, nil, body)
}

// checkRoundTrip fails t if the message decodes but does not encode again
// into a message that decodes to the same event.
func checkRoundTrip(t *testing.T, c *events.Codec, hdr nats.Header, body []byte) {
	t.Helper()
	e, err := c.Decode(hdr, body)
	if err != nil {
		return
	}
	m, err := c.Encode(e)
	if err != nil {
		t.Fatalf("decoded %q, but encoding it again fails: %v", body, err)
	}
	e2, err := c.Decode(m.Header, m.Data)
	if err != nil {
		t.Fatalf("re-encoded %q as %q, which does not decode: %v", body, m.Data, err)
	}
	e.Seq, e2.Seq = 0, 0
	if fmt.Sprintf("%#v", e) != fmt.Sprintf("%#v", e2) || !e.Time.Equal(e2.Time) {
		t.Fatalf("round trip of %q changed the event:\n%#v\n%#v", body, e, e2)
	}
}

// dataOf returns the data member of a structured CloudEvent.
func dataOf(body []byte) ([]byte, error) {
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	err := json.Unmarshal(body, &env)
	return env.Data, err
}

// TestUnknownSpecVersionRefused: the CloudEvents SDK's event of a version it
// does not know panics on the first attribute set; such a message (a guest
// may publish one on its subjects) is refused, not a crash of every reader.
// Found by FuzzDecodeStructured.
func TestUnknownSpecVersionRefused(t *testing.T) {
	c, err := events.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"0", "0.3", "2.0", "1.0 "} {
		_, err := c.Decode(nil, []byte(`{"specversion":"`+v+`","id":"x","source":"/x","type":"`+events.TypeNodeJoined+`","subject":"n1","time":"2026-11-27T10:00:00Z","data":{}}`))
		if !errors.Is(err, events.ErrInvalid) || !strings.Contains(err.Error(), "specversion") {
			t.Errorf("structured, specversion %q: %v", v, err)
		}
		h := nats.Header{}
		h.Set("ce-specversion", v)
		h.Set("ce-id", "x")
		_, err = c.Decode(h, []byte(`{}`))
		if !errors.Is(err, events.ErrInvalid) || !strings.Contains(err.Error(), "specversion") {
			t.Errorf("binary, specversion %q: %v", v, err)
		}
	}
}
