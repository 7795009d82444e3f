package events_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/schemas"
)

func TestClip(t *testing.T) {
	long := strings.Repeat("x", 4096)
	cases := []struct {
		name string
		in   string
		max  int
		want string // "" : only check the rules
	}{
		{"fits", "exit status 1", 20, "exit status 1"},
		{"exactly", "abcde", 5, "abcde"},
		{"zero", "abc", 0, ""},
		{"invalid utf-8 fixed", "a\xffb", 10, "a\uFFFDb"},
		{"4 KB", "start: " + long + " :end", 100, ""},
		{"1 MB", strings.Repeat("é", 1<<19), events.MaxReason, ""},
		{"invalid and long", strings.Repeat("a\xff", 3000), events.MaxReason, ""},
		{"escapes", strings.Repeat("\x1b[31mred\x1b[0m", 500), 200, ""},
		{"tiny max", long, 5, "xxxxx"},
		{"multibyte at the cut", strings.Repeat("日本語", 1000), 50, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := events.Clip(c.in, c.max)
			if !utf8.ValidString(got) {
				t.Fatalf("not valid UTF-8: %q", got)
			}
			if n := utf8.RuneCountInString(got); n > c.max {
				t.Fatalf("%d characters, max %d", n, c.max)
			}
			if c.want != "" && got != c.want {
				t.Fatalf("got %q, want %q", got, c.want)
			}
			if valid := strings.ToValidUTF8(c.in, "\uFFFD"); utf8.RuneCountInString(valid) > c.max && c.max >= 30 {
				if !strings.Contains(got, "…(cut ") || !strings.Contains(got, " bytes)…") {
					t.Fatalf("cut without saying so: %q", got)
				}
				r := []rune(valid)
				if !strings.HasPrefix(got, string(r[:5])) || !strings.HasSuffix(got, string(r[len(r)-3:])) {
					t.Fatalf("start or end lost: %q", got)
				}
			}
		})
	}
}

// The limits events code cuts to are the schemas' own.
func TestClipLimitsMatchSchemas(t *testing.T) {
	v, err := schemas.New()
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]int{"reason": events.MaxReason, "by": events.MaxBy, "request_id": events.MaxRequestID}
	seen := map[string]int{}
	for _, typ := range v.Types() {
		for f, want := range fields {
			got, ok := v.MaxLength(typ, f)
			if !ok {
				continue
			}
			seen[f]++
			if got != want {
				t.Errorf("%s.%s: schema maxLength %d, events constant %d", typ, f, got, want)
			}
		}
	}
	for f := range fields {
		if seen[f] == 0 {
			t.Errorf("no schema limits field %q: constant unused?", f)
		}
	}
}
