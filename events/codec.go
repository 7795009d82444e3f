package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	gojson "github.com/goccy/go-json"
	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/schemas"
)

// ContentType is the content type of a structured-mode CloudEvent.
const ContentType = "application/cloudevents+json"

// CauseExtension is the CloudEvents extension attribute naming the cause.
const CauseExtension = "causeid"

// Codec turns Events into NATS messages and back, checking each against its
// schema. It is safe for concurrent use.
type Codec struct {
	v        *schemas.Validator
	envelope *schemas.KeyCheck
	plans    map[string]*plan // the fast path's, by event type
	// contentType is the Content-Type header's value of fast-path messages.
	contentType []string
}

// NewCodec returns a Codec with the embedded schemas.
func NewCodec() (*Codec, error) {
	v, err := schemas.New()
	if err != nil {
		return nil, fmt.Errorf("load schemas: %w", err)
	}
	return &Codec{v: v, envelope: schemas.NewKeyCheck(envelopeMembers...), plans: newPlans(v), contentType: []string{ContentType}}, nil
}

// Encode validates e and returns the NATS message that stores it: structured
// JSON mode, Content-Type and Nats-Msg-Id headers set.
func (c *Codec) Encode(e Event) (*nats.Msg, error) {
	if m, ok := c.encodeFast(e); ok {
		return m, nil
	}
	return c.encodeSDK(e)
}

// encodeSDK is Encode through sdk-go's event.Event: the reference the fast
// path agrees with, and the path that reports every error.
func (c *Codec) encodeSDK(e Event) (*nats.Msg, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	subj, err := SubjectOf(e)
	if err != nil {
		return nil, fmt.Errorf("%w: type: %v", ErrInvalid, err)
	}
	data, err := json.Marshal(e.Data)
	if err != nil {
		return nil, fmt.Errorf("encode %s data: %w", e.Type(), err)
	}
	if err := c.v.Validate(e.Type(), data); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, e.Type(), err)
	}
	ce := cloudevents.New()
	ce.SetID(e.ID)
	ce.SetSource(e.Source)
	ce.SetType(e.Type())
	if e.Subject != "" {
		ce.SetSubject(e.Subject)
	}
	ce.SetTime(e.Time)
	ce.SetDataSchema(schemas.URL(e.Type()))
	if e.CauseID != "" {
		ce.SetExtension(CauseExtension, e.CauseID)
	}
	ce.SetDataContentType("application/json")
	ce.DataEncoded = data // already JSON; SetData would encode it again
	if err := ce.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	body, err := ce.MarshalJSON() // json.Marshal would re-scan and compact it
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", e.Type(), err)
	}
	m := nats.NewMsg(subj)
	m.Header.Set("Content-Type", ContentType)
	m.Header.Set(nats.MsgIdHdr, e.ID)
	m.Data = body
	return m, nil
}

// Decode reads an event from a NATS message in structured mode (the body is
// the whole CloudEvent) or binary mode (ce-* headers, the body is the data),
// checks it against its schema and decodes its data. An error wraps
// ErrInvalid or ErrUnknownType and says which field is wrong.
//
// The schema check reads members by their exact names, the typed decode
// matches them without regard to case and keeps the last: so that both see
// the same event, an object with two members named alike (equal, or equal
// but for case) is refused, in the envelope and in the data, as is a member
// named like a CloudEvents attribute or a data field but for case, and a
// binary-mode header repeated or spelled in another case.
func (c *Codec) Decode(hdr nats.Header, body []byte) (Event, error) {
	body = validUTF8(body)
	if e, ok := c.decodeFast(hdr, body, false); ok {
		return e, nil
	}
	return c.decodeSDK(hdr, body)
}

// decodeSDK is Decode through sdk-go's event.Event, for a body that is
// valid UTF-8: the reference the fast path agrees with, and the path that
// reports every error.
func (c *Codec) decodeSDK(hdr nats.Header, body []byte) (Event, error) {
	var ce cloudevents.Event
	if hdr != nil && hdr.Get("ce-specversion") != "" {
		var err error
		if ce, err = fromBinary(hdr, body); err != nil {
			return Event{}, err
		}
	} else {
		if err := c.envelope.Check(body); err != nil {
			return Event{}, fmt.Errorf("%w: not a structured CloudEvent: %v", ErrInvalid, err)
		}
		var err error
		if ce, err = fromStructured(body); err != nil {
			return Event{}, err
		}
	}
	return c.fromCloudEvent(ce)
}

// DecodeStored decodes a message read from the log and checks that it is
// stored where its type and subject say: the server's permissions bind a
// writer (a guest, say) to subjects, not to what a body claims, so an event
// whose body claims to be about another package, a node or the cluster than
// the subject it was stored on is refused (ErrInvalid) — a guest allowed to
// publish only its own process events cannot forge a placement this way —
// and so is one whose source names a role that does not write its type
// (SourceFits): the subject says which roles could have written it.
func (c *Codec) DecodeStored(subject string, hdr nats.Header, body []byte) (Event, error) {
	return c.decodeStored(subject, hdr, body, false)
}

// decodeStored is DecodeStored; owned says that nothing changes body
// afterwards (a message read from the log), so the event's strings may
// point into it instead of into a copy.
func (c *Codec) decodeStored(subject string, hdr nats.Header, body []byte, owned bool) (Event, error) {
	body = validUTF8(body)
	e, ok := c.decodeFast(hdr, body, owned)
	if !ok || !storedOn(e, subject) {
		if !ok {
			var err error
			if e, err = c.decodeSDK(hdr, body); err != nil {
				return Event{}, err
			}
		}
		want, err := SubjectOf(e)
		if err != nil {
			return Event{}, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if want != subject {
			return Event{}, fmt.Errorf("%w: a %s about %q belongs on %s, but was stored on %s", ErrInvalid, e.Type(), e.Subject, want, subject)
		}
	}
	if err := SourceFits(e); err != nil {
		return Event{}, err
	}
	if len(body) > detachAbove {
		e = detach(e)
	}
	return e, nil
}

// detachAbove is the body size above which a decoded event's strings are
// copied out of the body (detach).
const detachAbove = 64 << 10

// detach returns e with its envelope's strings, and a configuration's
// small ones, copied: they may point into the event's body (the fast path
// reads them in place, go-json into its copy of it), and a reader that
// keeps only an event's ID (a host manager's State.ConfigID, an
// instance's LastID) kept the whole body alive: a cluster.config_applied
// of 10,000 packages, 3.6 MB per host manager (docs/bench/scale.md,
// session 11). The configuration itself (ConfigApplied.Config) is left
// as it is: a reader that keeps it keeps it on purpose.
func detach(e Event) Event {
	e.ID, e.Source, e.Subject, e.CauseID = strings.Clone(e.ID), strings.Clone(e.Source), strings.Clone(e.Subject), strings.Clone(e.CauseID)
	if d, ok := e.Data.(ConfigApplied); ok {
		d.Hash, d.File, d.By, d.Reason = strings.Clone(d.Hash), strings.Clone(d.File), strings.Clone(d.By), strings.Clone(d.Reason)
		e.Data = d
	}
	return e
}

// envelope is a structured-mode CloudEvent as JSON. Decoding it with a fast
// JSON decoder and then building the SDK's event is about five times faster
// than the SDK's own UnmarshalJSON, which matters when a component rebuilds
// its state from millions of events.
type envelope struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject"`
	Time            string          `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	DataSchema      string          `json:"dataschema"`
	CauseID         *string         `json:"causeid"`
	Data            json.RawMessage `json:"data"`
	DataBase64      []byte          `json:"data_base64"`
}

// envelopeMembers are the JSON names of envelope's fields.
var envelopeMembers = []string{"specversion", "id", "source", "type", "subject", "time",
	"datacontenttype", "dataschema", CauseExtension, "data", "data_base64"}

func fromStructured(body []byte) (cloudevents.Event, error) {
	var env envelope
	if err := gojson.Unmarshal(body, &env); err != nil {
		return cloudevents.Event{}, fmt.Errorf("%w: not a structured CloudEvent: %v", ErrInvalid, err)
	}
	ce, err := newCloudEvent(env.SpecVersion)
	if err != nil {
		return ce, err
	}
	ce.SetID(env.ID)
	ce.SetSource(env.Source)
	ce.SetType(env.Type)
	if env.Subject != "" {
		ce.SetSubject(env.Subject)
	}
	if env.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, env.Time)
		if err != nil {
			return ce, fmt.Errorf("%w: time: %q is not RFC 3339", ErrInvalid, env.Time)
		}
		ce.SetTime(t)
	}
	if env.DataSchema != "" {
		ce.SetDataSchema(env.DataSchema)
	}
	if env.CauseID != nil {
		ce.SetExtension(CauseExtension, *env.CauseID)
	}
	if env.DataContentType != "" {
		ce.SetDataContentType(env.DataContentType)
	}
	if env.Data != nil && env.DataBase64 != nil {
		return ce, fmt.Errorf("%w: data and data_base64: both present, want one", ErrInvalid)
	}
	ce.DataEncoded = env.Data
	if env.Data == nil && env.DataBase64 != nil {
		ce.DataEncoded = env.DataBase64
		ce.DataBase64 = true
	}
	return ce, nil
}

func (c *Codec) fromCloudEvent(ce cloudevents.Event) (Event, error) {
	if err := ce.Validate(); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	typ := ce.Type()
	if ct := ce.DataContentType(); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return Event{}, fmt.Errorf("%w: datacontenttype: %q, want application/json", ErrInvalid, ct)
	}
	data := ce.Data()
	if err := c.v.Validate(typ, data); err != nil {
		if errors.Is(err, schemas.ErrNoSchema) {
			return Event{}, fmt.Errorf("%w: type: %q", ErrUnknownType, typ)
		}
		return Event{}, fmt.Errorf("%w: %s: %v", ErrInvalid, typ, err)
	}
	p, err := newPayload(typ, data)
	if err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	e := Event{ID: ce.ID(), Source: ce.Source(), Subject: ce.Subject(), Time: ce.Time(), Data: p}
	if v, ok := ce.Extensions()[CauseExtension]; ok {
		e.CauseID = fmt.Sprint(v)
	}
	if err := e.Validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}

// specVersion is the CloudEvents version vmguard writes and reads.
const specVersion = "1.0"

// newCloudEvent returns an empty CloudEvent of version spec, which must be
// specVersion: the SDK's event of a version it does not know has no context
// and panics on the first attribute set.
func newCloudEvent(spec string) (cloudevents.Event, error) {
	if spec != specVersion {
		if spec == "" {
			return cloudevents.Event{}, fmt.Errorf("%w: specversion: missing", ErrInvalid)
		}
		return cloudevents.Event{}, fmt.Errorf("%w: specversion: %.40q, want %s", ErrInvalid, spec, specVersion)
	}
	return cloudevents.New(spec), nil
}

// fromBinary builds a CloudEvent from binary-mode headers.
func fromBinary(hdr nats.Header, body []byte) (cloudevents.Event, error) {
	if err := checkBinaryHeaders(hdr); err != nil {
		return cloudevents.Event{}, err
	}
	ce, err := newCloudEvent(hdr.Get("ce-specversion"))
	if err != nil {
		return ce, err
	}
	ce.SetID(hdr.Get("ce-id"))
	ce.SetSource(hdr.Get("ce-source"))
	ce.SetType(hdr.Get("ce-type"))
	if s := hdr.Get("ce-subject"); s != "" {
		ce.SetSubject(s)
	}
	if s := hdr.Get("ce-time"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return ce, fmt.Errorf("%w: time: %q is not RFC 3339", ErrInvalid, s)
		}
		ce.SetTime(t)
	}
	if s := hdr.Get("ce-dataschema"); s != "" {
		ce.SetDataSchema(s)
	}
	if s := hdr.Get("ce-" + CauseExtension); s != "" {
		ce.SetExtension(CauseExtension, s)
	}
	ct := hdr.Get("Content-Type")
	if ct == "" {
		ct = "application/json"
	}
	ce.SetDataContentType(ct)
	ce.DataEncoded = body
	return ce, nil
}

// checkBinaryHeaders refuses a binary-mode event whose attribute headers
// (ce-*, Content-Type) are repeated or spelled in another case than the one
// this codec reads: another reader might take the other value.
func checkBinaryHeaders(hdr nats.Header) error {
	for k, vs := range hdr {
		lower := strings.ToLower(k)
		attr := strings.HasPrefix(lower, "ce-")
		if !attr && lower != "content-type" {
			continue
		}
		if attr && k != lower {
			return fmt.Errorf("%w: header %q: CloudEvents headers are lower case (%v)", ErrInvalid, k, schemas.ErrAmbiguousKey)
		}
		if !attr && k != "Content-Type" {
			return fmt.Errorf("%w: header %q: want Content-Type (%v)", ErrInvalid, k, schemas.ErrAmbiguousKey)
		}
		if len(vs) > 1 {
			return fmt.Errorf("%w: header %s: %d values, want one (%v)", ErrInvalid, k, len(vs), schemas.ErrAmbiguousKey)
		}
		if len(vs) == 1 && !utf8.ValidString(vs[0]) {
			return fmt.Errorf("%w: header %s: not valid UTF-8", ErrInvalid, k)
		}
	}
	return nil
}

// validUTF8 returns b with each byte that is not part of valid UTF-8
// replaced by U+FFFD, as encoding/json reads such a byte in a string (JSON
// allows it nowhere else): the schema check, the typed decode and any other
// reader then see the same text, and the event encodes back to itself.
func validUTF8(b []byte) []byte {
	if utf8.Valid(b) {
		return b
	}
	out := make([]byte, 0, len(b)+8)
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n == 1 {
			out = utf8.AppendRune(out, utf8.RuneError)
		} else {
			out = append(out, b[:n]...)
		}
		b = b[n:]
	}
	return out
}
