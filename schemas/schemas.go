// Package schemas owns the JSON Schemas of vmguard's event data, one file per
// event type and version, embedded in the binary, and the Validator that
// checks event data against them.
//
// Evolution: a new optional field may be added to an existing version (the
// schemas allow unknown properties, so older readers ignore it); removing a
// field, making one required or changing its meaning or type needs a new
// version (io.vmguard.<entity>.<verb>.v2, a new file), and readers then accept
// both versions.
package schemas

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

//go:embed *.json
var files embed.FS

// ErrNoSchema is returned for an event type that has no schema.
var ErrNoSchema = errors.New("no schema for event type")

// Validator checks event data against the embedded schemas. It is safe for
// concurrent use.
type Validator struct {
	byType  map[string]*jsonschema.Schema // the reference engine, proves the files are valid JSON Schema
	fast    map[string]*rule              // what Validate uses
	keys    *KeyCheck
	printer *message.Printer
}

// URL returns the dataschema URI of an event type, e.g.
// urn:vmguard:schema:io.vmguard.process.exited.v1.
func URL(typ string) string { return "urn:vmguard:schema:" + typ }

// New compiles every embedded schema.
func New() (*Validator, error) {
	v := &Validator{byType: map[string]*jsonschema.Schema{}, fast: map[string]*rule{}, keys: NewKeyCheck(), printer: message.NewPrinter(language.English)}
	names, err := fs.Glob(files, "*.json")
	if err != nil {
		return nil, fmt.Errorf("list schemas: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	types := make([]string, 0, len(names))
	for _, name := range names {
		b, err := files.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("read schema %s: %w", name, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("parse schema %s: %w", name, err)
		}
		typ := "io.vmguard." + strings.TrimSuffix(name, ".json")
		m, ok := doc.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("schema %s: want an object", name)
		}
		r, err := compileRule(m, "data")
		if err != nil {
			return nil, fmt.Errorf("compile schema %s: %w", name, err)
		}
		v.fast[typ] = r
		if err := c.AddResource(URL(typ), doc); err != nil {
			return nil, fmt.Errorf("add schema %s: %w", name, err)
		}
		types = append(types, typ)
	}
	for _, typ := range types {
		s, err := c.Compile(URL(typ))
		if err != nil {
			return nil, fmt.Errorf("compile schema %s: %w", typ, err)
		}
		v.byType[typ] = s
	}
	return v, nil
}

// Types lists the event types that have a schema.
func (v *Validator) Types() []string {
	out := make([]string, 0, len(v.byType))
	for t := range v.byType {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Validate checks data (JSON) against the schema of typ. The error names the
// offending fields as dotted paths under "data", e.g.
// "data.exit_code: got string, want integer". Unlike a general JSON Schema
// engine it also refuses what would make the typed decode read another
// object than the one checked (ErrAmbiguousKey): two members of an object
// whose names are equal or differ only in case, and a member named like a
// property but for case.
func (v *Validator) Validate(typ string, data []byte) error {
	r, ok := v.fast[typ]
	if !ok {
		return fmt.Errorf("%w: %q", ErrNoSchema, typ)
	}
	inst, err := decodeFor(r, data)
	if err != nil {
		return fmt.Errorf("data: not JSON: %v", err)
	}
	if err := v.keys.Check(data); err != nil {
		return fmt.Errorf("data.%w", err)
	}
	var errs []string
	r.check(inst, "data", "", &errs)
	if len(errs) == 0 {
		return nil
	}
	sort.Strings(errs)
	return errors.New(strings.Join(errs, "; "))
}

// validateReference checks data with the general JSON Schema engine; tests
// use it to prove Validate agrees with it.
func (v *Validator) validateReference(typ string, data []byte) error {
	s, ok := v.byType[typ]
	if !ok {
		return fmt.Errorf("%w: %q", ErrNoSchema, typ)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("data: not JSON: %v", err)
	}
	err = s.Validate(inst)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return fmt.Errorf("data: %w", err)
	}
	var msgs []string
	for _, leaf := range leaves(ve) {
		path := append([]string{"data"}, leaf.InstanceLocation...)
		if r, ok := leaf.ErrorKind.(*kind.Required); ok {
			for _, m := range r.Missing {
				msgs = append(msgs, strings.Join(append(path, m), ".")+": missing")
			}
			continue
		}
		msgs = append(msgs, strings.Join(path, ".")+": "+leaf.ErrorKind.LocalizedString(v.printer))
	}
	sort.Strings(msgs)
	return errors.New(strings.Join(msgs, "; "))
}

func leaves(e *jsonschema.ValidationError) []*jsonschema.ValidationError {
	if len(e.Causes) == 0 {
		return []*jsonschema.ValidationError{e}
	}
	var out []*jsonschema.ValidationError
	for _, c := range e.Causes {
		out = append(out, leaves(c)...)
	}
	return out
}
