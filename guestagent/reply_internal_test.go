package guestagent

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/vmguard/vmguard/events"
)

// An error reply, sent at once or later from a detached request, carries
// one line of valid UTF-8 within the schemas' reason limit, whatever the
// error's text: it ends up in an event's reason.
func TestErrorReplyFitsAReason(t *testing.T) {
	long := strings.Repeat("é\nx\r", 3000) + "\xff"
	for name, err := range map[string]error{
		"remote": &RemoteError{CodeBadRequest, long},
		"plain":  errors.New(long),
	} {
		code, msg := errorReply(err)
		if name == "remote" && code != CodeBadRequest || name == "plain" && code != CodeInternal {
			t.Errorf("%s: code %q", name, code)
		}
		if n := utf8.RuneCountInString(msg); n > events.MaxReason {
			t.Errorf("%s: %d runes, over %d", name, n, events.MaxReason)
		}
		if !utf8.ValidString(msg) || strings.ContainsAny(msg, "\r\n") {
			t.Errorf("%s: not one line of valid UTF-8: %q", name, msg[:80])
		}
	}
}
