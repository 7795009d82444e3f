// Package termtext makes text that came from outside (a guest's process
// output, an exit reason, an event's source) safe to print for a human: a
// terminal must never receive a control sequence it would act on. It owns
// only that escaping; it must not cut, quote or otherwise change text that
// is already printable.
package termtext

import (
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Escape returns s with every rune a terminal could act on written as a
// Go-style escape, and printable UTF-8 (letters of any script, symbols,
// punctuation, the ASCII space) kept as is: control characters become \t,
// \n, \r or \xNN (ESC is \x1b, DEL \x7f), other unprintable runes (C1
// controls, format characters such as bidi overrides, line and paragraph
// separators) \uNNNN or \UNNNNNNNN, and each byte that is not valid UTF-8
// \xNN. Backslashes are kept, so Escape is idempotent and text escaped once
// is not escaped again by another layer; the result is for reading, not for
// parsing back.
func Escape(s string) string {
	i := firstUnsafe(s)
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			writeHex(&b, `\x`, uint32(s[i]), 2)
		case safe(r):
			b.WriteString(s[i : i+n])
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < utf8.RuneSelf:
			writeHex(&b, `\x`, uint32(r), 2)
		case r <= 0xFFFF:
			writeHex(&b, `\u`, uint32(r), 4)
		default:
			writeHex(&b, `\U`, uint32(r), 8)
		}
		i += n
	}
	return b.String()
}

// JSON returns the JSON text b with each rune a terminal could act on that
// encoders leave as is (DEL, C1 controls, format characters such as bidi
// overrides; other ASCII controls than white space, too) written as a \u
// escape, and each byte that is not valid UTF-8
// as \ufffd: the same JSON value, safe to print. Outside strings JSON holds
// only ASCII punctuation, digits, letters and white space, which it keeps.
func JSON(b []byte) []byte {
	i := firstUnsafeJSON(b)
	if i < 0 {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	out = append(out, b[:i]...)
	for i < len(b) {
		c := b[i]
		if c < utf8.RuneSelf && !jsonControl(c) {
			out = append(out, c)
			i++
			continue
		}
		if jsonControl(c) {
			out = appendU(out, rune(c))
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			out = append(out, `\ufffd`...)
		case safe(r):
			out = append(out, b[i:i+n]...)
		case r > 0xFFFF:
			r1, r2 := utf16.EncodeRune(r)
			out = appendU(appendU(out, r1), r2)
		default:
			out = appendU(out, r)
		}
		i += n
	}
	return out
}

func firstUnsafeJSON(b []byte) int {
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if jsonControl(c) {
				return i
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if (r == utf8.RuneError && n == 1) || !safe(r) {
			return i
		}
		i += n
	}
	return -1
}

// jsonControl reports whether c is an ASCII control character other than
// the white space JSON allows between tokens (valid JSON has none of them
// raw, but text that claims to be JSON might).
func jsonControl(c byte) bool {
	return (c < ' ' && c != '\t' && c != '\n' && c != '\r') || c == 0x7f
}

func appendU(out []byte, r rune) []byte {
	const hex = "0123456789abcdef"
	return append(out, '\\', 'u', hex[r>>12&0xF], hex[r>>8&0xF], hex[r>>4&0xF], hex[r&0xF])
}

// Safe reports whether s prints as itself: Escape(s) == s.
func Safe(s string) bool { return firstUnsafe(s) < 0 }

// firstUnsafe returns the index of the first byte of s that Escape changes,
// or -1.
func firstUnsafe(s string) int {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < ' ' || c == 0x7f {
				return i
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && n == 1) || !safe(r) {
			return i
		}
		i += n
	}
	return -1
}

// safe reports whether r prints as itself.
func safe(r rune) bool { return r == ' ' || unicode.IsPrint(r) }

func writeHex(b *strings.Builder, prefix string, v uint32, digits int) {
	const hex = "0123456789abcdef"
	b.WriteString(prefix)
	for shift := (digits - 1) * 4; shift >= 0; shift -= 4 {
		b.WriteByte(hex[v>>uint(shift)&0xF])
	}
}
