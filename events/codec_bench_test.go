package events_test

import (
	"testing"

	"github.com/vmguard/vmguard/events"
)

func BenchmarkDecode(b *testing.B) {
	c, err := events.NewCodec()
	if err != nil {
		b.Fatal(err)
	}
	m, err := c.Encode(events.New("/vmguard/guests/webvm/agent", "web", samplePayloads()[events.TypeProcessExited]))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Decode(m.Header, m.Data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	c, err := events.NewCodec()
	if err != nil {
		b.Fatal(err)
	}
	e := events.New("/vmguard/guests/webvm/agent", "web", samplePayloads()[events.TypeProcessExited])
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Encode(e); err != nil {
			b.Fatal(err)
		}
	}
}
