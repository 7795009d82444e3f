package termtext

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestEscape(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", ""},
		{"plain text, 100% ok", "plain text, 100% ok"},
		{"grüße 日本語 ✓ émoji 😀", "grüße 日本語 ✓ émoji 😀"},
		{"\x1b[2J\x1b[H", `\x1b[2J\x1b[H`},
		{"a\tb\nc\rd", `a\tb\nc\rd`},
		{"bell\x07 nul\x00 del\x7f", `bell\x07 nul\x00 del\x7f`},
		{"bad\xff\xfe utf8 \xe2\x82", `bad\xff\xfe utf8 \xe2\x82`},
		{"c1 csi \u009b31m", `c1 csi \u009b31m`},
		{"bidi \u202eevil\u202c", `bidi \u202eevil\u202c`},
		{"line\u2028sep nbsp\u00a0", `line\u2028sep nbsp\u00a0`},
		{"tag \U000E0041", `tag \U000e0041`},
		{`keeps \x1b and "quotes"`, `keeps \x1b and "quotes"`},
	}
	for _, c := range cases {
		if got := Escape(c.in); got != c.want {
			t.Errorf("Escape(%q) = %q, want %q", c.in, got, c.want)
		}
		if Safe(c.in) != (c.in == c.want) {
			t.Errorf("Safe(%q) = %v", c.in, Safe(c.in))
		}
	}
}

// FuzzEscape: the result is valid UTF-8 with nothing a terminal acts on,
// escaping it again changes nothing, and printable text is kept as is.
func FuzzEscape(f *testing.F) {
	for _, s := range []string{"ok", "\x1b[2J", "a\xffb", "\u009b", "\u202e", "日本\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Escape(s)
		if !utf8.ValidString(got) {
			t.Fatalf("Escape(%q) = %q: not valid UTF-8", s, got)
		}
		for _, r := range got {
			if r != ' ' && !unicode.IsPrint(r) {
				t.Fatalf("Escape(%q) = %q holds %U", s, got, r)
			}
		}
		if again := Escape(got); again != got {
			t.Fatalf("not idempotent: %q -> %q -> %q", s, got, again)
		}
		if Safe(s) != (got == s) {
			t.Fatalf("Safe(%q) = %v, but Escape gives %q", s, Safe(s), got)
		}
		if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r != ' ' && !unicode.IsPrint(r) }) && got != s {
			t.Fatalf("printable %q changed to %q", s, got)
		}
	})
}

func TestJSON(t *testing.T) {
	in := []byte("{\"a\":\"x\u001b[2J \u009b31m \u202eevil\u007f \U000E0041 \xff ok é\"}")
	got := JSON(in)
	want := `{"a":"x\u001b[2J \u009b31m \u202eevil\u007f \udb40\udc41 \ufffd ok é"}`
	if string(got) != want {
		t.Fatalf("JSON(%q) = %s, want %s", in, got, want)
	}
	if plain := []byte(`{"a":"ok é"}`); &JSON(plain)[0] != &plain[0] {
		t.Error("safe JSON was copied")
	}
}

// FuzzJSON: the result is printable, and the same JSON value.
func FuzzJSON(f *testing.F) {
	for _, s := range []string{`{"a":"\u009b"}`, `["\u202e", 1, null]`, `"x"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var v any
		if json.Unmarshal([]byte(s), &v) != nil {
			return
		}
		b, err := json.Marshal(v)
		if err != nil {
			return
		}
		got := JSON(b)
		for _, r := range string(got) {
			if r != ' ' && !unicode.IsPrint(r) {
				t.Fatalf("JSON(%q) = %q holds %U", b, got, r)
			}
		}
		var v2 any
		if err := json.Unmarshal(got, &v2); err != nil || !reflect.DeepEqual(v, v2) {
			t.Fatalf("JSON(%q) = %q: another value (%v)", b, got, err)
		}
	})
}
