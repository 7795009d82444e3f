package failover_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/vmguard/vmguard/config"
	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/examples"
	"github.com/vmguard/vmguard/failover"
	"github.com/vmguard/vmguard/internal/termtext"
)

// fuzzEvent builds an event of the catalog type picked by typ whose string
// fields hold a and b in turn, numbers n, lists [a, b], source src and
// cause a: whatever a guest or a forger could make a writer store.
func fuzzEvent(typ uint8, a, b, src string, n uint32) events.Event {
	payloads := samplePayloadTypes()
	p := payloads[int(typ)%len(payloads)]
	t := p.EventType()
	v := reflect.New(reflect.TypeOf(p)).Elem()
	k := 0
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString([]string{a, b}[k%2])
			k++
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(n))
		case reflect.Uint64, reflect.Uint32:
			f.SetUint(uint64(n))
		case reflect.Bool:
			f.SetBool(n%2 == 0)
		case reflect.Slice:
			if f.Type().Elem().Kind() == reflect.String {
				f.Set(reflect.ValueOf([]string{a, b}))
			}
		}
	}
	subject := "web"
	switch sc, _ := events.ScopeOf(t); sc {
	case events.ScopeNode:
		subject = "node1"
	case events.ScopeCluster:
		subject = "demo"
	}
	e := events.Stamp(events.Event{Source: src, Subject: subject, CauseID: a, Data: v.Interface().(events.Payload)},
		time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	return e
}

// samplePayloadTypes returns a zero payload of every catalog type.
func samplePayloadTypes() []events.Payload {
	return []events.Payload{
		events.ConfigApplied{}, events.NodeJoined{}, events.NodeLost{}, events.NodeHalted{}, events.NodeFenced{}, events.NodeTakenOver{}, events.NodeLeaseTaken{}, events.NodeDrained{}, events.NodeResumed{}, events.NodeFrozen{}, events.NodeThawed{},
		events.PackagePlaced{}, events.PackageStarting{}, events.PackageStarted{}, events.PackageHalting{},
		events.PackageHalted{}, events.PackageFailed{}, events.PackageSwitchingChanged{}, events.PackageReset{}, events.PackageChecked{},
		events.GuestStarted{}, events.GuestLost{}, events.GuestStopped{}, events.ServiceRestarting{},
		events.ServiceFailed{}, events.ProcessStarted{}, events.ProcessExited{},
	}
}

// checkPrintable fails t unless out is valid UTF-8 holding nothing a
// terminal acts on but newlines.
func checkPrintable(t *testing.T, what string, out []byte) {
	t.Helper()
	if !utf8.Valid(out) {
		t.Fatalf("%s: not valid UTF-8: %q", what, out)
	}
	for _, r := range string(out) {
		if r != '\n' && r != ' ' && !unicode.IsPrint(r) {
			t.Fatalf("%s: holds %U: %q", what, r, out)
		}
	}
}

// FuzzFormat: whatever text events carry, `vmguard events`, `status` (text
// and JSON) and `explain` print only printable UTF-8 and newlines, and the
// JSON stays JSON.
func FuzzFormat(f *testing.F) {
	f.Add(uint8(11), "start: \x1b[2J\x1b]0;pwned\x07", "bad \xff\xfe utf8", "/vmguard/nodes/node1/host", uint32(1))
	f.Add(uint8(6), "node1", "failover \u202eevil", "/x\u009b31m", uint32(2))
	f.Add(uint8(20), "req-1", "line\nbreak", "/vmguard/guests/webvm/agent", uint32(0))
	cl, err := config.Parse(examples.DemoName, examples.Demo)
	if err != nil {
		f.Fatal(err)
	}
	body, err := cl.JSON()
	if err != nil {
		f.Fatal(err)
	}
	hash, _ := cl.Hash()
	applied := events.New("/vmguard/cli/t", "demo", events.ConfigApplied{Config: body, Hash: hash})
	applied.Seq = 1
	placed := events.New("/vmguard/failover", "web", events.PackagePlaced{Node: "node1", Epoch: 1, Reason: "initial"})
	placed.Seq = 2
	f.Fuzz(func(t *testing.T, typ uint8, a, b, src string, n uint32) {
		e := fuzzEvent(typ, a, b, src, n)
		e.Seq = 3
		if e.CauseID == "" {
			e.CauseID = placed.ID
		}
		evs := []events.Event{applied, placed, e}
		checkPrintable(t, "events", []byte(e.Line()))
		s := failover.Fold(evs)
		v := failover.BuildView(s)
		for _, verbose := range []bool{false, true} {
			var out bytes.Buffer
			if err := v.WriteText(&out, verbose); err != nil {
				t.Fatal(err)
			}
			checkPrintable(t, "status", out.Bytes())
		}
		js, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		js = termtext.JSON(js)
		checkPrintable(t, "status -o json", js)
		if !json.Valid(js) {
			t.Fatalf("status -o json: not JSON: %s", js)
		}
		var out bytes.Buffer
		if err := failover.WriteChain(&out, failover.Explain(evs, "web")); err != nil {
			t.Fatal(err)
		}
		checkPrintable(t, "explain", out.Bytes())
		if strings.Count(out.String(), "\n") > len(evs)+2 {
			t.Fatalf("explain: more lines than events: %q", out.String())
		}
	})
}
