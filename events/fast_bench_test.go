package events

import (
	"fmt"
	"testing"
)

// benchEvent is the event `vmguard bench log` appends: a process.exited
// with three output lines, ~600 bytes stored.
func benchEvent(i int) Event {
	e := New("/vmguard/guests/webvm/agent", "web", ProcessExited{
		Guest: "webvm", Service: "httpd", PID: 1000 + i%30000, ExitCode: i % 4, RuntimeMS: int64(i % 5000),
		RequestID: fmt.Sprintf("req-%d", i), Epoch: 1, Output: []string{"starting", "listening on :8080", "fatal: out of cheese"},
	})
	e.CauseID = fmt.Sprintf("req-%d", i)
	return e
}

// BenchmarkCodec compares the fast path with the sdk-go path on the same
// event, encode and decode (each with its schema check).
func BenchmarkCodec(b *testing.B) {
	c, err := NewCodec()
	if err != nil {
		b.Fatal(err)
	}
	e := benchEvent(7)
	m, err := c.Encode(e)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("encode/fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := c.encodeFast(e); !ok {
				b.Fatal("fast path declined")
			}
		}
	})
	b.Run("encode/sdk-go", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.encodeSDK(e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode/fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := c.decodeFast(m.Header, m.Data, true); !ok {
				b.Fatal("fast path declined")
			}
		}
	})
	b.Run("decode/sdk-go", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.decodeSDK(m.Header, m.Data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
