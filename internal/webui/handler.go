package webui

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"strconv"
	"time"

	"github.com/vmguard/vmguard/events"
)

//go:embed assets
var assets embed.FS

// Handler serves the page and its API:
//
//	GET /                    the page (index.html, app.js, app.css)
//	GET /api/status[?at=SEQ] the cluster now, or at a past sequence
//	GET /api/events?package=&node=&type=&limit=  the latest matching events
//	GET /api/explain?package=P  the chain of causes behind P's state
//	GET /api/stream[?after=SEQ] server-sent events "ev": each event after SEQ (or
//	                         Last-Event-ID), then each new one as it is read
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	files := http.FileServerFS(static)
	mux.Handle("GET /", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	}))
	mux.HandleFunc("GET /api/status", c.serveStatus)
	mux.HandleFunc("GET /api/events", c.serveEvents)
	mux.HandleFunc("GET /api/explain", c.serveExplain)
	mux.HandleFunc("GET /api/stream", c.serveStream)
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		http.Error(w, "encode: "+err.Error(), http.StatusInternalServerError)
	}
}

func (c *Console) serveStatus(w http.ResponseWriter, r *http.Request) {
	var at uint64
	if s := r.URL.Query().Get("at"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n == 0 {
			http.Error(w, fmt.Sprintf("at: %q is not a sequence number (1 or more)", s), http.StatusBadRequest)
			return
		}
		at = n
	}
	st, err := c.status(r.Context(), at)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, st)
}

func (c *Console) serveEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := Filter{Package: q.Get("package"), Node: q.Get("node"), Type: q.Get("type")}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 100_000 {
			http.Error(w, fmt.Sprintf("limit: %q, want 1 to 100000", s), http.StatusBadRequest)
			return
		}
		f.Limit = n
	}
	evs := c.timeline(f)
	if evs == nil {
		evs = []Event{}
	}
	writeJSON(w, evs)
}

func (c *Console) serveExplain(w http.ResponseWriter, r *http.Request) {
	pkg := r.URL.Query().Get("package")
	if err := events.CheckName("package", pkg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	chain := c.explain(pkg)
	if chain == nil {
		chain = []Event{}
	}
	writeJSON(w, chain)
}

// streamPing keeps idle event streams (and proxies between) open.
const streamPing = 15 * time.Second

func (c *Console) serveStream(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	var after uint64
	for _, s := range []string{r.Header.Get("Last-Event-ID"), r.URL.Query().Get("after")} {
		if n, err := strconv.ParseUint(s, 10, 64); err == nil {
			after = max(after, n)
		}
	}
	backlog, ch := c.subscribe(after)
	defer c.unsubscribe(ch)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	send := func(e Event) bool {
		b, err := json.Marshal(e)
		if err != nil {
			return false
		}
		_, err = fmt.Fprintf(w, "id: %d\nevent: ev\ndata: %s\n\n", e.Seq, b)
		return err == nil
	}
	fmt.Fprint(w, "retry: 1000\n\n")
	for _, e := range backlog {
		if !send(e) {
			return
		}
	}
	fl.Flush()
	ping := time.NewTicker(streamPing)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case e, ok := <-ch:
			if !ok {
				return // too slow: the browser reconnects with Last-Event-ID
			}
			if !send(e) {
				return
			}
			// Send what else is waiting in one write.
			for n := len(ch); n > 0; n-- {
				if e, ok = <-ch; !ok || !send(e) {
					return
				}
			}
			fl.Flush()
		case <-ping.C:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil {
				return
			}
			fl.Flush()
		}
	}
}
