package events

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits of the text fields of event data, as the schemas (schemas/*.json
// maxLength, counted in characters) set them. A test checks that every
// schema field of these names has exactly this limit, so a schema change
// that forgets the code fails there and not on a live append.
const (
	// MaxReason is the maxLength of every "reason" field.
	MaxReason = 1024
	// MaxBy is the maxLength of every "by" field (who asked).
	MaxBy = 256
	// MaxRequestID is the maxLength of process.started/exited request_id.
	MaxRequestID = 128
)

// Clip returns s as valid UTF-8 of at most max characters (runes), the
// unit of a JSON Schema maxLength. Text that fits and is valid is returned
// unchanged. Otherwise invalid bytes become U+FFFD and, if it is still too
// long, the middle is cut and replaced by a marker saying how many bytes
// went, e.g. "…(cut 3072 bytes)…": the start (what failed) and the end
// (usually the last error line) are kept. Every string an event field is
// built from outside text with (driver output, agent replies, exit
// reasons, reasons that wrap another event's reason) goes through Clip
// where it is built. max below the marker's length keeps only the start.
func Clip(s string, max int) string {
	if max <= 0 {
		return ""
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	n := utf8.RuneCountInString(s)
	if n <= max {
		return s
	}
	// The marker names the bytes cut; its own length depends on that
	// number, so size it for the whole string (an upper bound).
	marker := func(cut int) string { return "…(cut " + strconv.Itoa(cut) + " bytes)…" }
	room := max - utf8.RuneCountInString(marker(len(s)))
	if room < 2 {
		return string([]rune(s)[:max])
	}
	head := room * 2 / 3
	tail := room - head
	r := []rune(s)
	h, t := string(r[:head]), string(r[len(r)-tail:])
	return h + marker(len(s)-len(h)-len(t)) + t
}
