package events

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/vmguard/vmguard/internal/natsd"
)

// TestLargeEventKeepsNoBody: a reader that keeps only the ID and the hash
// of an event decoded from a large body (a configuration of thousands of
// packages) does not keep the body, nor the decoder's copy of it, alive.
// What the kept strings hold is the live heap with them less the live heap
// once they are dropped, each after two collections (the second empties
// sync.Pools' victim caches): 4 bodies of 16 MB if they pin them, about
// nothing if not, whatever else the process holds meanwhile.
func TestLargeEventKeepsNoBody(t *testing.T) {
	c, err := NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	const pad = 16 << 20
	cfg, err := json.Marshal(map[string]string{"cluster": "test", "pad": strings.Repeat("x", pad)})
	if err != nil {
		t.Fatal(err)
	}
	in := New("/vmguard/cli/ops", "test", ConfigApplied{Config: cfg, Hash: "h1", File: "cluster.yaml", By: "ops"})
	m, err := c.Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	cfg, in.Data = nil, nil
	var kept []string
	for range 4 {
		e, err := c.decodeStored(m.Subject, m.Header, m.Data, true)
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, e.ID, e.Data.(ConfigApplied).Hash)
	}
	m = nil
	live := func() int64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc)
	}
	with := live()
	if kept[0] != in.ID || kept[1] != "h1" {
		t.Errorf("kept %q, want %q and h1", kept[:2], in.ID)
	}
	runtime.KeepAlive(kept)
	kept = nil
	if held := with - live(); held > pad {
		t.Errorf("4 decoded events' IDs and hashes held %.1f MB (a body is %d MB): they keep the bodies", float64(held)/(1<<20), pad>>20)
	}
}

// TestLargeEventDecodedOnceForALog: readers that share a Log (host
// managers of one process on one connection) are handed one decode of
// the same large event, not one each.
func TestLargeEventDecodedOnceForALog(t *testing.T) {
	ctx := context.Background()
	s := natsd.StartTest(t)
	l, err := Open(ctx, natsd.Connect(t, s))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := json.Marshal(map[string]string{"cluster": "test", "pad": strings.Repeat("x", 2*detachAbove)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, New("/vmguard/cli/ops", "test", ConfigApplied{Config: cfg, Hash: "h1"})); err != nil {
		t.Fatal(err)
	}
	var got []ConfigApplied
	for range 2 {
		if _, err := l.Replay(ctx, ReadOptions{}, func(e Event) error {
			got = append(got, e.Data.(ConfigApplied))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 2 || !bytes.Equal(got[0].Config, cfg) || !bytes.Equal(got[1].Config, cfg) {
		t.Fatalf("read %d configurations, want the one appended twice", len(got))
	}
	if unsafe.SliceData(got[0].Config) != unsafe.SliceData(got[1].Config) {
		t.Error("the second read decoded the event again")
	}
}
