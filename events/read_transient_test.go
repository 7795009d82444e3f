package events

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestTransient: errors the cluster cures by itself are retried; a request
// the server refuses for good is not.
func TestTransient(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{context.DeadlineExceeded, true},
		{fmt.Errorf("create: %w", &jetstream.APIError{Code: 503, ErrorCode: 10008}), true},
		{&jetstream.APIError{Code: 500, ErrorCode: 10009}, true},
		{&jetstream.APIError{Code: 503}, true},
		{&jetstream.APIError{Code: 404, ErrorCode: 10059}, false}, // stream not found
		{fmt.Errorf("x: %w", &jetstream.APIError{Code: 400, ErrorCode: 10012}), false},
	} {
		if got := Transient(c.err); got != c.want {
			t.Errorf("Transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
