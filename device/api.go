package device

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Handler serves the local API:
//
//	POST /api/ring    press the doorbell (the path a GPIO edge takes)
//	POST /api/hangup  end the current call or ring
//	GET  /api/status  the status document (JSON)
//	GET  /api/events  state changes as server-sent events
//	GET  /healthz     200 while the Matrix sync is healthy, else 503
//	GET  /api/snapshot.jpg  the camera's picture now, as JPEG
//	GET  /api/history  the last visitors (JSON, newest first)
//	GET  /api/history/{id}.jpg  a visitor's snapshot
//
// It checks nobody: serve it wrapped in Guard (apiguard.go), which decides
// who may use it.
func (d *Intercom) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/ring", func(w http.ResponseWriter, r *http.Request) {
		if !d.Press("api") {
			http.Error(w, "too many presses", http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	mux.HandleFunc("POST /api/hangup", func(w http.ResponseWriter, r *http.Request) {
		d.Hangup()
		w.WriteHeader(http.StatusAccepted)
	})
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(d.Status())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if !d.Healthy() {
			http.Error(w, "matrix sync not healthy", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /api/events", d.serveEvents)
	mux.HandleFunc("GET /api/snapshot.jpg", d.serveSnapshot)
	mux.HandleFunc("GET /api/history", d.serveHistory)
	mux.HandleFunc("GET /api/history/{file}", d.serveHistorySnapshot)
	return mux
}

// historyDoc is the document of GET /api/history.
type historyDoc struct {
	Keep     int               `json:"keep"`
	Visitors []historyDocEntry `json:"visitors"`
}

// historyDocEntry is an entry with the address of its snapshot.
type historyDocEntry struct {
	HistoryEntry
	SnapshotURL string `json:"snapshot_url,omitempty"`
}

func (d *Intercom) serveHistory(w http.ResponseWriter, r *http.Request) {
	doc := historyDoc{Visitors: []historyDocEntry{}}
	if h := d.cfg.History; h != nil {
		doc.Keep = h.keep
		for _, e := range h.List() {
			de := historyDocEntry{HistoryEntry: e}
			if e.Snapshot {
				de.SnapshotURL = "/api/history/" + e.ID + ".jpg"
			}
			doc.Visitors = append(doc.Visitors, de)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(doc)
}

func (d *Intercom) serveHistorySnapshot(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutSuffix(r.PathValue("file"), ".jpg")
	if !ok || d.cfg.History == nil {
		http.NotFound(w, r)
		return
	}
	jpg, err := d.cfg.History.JPEG(id)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "image/jpeg")
	// A visitor's picture never changes under its ID.
	w.Header().Set("Cache-Control", "private, max-age=86400, immutable")
	w.Header().Set("Content-Length", strconv.Itoa(len(jpg)))
	_, _ = w.Write(jpg)
}

func (d *Intercom) serveEvents(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ch, unsubscribe := d.events.subscribe()
	defer unsubscribe()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	// The current status first, so a new reader needs no second request.
	first, _ := json.Marshal(Event{Kind: "status", Time: time.Now(), Data: d.Status()})
	fmt.Fprintf(w, "event: status\ndata: %s\n\n", first)
	flusher.Flush()
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case raw := <-ch:
			var ev struct{ Kind string }
			_ = json.Unmarshal(raw, &ev)
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.Kind, raw)
			flusher.Flush()
		case <-keepalive.C:
			fmt.Fprint(w, ": keepalive\n\n")
			flusher.Flush()
		}
	}
}

// serveSnapshot answers with the camera's next picture as a JPEG, taken for
// this request (the camera is opened for it when no call is running).
func (d *Intercom) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	if d.cfg.Snapshot == nil {
		http.Error(w, "no camera", http.StatusNotFound)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	jpg, err := d.cfg.Snapshot.Snapshot(ctx)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "image/jpeg")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(jpg)))
	_, _ = w.Write(jpg)
}
