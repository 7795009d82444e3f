package duration

import (
	"encoding/json"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Duration
		ok   bool
	}{
		{"5s", Duration(5 * time.Second), true},
		{" 10m ", Duration(10 * time.Minute), true},
		{"0", 0, true},
		{"-1s", 0, false},
		{"five", 0, false},
	} {
		got, err := Parse(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("Parse(%q) = %v, %v; want %v, ok %v", c.in, got, err, c.want, c.ok)
		}
	}
}

func TestJSONRoundTrip(t *testing.T) {
	type wrap struct {
		D Duration `json:"d"`
	}
	b, err := json.Marshal(wrap{D: Duration(1500 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"d":"1.5s"}` {
		t.Fatalf("marshal: %s", b)
	}
	var w wrap
	if err := json.Unmarshal(b, &w); err != nil || w.D.D() != 1500*time.Millisecond {
		t.Fatalf("unmarshal: %v %v", w.D, err)
	}
	if err := json.Unmarshal([]byte(`{"d":"-2s"}`), &w); err == nil {
		t.Fatal("a negative duration was accepted")
	}
}
