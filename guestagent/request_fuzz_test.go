package guestagent

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
)

// FuzzParseRequest feeds the same body to the run, stop and list request
// parsers the agent's handlers use. None may panic; a refusal is a bad
// request (or too large); an accepted request is accepted again after a
// JSON round trip, and an accepted run's process.started event passes its
// schema, so that the agent can always record what it agreed to run.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"package":"web","service":"httpd","argv":["/usr/sbin/httpd","-DFOREGROUND"],"env":{"K":"V"},"dir":"/srv","request_id":"0190/httpd","cause_id":"0190","epoch":3,"halt_timeout":"10s"}`,
		`{"request_id":"0190"}`,
		`{"package":"web","service":"httpd","halt_timeout":"5s"}`,
		`{"package":"web","exited":true}`,
		``,
		`{"package":"web","PACKAGE":"db","service":"s","argv":["x"],"request_id":"r"}`,
		`{"package":"web","service":"s","argv":["x"],"request_id":"r\u001b[2J"}`,
		`{"package":"web","service":"s","argv":["x"],"request_id":"r","env":{"VMGUARD_X":"1"}}`,
	} {
		f.Add([]byte(s))
	}
	codec, err := events.NewCodec()
	if err != nil {
		f.Fatal(err)
	}
	refused := func(t *testing.T, what string, data []byte, err error) {
		var re *RemoteError
		if !errors.As(err, &re) || (re.Code != CodeBadRequest && re.Code != CodeTooLarge) {
			t.Fatalf("%s %q: error %v (%T) is not a bad-request reply", what, data, err, err)
		}
		if strings.TrimSpace(re.Message) == "" {
			t.Fatalf("%s %q: empty error message", what, data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if run, err := parseRun(data); err != nil {
			refused(t, "run", data, err)
		} else {
			again, err := parseRun(mustJSON(run))
			if err != nil || !sameRun(run, again) {
				t.Fatalf("run %q: accepted as %+v, but its JSON %s reads as %+v (%v)", data, run, mustJSON(run), again, err)
			}
			e := events.New(Source("guest1"), run.Package, events.ProcessStarted{Guest: "guest1", Service: run.Service, PID: 1, RequestID: run.RequestID, Epoch: run.Epoch})
			e.CauseID = causeOf(run)
			e.Time = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
			if _, err := codec.Encode(e); err != nil {
				t.Fatalf("run %q accepted, but its process.started cannot be recorded: %v", data, err)
			}
		}
		if stop, err := parseStop(data); err != nil {
			refused(t, "stop", data, err)
		} else if again, err := parseStop(mustJSON(stop)); err != nil || again != stop {
			t.Fatalf("stop %q: accepted as %+v, read back as %+v (%v)", data, stop, again, err)
		}
		if list, err := parseList(data); err != nil {
			refused(t, "list", data, err)
		} else if again, err := parseList(mustJSON(list)); err != nil || again != list {
			t.Fatalf("list %q: accepted as %+v, read back as %+v (%v)", data, list, again, err)
		}
	})
}

// sameRun compares run requests, an empty env map being no env.
func sameRun(a, b RunRequest) bool {
	if len(a.Env) == 0 && len(b.Env) == 0 {
		a.Env, b.Env = nil, nil
	}
	return reflect.DeepEqual(a, b)
}
