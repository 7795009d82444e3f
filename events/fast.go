package events

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/nats-io/nats.go"

	"github.com/vmguard/vmguard/schemas"
)

// The fast path. Encoding through sdk-go's event.Event and checking the
// data against its schema as a generic JSON value cost ~23 µs an event, and
// decoding as much: the JSON was parsed four times (key check, envelope,
// schema value, typed data) and every attribute went through url.Parse.
// The fast path writes and reads the structured envelope and the typed data
// in one pass each, checking every member against its compiled schema rule
// as it goes.
//
// It is a recogniser, not a second implementation: it handles only events
// in the shape vmguard itself writes (known members once each, plain
// attribute values, whole numbers, strings with the escapes encoding/json
// writes) and declines everything else (an unknown member, a value that
// fails its rule, binary mode with odd headers, data_base64, ...), which the
// sdk-go path then handles, so every error still comes from it.
// TestFastAgreesWithSDK proves for every catalog type, both directions,
// structured and binary mode, that the fast path gives what sdk-go gives.

// fieldKind is the Go type of a payload field the fast path handles.
type fieldKind int

const (
	kindString fieldKind = iota
	kindInt
	kindUint
	kindBool
	kindTime
	kindStrings
)

// field is one member of a payload struct.
type field struct {
	name      string
	key       string // `"name":`
	index     int
	kind      fieldKind
	omitEmpty bool // omitempty or omitzero: left out when zero
	rule      schemas.Field
	required  bool
}

// plan is how the fast path handles the data of one catalog type.
type plan struct {
	typ       string
	rt        reflect.Type
	fields    []field // in struct order, which is encoding/json's order
	schemaURL string
	// The subject SubjectOf gives: prefix + the event's subject + suffix,
	// or prefix alone for a cluster event.
	scope                  Scope
	subjPrefix, subjSuffix string
	// scratch holds addressable payloads to decode into, reused: the
	// payload boxed into the event is then the only copy allocated.
	scratch sync.Pool
	// size is the longest message of this type encoded so far, so that
	// one allocation usually holds the next.
	size atomic.Int64
}

// newPlans builds a plan for every catalog type whose payload has only
// fields the fast path handles (ConfigApplied's raw config is left to the
// sdk-go path).
func newPlans(v *schemas.Validator) map[string]*plan {
	plans := map[string]*plan{}
	for _, typ := range Types() {
		p, err := newPayload(typ, []byte("{}"))
		if err != nil {
			continue
		}
		if pl := newPlan(v, typ, reflect.TypeOf(p)); pl != nil {
			plans[typ] = pl
		}
	}
	return plans
}

func newPlan(v *schemas.Validator, typ string, rt reflect.Type) *plan {
	rules, required, ok := v.Fields(typ)
	if !ok || rt.Kind() != reflect.Struct {
		return nil
	}
	pl := &plan{typ: typ, rt: rt, schemaURL: schemas.URL(typ)}
	entity, verb, _, err := ParseType(typ)
	if err != nil {
		return nil
	}
	switch pl.scope, _ = ScopeOf(typ); pl.scope {
	case ScopeCluster:
		pl.subjPrefix = ClusterSubject(verb)
	case ScopeNode:
		pl.subjPrefix, pl.subjSuffix = "vmguard.events.node.", "."+verb
	case ScopePlacement:
		pl.subjPrefix, pl.subjSuffix = "vmguard.events.placement.", "."+verb
	default:
		pl.subjPrefix, pl.subjSuffix = "vmguard.events.pkg.", "."+entity+"."+verb
	}
	timeType := reflect.TypeFor[time.Time]()
	for i := range rt.NumField() {
		sf := rt.Field(i)
		tag := sf.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if !sf.IsExported() || name == "" || name == "-" {
			return nil
		}
		f := field{name: name, key: strconv.Quote(name) + ":", index: i,
			omitEmpty: strings.Contains(opts, "omitempty") || strings.Contains(opts, "omitzero")}
		switch {
		case sf.Type == timeType:
			f.kind = kindTime
			if !strings.Contains(opts, "omitzero") {
				return nil
			}
		case sf.Type.Kind() == reflect.String:
			f.kind = kindString
		case sf.Type.Kind() == reflect.Int || sf.Type.Kind() == reflect.Int64:
			f.kind = kindInt
		case sf.Type.Kind() == reflect.Uint64:
			f.kind = kindUint
		case sf.Type.Kind() == reflect.Bool:
			f.kind = kindBool
		case sf.Type.Kind() == reflect.Slice && sf.Type.Elem().Kind() == reflect.String && f.omitEmpty:
			f.kind = kindStrings
		default:
			return nil
		}
		if f.rule, ok = rules[name]; !ok {
			return nil // a field the schema does not describe: leave it to the sdk-go path
		}
		for _, r := range required {
			if r == name {
				f.required = true
			}
		}
		pl.fields = append(pl.fields, f)
	}
	if len(pl.fields) != len(rules) {
		return nil
	}
	return pl
}

// plainAttr reports whether an envelope attribute is written and read the
// same by every path: printable ASCII without quote, backslash or space, so
// no JSON escape, trimming or URL normalisation applies.
func plainAttr(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// sourceByte marks the bytes plainSource allows.
var sourceByte = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("/._~-", byte(c)) >= 0
	}
	return t
}()

// plainSource reports whether a source is an absolute path that url.Parse
// returns unchanged: '/', then letters, digits and "/._~-".
func plainSource(s string) bool {
	if len(s) == 0 || s[0] != '/' || strings.HasPrefix(s, "//") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !sourceByte[s[i]] {
			return false
		}
	}
	return true
}

// encodeFast writes e as sdk-go's MarshalJSON would, or returns false to
// leave it to the sdk-go path (which then also reports any error).
func (c *Codec) encodeFast(e Event) (*nats.Msg, bool) {
	if e.Data == nil {
		return nil, false
	}
	typ := e.Data.EventType()
	pl := c.plans[typ]
	if pl == nil || reflect.TypeOf(e.Data) != pl.rt {
		return nil, false
	}
	if !plainAttr(e.ID) || !plainSource(e.Source) || !plainAttr(e.Subject) || !plainAttr(e.CauseID) || e.Validate() != nil {
		return nil, false
	}
	subj := pl.subjPrefix
	if pl.scope != ScopeCluster {
		subj = pl.subjPrefix + e.Subject + pl.subjSuffix
	}
	b := make([]byte, 0, max(pl.size.Load(), 384)+64)
	b = append(b, `{"specversion":"1.0","id":"`...)
	b = append(b, e.ID...)
	b = append(b, `","source":"`...)
	b = append(b, e.Source...)
	b = append(b, `","type":"`...)
	b = append(b, typ...)
	if e.Subject != "" {
		b = append(b, `","subject":"`...)
		b = append(b, e.Subject...)
	}
	b = append(b, `","datacontenttype":"application/json","dataschema":"`...)
	b = append(b, pl.schemaURL...)
	b = append(b, `","time":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","data":`...)
	b, ok := pl.appendData(b, reflect.ValueOf(e.Data))
	if !ok {
		return nil, false
	}
	if e.CauseID != "" {
		b = append(b, `,"causeid":"`...)
		b = append(b, e.CauseID...)
		b = append(b, '"')
	}
	b = append(b, '}')
	if n := int64(len(b)); n > pl.size.Load() {
		pl.size.Store(n)
	}
	// The Content-Type value is shared by every message: nats.Header's
	// methods replace a value, never write into it.
	return &nats.Msg{Subject: subj, Header: nats.Header{"Content-Type": c.contentType, nats.MsgIdHdr: {e.ID}}, Data: b}, true
}

// appendData writes the payload v as encoding/json's Marshal would, checking
// each member against its rule; false if a member fails or is missing.
func (pl *plan) appendData(b []byte, v reflect.Value) ([]byte, bool) {
	b = append(b, '{')
	first := true
	for i := range pl.fields {
		f := &pl.fields[i]
		fv := v.Field(f.index)
		if f.omitEmpty && isEmpty(fv) {
			if f.required {
				return nil, false
			}
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, f.key...)
		switch f.kind {
		case kindString:
			s := fv.String()
			if !utf8.ValidString(s) || !f.rule.String(s) {
				return nil, false
			}
			b = appendJSONString(b, s)
		case kindInt:
			n := fv.Int()
			if !f.rule.Integer(float64(n)) {
				return nil, false
			}
			b = strconv.AppendInt(b, n, 10)
		case kindUint:
			n := fv.Uint()
			if !f.rule.Integer(float64(n)) {
				return nil, false
			}
			b = strconv.AppendUint(b, n, 10)
		case kindBool:
			if !f.rule.Bool() {
				return nil, false
			}
			b = strconv.AppendBool(b, fv.Bool())
		case kindTime:
			t := fv.Interface().(time.Time)
			j, err := t.MarshalJSON()
			if err != nil || !f.rule.String(string(j[1:len(j)-1])) {
				return nil, false
			}
			b = append(b, j...)
		case kindStrings:
			if !f.rule.Items(fv.Len()) {
				return nil, false
			}
			b = append(b, '[')
			for j := range fv.Len() {
				s := fv.Index(j).String()
				if !utf8.ValidString(s) || !f.rule.Item(s) {
					return nil, false
				}
				if j > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, s)
			}
			b = append(b, ']')
		}
	}
	return append(b, '}'), true
}

// isEmpty reports whether encoding/json leaves v out under omitempty or,
// for a time, omitzero.
func isEmpty(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Slice, reflect.String:
		return v.Len() == 0
	}
	return v.IsZero()
}

const hexDigits = "0123456789abcdef"

// appendJSONString writes s as encoding/json does (HTML-escaped, U+2028 and
// U+2029 escaped); s must be valid UTF-8.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			start = i + size
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// decodeFast reads an event in the shape vmguard writes it, or returns false
// to leave it to the sdk-go path. body is valid UTF-8; owned says nothing
// changes it afterwards, so strings may point into it.
//
// Longer than 80 lines: the hot path of decoding (docs/bench): one pass
// over the envelope's members, a case per attribute, kept inline for speed.
func (c *Codec) decodeFast(hdr nats.Header, body []byte, owned bool) (Event, bool) {
	text := unsafe.String(unsafe.SliceData(body), len(body))
	if !owned {
		text = string(body)
	}
	if hdr != nil && len(hdr["ce-specversion"]) > 0 {
		return c.decodeBinaryFast(hdr, text)
	}
	var e Event
	p := scanner{s: text}
	if !p.byte('{') {
		return Event{}, false
	}
	var seen uint16
	var spec, typ, ts, schema, ctype string
	var data Payload
	for n := 0; ; n++ {
		if n > 0 {
			if p.byte('}') {
				break
			}
			if !p.byte(',') {
				return Event{}, false
			}
		} else if p.byte('}') {
			break
		}
		key, ok := p.key()
		if !ok {
			return Event{}, false
		}
		var bit uint16
		var dst *string
		switch key {
		case "specversion":
			bit, dst = 1<<0, &spec
		case "id":
			bit, dst = 1<<1, &e.ID
		case "source":
			bit, dst = 1<<2, &e.Source
		case "type":
			bit, dst = 1<<3, &typ
		case "subject":
			bit, dst = 1<<4, &e.Subject
		case "time":
			bit, dst = 1<<5, &ts
		case "datacontenttype":
			bit, dst = 1<<6, &ctype
		case "dataschema":
			bit, dst = 1<<7, &schema
		case CauseExtension:
			bit, dst = 1<<8, &e.CauseID
		case "data":
			bit = 1 << 9
		default:
			return Event{}, false
		}
		if seen&bit != 0 {
			return Event{}, false
		}
		seen |= bit
		if dst != nil {
			if *dst, ok = p.str(); !ok {
				return Event{}, false
			}
			continue
		}
		pl := c.plans[typ] // the type must come before the data
		if pl == nil {
			return Event{}, false
		}
		if data, ok = pl.readData(&p); !ok {
			return Event{}, false
		}
	}
	p.space()
	if p.i != len(p.s) || data == nil || seen&(1<<5) == 0 {
		return Event{}, false
	}
	return c.finishFast(e, spec, typ, ts, schema, ctype, data)
}

// decodeBinaryFast reads a binary-mode event whose headers are plain.
func (c *Codec) decodeBinaryFast(hdr nats.Header, body string) (Event, bool) {
	if checkBinaryHeaders(hdr) != nil {
		return Event{}, false
	}
	get := func(k string) string {
		if v := hdr[k]; len(v) == 1 {
			return v[0]
		}
		return ""
	}
	typ := get("ce-type")
	pl := c.plans[typ]
	if pl == nil {
		return Event{}, false
	}
	p := scanner{s: body}
	data, ok := pl.readData(&p)
	if p.space(); !ok || p.i != len(p.s) {
		return Event{}, false
	}
	e := Event{ID: get("ce-id"), Source: get("ce-source"), Subject: get("ce-subject"), CauseID: get("ce-" + CauseExtension)}
	return c.finishFast(e, get("ce-specversion"), typ, get("ce-time"), get("ce-dataschema"), get("Content-Type"), data)
}

// storedOn reports whether subject is where SubjectOf puts e, without
// building that subject.
func storedOn(e Event, subject string) bool {
	entity, verb, _, err := ParseType(e.Type())
	if err != nil {
		return false
	}
	rest, ok := strings.CutPrefix(subject, "vmguard.events.")
	if !ok {
		return false
	}
	switch entity {
	case "cluster":
		rest, ok = strings.CutPrefix(rest, "cluster.")
	case "node":
		if rest, ok = strings.CutPrefix(rest, "node."); ok {
			rest, ok = strings.CutPrefix(rest, e.Subject+".")
		}
	default:
		if rest, ok = strings.CutPrefix(rest, "pkg."); ok {
			if rest, ok = strings.CutPrefix(rest, e.Subject); ok {
				if rest, ok = strings.CutPrefix(rest, "."); ok {
					rest, ok = strings.CutPrefix(rest, entity+".")
				}
			}
		}
	}
	return ok && rest == verb
}

// finishFast checks the envelope's attributes and completes e.
func (c *Codec) finishFast(e Event, spec, typ, ts, schema, ctype string, data Payload) (Event, bool) {
	if spec != specVersion || (ctype != "" && ctype != "application/json") || (schema != "" && schema != c.plans[typ].schemaURL) ||
		!plainAttr(e.ID) || !plainSource(e.Source) || !plainAttr(e.Subject) || !plainAttr(e.CauseID) || !plainAttr(ts) {
		return Event{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return Event{}, false
	}
	e.Time, e.Data = t, data
	if e.Validate() != nil {
		return Event{}, false
	}
	return e, true
}

// scratch is an addressable payload of a plan's type.
type scratch struct{ v reflect.Value }

// readData reads the data object of pl's type, each member checked against
// its rule.
func (pl *plan) readData(p *scanner) (Payload, bool) {
	sc, _ := pl.scratch.Get().(*scratch)
	if sc == nil {
		sc = &scratch{reflect.New(pl.rt).Elem()}
	}
	pay, ok := pl.fill(sc.v, p)
	sc.v.SetZero() // drop what points into the body before reuse
	pl.scratch.Put(sc)
	return pay, ok
}

// fill reads the data object into v.
//
// Longer than 80 lines: the hot path of decoding (docs/bench): one loop
// over the object's members with a case per field kind, kept inline for
// speed.
func (pl *plan) fill(v reflect.Value, p *scanner) (Payload, bool) {
	if !p.byte('{') {
		return nil, false
	}
	var seen uint64
	for n := 0; ; n++ {
		if n > 0 {
			if p.byte('}') {
				break
			}
			if !p.byte(',') {
				return nil, false
			}
		} else if p.byte('}') {
			break
		}
		key, ok := p.key()
		if !ok {
			return nil, false
		}
		i := 0
		for i < len(pl.fields) && pl.fields[i].name != key {
			i++
		}
		if i == len(pl.fields) || seen&(1<<i) != 0 {
			return nil, false
		}
		seen |= 1 << i
		f := &pl.fields[i]
		fv := v.Field(f.index)
		switch f.kind {
		case kindString:
			s, ok := p.str()
			if !ok || !f.rule.String(s) {
				return nil, false
			}
			fv.SetString(s)
		case kindInt:
			n, ok := p.int()
			if !ok || !f.rule.Integer(float64(n)) || fv.OverflowInt(n) {
				return nil, false
			}
			fv.SetInt(n)
		case kindUint:
			n, ok := p.uint()
			if !ok || !f.rule.Integer(float64(n)) {
				return nil, false
			}
			fv.SetUint(n)
		case kindBool:
			b, ok := p.bool()
			if !ok || !f.rule.Bool() {
				return nil, false
			}
			fv.SetBool(b)
		case kindTime:
			start := p.i
			s, ok := p.str()
			if !ok || p.i-start != len(s)+2 || !f.rule.String(s) { // no escapes: the quoted text is what UnmarshalJSON reads
				return nil, false
			}
			var t time.Time
			if t.UnmarshalJSON([]byte(p.s[start:p.i])) != nil {
				return nil, false
			}
			*(*time.Time)(fv.Addr().UnsafePointer()) = t // fv.Set would box t
		case kindStrings:
			ss, ok := p.strings()
			if !ok || !f.rule.Items(len(ss)) || !allItems(f.rule, ss) {
				return nil, false
			}
			*(*[]string)(fv.Addr().UnsafePointer()) = ss // fv.Set would box ss
		}
	}
	for i := range pl.fields {
		if pl.fields[i].required && seen&(1<<i) == 0 {
			return nil, false
		}
	}
	return v.Interface().(Payload), true
}

func allItems(r schemas.Field, ss []string) bool {
	for _, s := range ss {
		if !r.Item(s) {
			return false
		}
	}
	return true
}

// scanner reads the JSON subset the fast path accepts. Strings without
// escapes are substrings of s, so reading an event copies its body once.
type scanner struct {
	s string
	i int
}

func (p *scanner) space() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// byte consumes c after optional space.
func (p *scanner) byte(c byte) bool {
	p.space()
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

// key reads a member name without escapes and the colon after it.
func (p *scanner) key() (string, bool) {
	if !p.byte('"') {
		return "", false
	}
	start := p.i
	for p.i < len(p.s) {
		c := p.s[p.i]
		if c == '"' {
			k := p.s[start:p.i]
			p.i++
			return k, p.byte(':')
		}
		if c == '\\' || c < 0x20 {
			return "", false
		}
		p.i++
	}
	return "", false
}

// plainByte marks the bytes a string holds as they are: not '"', '\\' or a
// control character.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str reads a string. It declines control characters (invalid JSON) and
// \u escapes of surrogates (decoders differ on lone ones).
func (p *scanner) str() (string, bool) {
	if !p.byte('"') {
		return "", false
	}
	start := p.i
	for p.i < len(p.s) && plainByte[p.s[p.i]] {
		p.i++
	}
	if p.i < len(p.s) {
		switch p.s[p.i] {
		case '"':
			s := p.s[start:p.i]
			p.i++
			return s, true
		case '\\':
			return p.escaped(start)
		}
	}
	return "", false
}

// escaped finishes a string with escapes that began at start.
func (p *scanner) escaped(start int) (string, bool) {
	b := make([]byte, 0, p.i-start+16)
	b = append(b, p.s[start:p.i]...)
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return string(b), true
		case c < 0x20:
			return "", false
		case c != '\\':
			b = append(b, c)
			p.i++
			continue
		}
		if p.i+1 >= len(p.s) {
			return "", false
		}
		switch e := p.s[p.i+1]; e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			if p.i+6 > len(p.s) {
				return "", false
			}
			r, err := strconv.ParseUint(p.s[p.i+2:p.i+6], 16, 32)
			if err != nil || (r >= 0xD800 && r <= 0xDFFF) {
				return "", false
			}
			b = utf8.AppendRune(b, rune(r))
			p.i += 6
			continue
		default:
			return "", false
		}
		p.i += 2
	}
	return "", false
}

// digits reads a whole number's digits: no sign, no leading zero, at most
// 19 of them so that it fits in a uint64.
func (p *scanner) digits() (uint64, bool) {
	p.space()
	start := p.i
	var n uint64
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		n = n*10 + uint64(p.s[p.i]-'0')
		p.i++
	}
	d := p.i - start
	if d == 0 || d > 19 || (d > 1 && p.s[start] == '0') {
		return 0, false
	}
	if p.i < len(p.s) {
		if c := p.s[p.i]; c == '.' || c == 'e' || c == 'E' {
			return 0, false
		}
	}
	return n, true
}

func (p *scanner) uint() (uint64, bool) { return p.digits() }

func (p *scanner) int() (int64, bool) {
	p.space()
	neg := p.i < len(p.s) && p.s[p.i] == '-'
	if neg {
		p.i++
		if p.i < len(p.s) && p.s[p.i] == '0' {
			return 0, false // -0: decoders differ
		}
	}
	n, ok := p.digits()
	if !ok || n > 1<<63-1 {
		return 0, false
	}
	if neg {
		return -int64(n), true
	}
	return int64(n), true
}

func (p *scanner) bool() (bool, bool) {
	p.space()
	switch {
	case strings.HasPrefix(p.s[p.i:], "true"):
		p.i += 4
		return true, true
	case strings.HasPrefix(p.s[p.i:], "false"):
		p.i += 5
		return false, true
	}
	return false, false
}

// strings reads an array of strings.
func (p *scanner) strings() ([]string, bool) {
	if !p.byte('[') {
		return nil, false
	}
	if p.byte(']') {
		return []string{}, true
	}
	var buf [16]string
	out := buf[:0]
	for {
		s, ok := p.str()
		if !ok {
			return nil, false
		}
		out = append(out, s)
		if p.byte(']') {
			return slices.Clone(out), true
		}
		if !p.byte(',') {
			return nil, false
		}
	}
}
