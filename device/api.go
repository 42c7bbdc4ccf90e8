package device

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
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
	return mux
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
