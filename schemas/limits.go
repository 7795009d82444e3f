package schemas

// MaxLength returns the maxLength the schema of typ sets on its top-level
// data field, and false if the type has no schema, no such field, or no
// limit on it. Code that builds event text cuts it to this limit; its
// tests use MaxLength to prove their constants match the schemas.
func (v *Validator) MaxLength(typ, field string) (int, bool) {
	r, ok := v.fast[typ]
	if !ok || r.properties == nil {
		return 0, false
	}
	f, ok := r.properties[field]
	if !ok || f.maxLength < 0 {
		return 0, false
	}
	return f.maxLength, true
}
