package events

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the CPU time the process used so far (user and system, every
// thread: the garbage collector's work counts).
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loop runs f b.N times and reports, beside the wall time, the CPU time an
// operation took: on a machine shared with other work the wall time
// measures the share of the CPU the benchmark got, the CPU time what the
// operation costs.
func loop(b *testing.B, f func()) {
	b.ReportAllocs()
	c0 := cpuTime(b)
	n := 0
	for b.Loop() {
		f()
		n++
	}
	b.ReportMetric(float64(cpuTime(b)-c0)/float64(n), "cpu-ns/op")
}

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
		loop(b, func() {
			if _, ok := c.encodeFast(e); !ok {
				b.Fatal("fast path declined")
			}
		})
	})
	b.Run("encode/sdk-go", func(b *testing.B) {
		loop(b, func() {
			if _, err := c.encodeSDK(e); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("decode/fast", func(b *testing.B) {
		loop(b, func() {
			if _, err := c.decodeStored(m.Subject, m.Header, m.Data, true); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("decode/sdk-go", func(b *testing.B) {
		loop(b, func() {
			if _, err := c.decodeSDK(m.Header, m.Data); err != nil {
				b.Fatal(err)
			}
		})
	})
}
