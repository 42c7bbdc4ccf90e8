// Package whep serves the door's camera and microphone to viewers that
// speak WHEP, the WebRTC-HTTP Egress Protocol (IETF draft-ietf-wish-whep;
// its sibling for ingest, WHIP, is RFC 9725): a client POSTs an SDP offer,
// gets the answer and the URL of its session, and DELETEs that URL when it
// is done. go2rtc, Home Assistant's WebRTC camera, OBS, GStreamer's whepsrc
// and the intercom's own web page consume it.
//
// Every viewer gets the door's already-encoded tracks, the same ones the
// calls send (media.Stream's one encoder per codec; the Peers adapter,
// media/webrtc's AcceptViewer, makes the peer connection): a viewer costs
// packetising and encrypting, never an encode. The number of viewers is
// bounded. Trickle ICE and ICE restarts (PATCH) are not supported: the
// answer carries every candidate, and PATCH gets 405.
//
// The package checks nobody: the API's guard (device.Guard) decides who
// may watch.
package whep

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/internal/runloop"
)

// Path is where the endpoint is served; a session's resource is
// Path + "/" + its ID.
const Path = "/api/whep"

// Defaults of Config.
const (
	DefaultMaxViewers     = 3
	DefaultConnectTimeout = 30 * time.Second
	DefaultRetryAfter     = 10 * time.Second
	// answerTimeout bounds making a viewer's answer, ICE gathering
	// included: host candidates take milliseconds, a TURN allocation
	// (turn servers from the homeserver) a round trip or two.
	answerTimeout = 10 * time.Second
)

// MIME type of offers and answers (RFC 3264 over HTTP, as WHIP and WHEP
// use it).
const sdpType = "application/sdp"

// Peers makes viewers' peer connections: media/webrtc's PeerFactory
// (AcceptViewer). The returned peer sends the door's shared tracks and
// holds the stream's encoders until it is closed; its state changes go to
// sink, which must not block. Offers it cannot answer fail with an error
// wrapping ErrBadOffer.
type Peers interface {
	AcceptViewer(ctx context.Context, offer string, sink func(callengine.PeerEvent)) (callengine.Peer, string, error)
}

// Config configures a Server.
type Config struct {
	Peers Peers
	// MaxViewers bounds the sessions at once (api.whep_max_viewers);
	// default DefaultMaxViewers. Beyond it an offer gets 503 with
	// Retry-After.
	MaxViewers int
	// ConnectTimeout ends a session whose connection has not come up by
	// then (a client that posted and went away); default
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// RetryAfter is the 503's Retry-After; default DefaultRetryAfter.
	RetryAfter time.Duration
	Logger     *slog.Logger
	// AfterFunc is the clock of the connect timeout; default
	// runloop.SystemClock.
	AfterFunc runloop.AfterFunc
}

// Status is the endpoint's part of the status document.
type Status struct {
	Viewers    int    `json:"viewers"`     // sessions now
	MaxViewers int    `json:"max_viewers"` // the limit
	Sessions   uint64 `json:"sessions"`    // sessions created since start
	Refused    uint64 `json:"refused"`     // offers refused at the limit
}

// Server is the WHEP endpoint. Run owns the sessions' lifetimes; the HTTP
// handlers create and delete them.
type Server struct {
	cfg   Config
	log   *slog.Logger
	inbox runloop.Queue[sessionEvent]

	mu       sync.Mutex
	running  bool // between Run's start and its end
	stopped  bool // Run ended: no more sessions
	sessions map[string]*session
	pending  int // slots held by offers being answered
	created  uint64
	refused  uint64
}

// session is one viewer.
type session struct {
	id        string
	peer      callengine.Peer
	timer     runloop.Stopper
	connected atomic.Bool // the connection came up at least once
	ended     atomic.Bool // failed or closed
}

// sessionEvent is what Run's loop handles: a state change of a session's
// connection, or its connect timeout.
type sessionEvent struct {
	s       *session
	state   callengine.PeerState
	timeout bool
}

// New returns a server; it takes sessions once Run runs.
func New(cfg Config) *Server {
	if cfg.MaxViewers <= 0 {
		cfg.MaxViewers = DefaultMaxViewers
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = DefaultRetryAfter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.AfterFunc == nil {
		cfg.AfterFunc = runloop.SystemClock
	}
	return &Server{cfg: cfg, log: cfg.Logger, sessions: map[string]*session{}}
}

// Run ends sessions whose connection failed, closed or never came up,
// until ctx is done; then it closes every session and refuses new ones.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	s.running = true
	s.mu.Unlock()
	defer s.stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.inbox.Wait():
		}
		for _, ev := range s.inbox.Take() {
			s.handle(ev)
		}
	}
}

func (s *Server) handle(ev sessionEvent) {
	switch {
	case ev.timeout && !ev.s.connected.Load():
		s.end(ev.s, "connection never came up")
	case !ev.timeout && (ev.state == callengine.PeerFailed || ev.state == callengine.PeerClosed):
		// Failed: ICE found no path, or consent freshness (RFC 7675)
		// lapsed because the viewer went away without a DELETE, which
		// go2rtc never sends. Closed: the viewer closed DTLS.
		s.end(ev.s, "connection "+ev.state.String())
	}
}

// end removes a session, if it is still there, and closes its peer.
func (s *Server) end(sess *session, why string) {
	s.mu.Lock()
	mine := s.sessions[sess.id] == sess
	if mine {
		delete(s.sessions, sess.id)
	}
	s.mu.Unlock()
	if !mine {
		return // deleted meanwhile
	}
	sess.close()
	s.log.Info("whep viewer left", "session", sess.id, "why", why)
}

func (sess *session) close() {
	if sess.timer != nil {
		sess.timer.Stop()
	}
	// A close error changes nothing: the peer is gone either way and
	// its encoders are released.
	_ = sess.peer.Close()
}

// stop refuses new sessions and closes the current ones.
func (s *Server) stop() {
	s.mu.Lock()
	s.running, s.stopped = false, true
	all := s.sessions
	s.sessions = map[string]*session{}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, sess := range all {
		wg.Go(sess.close)
	}
	wg.Wait()
}

// Status reports the sessions and the limit.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Status{Viewers: len(s.sessions), MaxViewers: s.cfg.MaxViewers, Sessions: s.created, Refused: s.refused}
}

// Handler serves Path (POST an offer, OPTIONS) and the sessions' resources
// under it (DELETE, PATCH refused, OPTIONS). Mount it at Path and Path+"/".
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+Path, s.create)
	mux.HandleFunc("OPTIONS "+Path, func(w http.ResponseWriter, r *http.Request) {
		// No CORS headers: the API answers its own origin only (the
		// guard refuses other origins before this), so a preflight
		// from elsewhere never gets this far.
		w.Header().Set("Allow", "OPTIONS, POST")
		w.Header().Set("Accept-Post", sdpType)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE "+Path+"/{id}", s.delete)
	mux.HandleFunc("PATCH "+Path+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		// Trickle ICE and ICE restarts are not supported (the answer
		// carries every candidate): 405, as the WHEP draft (and WHIP,
		// RFC 9725 section 4.3.1) ask of such a server.
		w.Header().Set("Allow", "DELETE, OPTIONS")
		http.Error(w, "trickle ICE and ICE restarts are not supported: the answer carries every candidate", http.StatusMethodNotAllowed)
	})
	mux.HandleFunc("OPTIONS "+Path+"/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "DELETE, OPTIONS")
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// create answers a viewer's offer: 201 with the answer and the session's
// Location (draft-ietf-wish-whep, section 4.2).
func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != sdpType {
		w.Header().Set("Accept-Post", sdpType)
		http.Error(w, "the offer must be sent as "+sdpType, http.StatusUnsupportedMediaType)
		return
	}
	offer, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxOfferBytes+1))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) || len(offer) > maxOfferBytes {
		http.Error(w, fmt.Sprintf("offer larger than %d bytes", maxOfferBytes), http.StatusRequestEntityTooLarge)
		return
	}
	if err != nil {
		http.Error(w, "read offer: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := checkOffer(offer); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if ok, why := s.reserve(); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(s.cfg.RetryAfter.Round(time.Second)/time.Second)))
		http.Error(w, why, http.StatusServiceUnavailable)
		return
	}
	sess := &session{id: newID()}
	sink := func(ev callengine.PeerEvent) {
		if ev.State == nil {
			return
		}
		switch *ev.State {
		case callengine.PeerConnected:
			sess.connected.Store(true)
		case callengine.PeerFailed, callengine.PeerClosed:
			sess.ended.Store(true)
		}
		s.inbox.Push(sessionEvent{s: sess, state: *ev.State})
	}
	ctx, cancel := context.WithTimeout(r.Context(), answerTimeout)
	defer cancel()
	peer, answer, err := s.cfg.Peers.AcceptViewer(ctx, string(offer), sink)
	if err != nil {
		s.unreserve()
		if errors.Is(err, ErrBadOffer) {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.log.Error("whep answer", "err", err)
		http.Error(w, "answer: "+err.Error(), http.StatusInternalServerError)
		return
	}
	sess.peer = peer
	if !s.add(sess) {
		peer.Close()
		w.Header().Set("Retry-After", strconv.Itoa(int(s.cfg.RetryAfter/time.Second)))
		http.Error(w, "the intercom is stopping", http.StatusServiceUnavailable)
		return
	}
	s.log.Info("whep viewer", "session", sess.id, "remote_addr", r.RemoteAddr)
	w.Header().Set("Content-Type", sdpType)
	w.Header().Set("Location", Path+"/"+sess.id)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, answer)
}

// reserve takes a viewer's slot for an offer being answered.
func (s *Server) reserve() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case !s.running:
		return false, "the intercom is not serving viewers (starting or stopping)"
	case len(s.sessions)+s.pending >= s.cfg.MaxViewers:
		s.refused++
		return false, fmt.Sprintf("%d viewers already watch, the most api.whep_max_viewers allows", s.cfg.MaxViewers)
	}
	s.pending++
	return true, ""
}

func (s *Server) unreserve() {
	s.mu.Lock()
	s.pending--
	s.mu.Unlock()
}

// add turns a reserved slot into the session, unless Run has ended, and
// starts its connect timeout.
func (s *Server) add(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending--
	if !s.running {
		return false
	}
	s.sessions[sess.id] = sess
	s.created++
	sess.timer = s.cfg.AfterFunc(s.cfg.ConnectTimeout, func() {
		s.inbox.Push(sessionEvent{s: sess, timeout: true})
	})
	if sess.ended.Load() {
		// It failed before it was registered: its event was ignored.
		s.inbox.Push(sessionEvent{s: sess, state: callengine.PeerFailed})
	}
	return true
}

// delete ends a session at its viewer's request (draft-ietf-wish-whep,
// section 4.3).
func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	sess := s.sessions[id]
	delete(s.sessions, id)
	s.mu.Unlock()
	if sess == nil {
		http.Error(w, "no such session", http.StatusNotFound)
		return
	}
	sess.close()
	s.log.Info("whep viewer left", "session", id, "why", "deleted")
	w.WriteHeader(http.StatusOK)
}

// newID is a session's resource name: 128 random bits, so that one
// viewer cannot guess another's session and end it.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	return hex.EncodeToString(b[:])
}
