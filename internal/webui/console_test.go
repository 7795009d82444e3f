package webui

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vmguard/vmguard/events"
	"github.com/vmguard/vmguard/events/eventstest"
	"github.com/vmguard/vmguard/internal/natsd"
)

// console runs a Console on a fresh log with n node.joined events and
// serves it; it returns the log, the server's URL and the events.
func console(t *testing.T, n int) (*events.Log, string, []events.Event) {
	t.Helper()
	srv := natsd.StartTest(t)
	l, err := events.Open(context.Background(), natsd.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	var evs []events.Event
	for i := range n {
		evs = append(evs, appendJoin(t, l, i))
	}
	c, err := New(Config{Log: l})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	hs := httptest.NewServer(c.Handler())
	t.Cleanup(hs.Close)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var st Status
		getJSON(t, hs.URL+"/api/status", &st)
		if st.CaughtUp && st.Last == evs[len(evs)-1].Seq {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("console did not catch up: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return l, hs.URL, evs
}

func appendJoin(t *testing.T, l *events.Log, i int) events.Event {
	t.Helper()
	e := eventstest.New(fmt.Sprintf("node%d", i), events.NodeJoined{Version: "1.0.0"})
	seq, err := l.Append(context.Background(), e)
	if err != nil {
		t.Fatal(err)
	}
	e.Seq = seq
	return e
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK && v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
	}
	return resp.StatusCode
}

// TestStatusAndTimeTravel: the latest status, a past one, and a refused at.
func TestStatusAndTimeTravel(t *testing.T) {
	_, url, evs := console(t, 5)
	var st Status
	getJSON(t, url+"/api/status", &st)
	if !st.Live || st.Seq != evs[4].Seq || len(st.View.Nodes) != 5 {
		t.Errorf("latest: live %v seq %d nodes %d, want live at %d with 5 nodes", st.Live, st.Seq, len(st.View.Nodes), evs[4].Seq)
	}
	getJSON(t, fmt.Sprintf("%s/api/status?at=%d", url, evs[1].Seq), &st)
	if st.Live || st.Seq != evs[1].Seq || len(st.View.Nodes) != 2 {
		t.Errorf("at %d: live %v seq %d nodes %d, want 2 nodes", evs[1].Seq, st.Live, st.Seq, len(st.View.Nodes))
	}
	for _, bad := range []string{"0", "x", "-1"} {
		if code := getJSON(t, url+"/api/status?at="+bad, nil); code != http.StatusBadRequest {
			t.Errorf("at=%s: status %d, want 400", bad, code)
		}
	}
	var list []Event
	getJSON(t, url+"/api/events?node=node3", &list)
	if len(list) != 1 || list[0].Node != "node3" || list[0].Type != "node.joined" {
		t.Errorf("events of node3: %+v", list)
	}
	getJSON(t, url+"/api/events?limit=2", &list)
	if len(list) != 2 || list[1].Seq != evs[4].Seq {
		t.Errorf("limit 2: %+v, want the two latest, oldest first", list)
	}
}

// TestStreamResumes: the stream sends what follows ?after= (or
// Last-Event-ID), then new events as they are written, each with its
// sequence as the SSE id.
func TestStreamResumes(t *testing.T) {
	l, url, evs := console(t, 3)
	req, err := http.NewRequest("GET", url+"/api/stream?after=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Last-Event-ID", fmt.Sprint(evs[1].Seq)) // the later of the two wins
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	next := func() (id string, e Event) {
		t.Helper()
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &e); err != nil {
					t.Fatal(err)
				}
				return id, e
			}
		}
		t.Fatalf("stream ended: %v", sc.Err())
		return "", Event{}
	}
	if id, e := next(); e.Seq != evs[2].Seq || id != fmt.Sprint(evs[2].Seq) {
		t.Errorf("first sent: id %s seq %d, want %d (after Last-Event-ID %d)", id, e.Seq, evs[2].Seq, evs[1].Seq)
	}
	live := appendJoin(t, l, 7)
	if _, e := next(); e.Seq != live.Seq || e.ID != live.ID || e.Node != "node7" {
		t.Errorf("live event: %+v, want seq %d id %s", e, live.Seq, live.ID)
	}
}
