package events_test

import (
	"strings"
	"testing"

	"github.com/vmguard/vmguard/events"
)

// TestSummaryRestartsLeft: unlimited restarts read "unlimited", not -1; a
// last restart still shows 0.
func TestSummaryRestartsLeft(t *testing.T) {
	for _, tc := range []struct {
		left int
		want string
	}{
		{-1, "restarts_left=unlimited"},
		{0, "restarts_left=0"},
		{2, "restarts_left=2"},
	} {
		e := events.New("/test", "web", events.ServiceRestarting{Service: "httpd", Node: "node1", Epoch: 1, Attempt: 1, RestartsLeft: tc.left})
		if got := e.Summary(); !strings.Contains(got, tc.want) {
			t.Errorf("restarts_left %d: summary %q, want %q", tc.left, got, tc.want)
		}
	}
}
