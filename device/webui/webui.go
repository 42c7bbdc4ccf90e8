// Package webui is the intercom's local web page: one HTML page, a little
// JavaScript and CSS, embedded in the binary and served on the API's
// listener. It logs in with the API token (exchanged once for a session
// cookie), shows the status document live (/api/status, /api/events),
// plays the camera through the WHEP endpoint (device/whep) and offers the
// installer's tests of `intercom hwtest` (ringer, relay, speaker, button)
// through small POST endpoints.
//
// The data flow: browser ─▶ device.Guard (Host, Origin, token or this
// package's session + CSRF token) ─▶ the API's mux ─▶ this package's
// handlers (page, login, tests) or the intercom's (status, events,
// snapshot) or whep's (live view). The page itself only reads the JSON
// and SSE the API already served; it adds no second source of truth.
package webui

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

//go:embed assets
var assets embed.FS

// ErrSkipped marks a test the box cannot run: the part is simulated or
// not fitted. The page shows it as skipped, not failed.
var ErrSkipped = errors.New("webui: test skipped")

// Installer runs the installer's tests on the running intercom, the same
// parts `intercom hwtest` tests on an idle box. Each returns what it did
// ("rang one cadence (3 s)") or why it failed; ErrSkipped (wrapped) when
// the part is simulated or absent. The daemon implements it.
type Installer interface {
	// Ring sounds the ringer for one cadence.
	Ring(ctx context.Context) (string, error)
	// PulseRelay opens the door once, through the door's own relay
	// runner (so the strike is never left energised).
	PulseRelay(ctx context.Context) (string, error)
	// Tone plays a test tone on the speaker.
	Tone(ctx context.Context) (string, error)
	// Button waits up to wait for a press of the doorbell button, which
	// then rings nobody.
	Button(ctx context.Context, wait time.Duration) (string, error)
	// Microphone listens through the door's microphone path for a few
	// seconds and says how loud it was.
	Microphone(ctx context.Context) (string, error)
	// MicrophoneLevel is the microphone's level now, for the page's live
	// meter while Microphone runs; false when nothing is being encoded.
	MicrophoneLevel() (peakDBFS, rmsDBFS float64, ok bool)
}

// Config configures the page.
type Config struct {
	// Token is the API token (api.token_file); "" when the API asks for
	// none (loopback only), and then the page needs no login.
	Token     string
	Installer Installer // nil: no test panel
	// ButtonWait is how long the button test waits; default 30 s.
	ButtonWait time.Duration
	// SessionTTL and MaxSessions bound the logins kept; defaults
	// DefaultSessionTTL and DefaultMaxSessions.
	SessionTTL  time.Duration
	MaxSessions int
	Logger      *slog.Logger
	Now         func() time.Time // tests; default time.Now
}

// UI is the page and its endpoints.
type UI struct {
	cfg      Config
	log      *slog.Logger
	sessions *sessions
	tokenSum [sha256.Size]byte
	static   http.Handler
	testing  sync.Mutex // one installer test at a time
}

// New returns the page.
func New(cfg Config) *UI {
	if cfg.ButtonWait <= 0 {
		cfg.ButtonWait = 30 * time.Second
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return &UI{
		cfg: cfg, log: cfg.Logger, sessions: newSessions(cfg.SessionTTL, cfg.MaxSessions, cfg.Now),
		tokenSum: sha256.Sum256([]byte(cfg.Token)), static: http.FileServerFS(sub),
	}
}

// Paths the page serves.
const (
	pathLogin   = "/api/login"
	pathLogout  = "/api/logout"
	pathSession = "/api/session"
	pathTests   = "/api/test/"
	pathLevel   = "/api/test/microphone/level"
)

// Public reports the requests that need no token (device.GuardConfig.
// Public): the page and its assets, and the login, whose body carries the
// token. Everything else, logout and the tests included, needs the token
// or a session.
func (u *UI) Public(r *http.Request) bool {
	switch {
	case r.Method == http.MethodPost && r.URL.Path == pathLogin:
		return true
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		return false
	case r.URL.Path == "/", r.URL.Path == "/app.js", r.URL.Path == "/style.css", r.URL.Path == "/favicon.svg":
		return true
	}
	return false
}

// Authorize is the guard's session seam (device.GuardConfig.Session): a
// live session's cookie, and for a state-changing request its CSRF token
// in the X-CSRF-Token header.
func (u *UI) Authorize(r *http.Request) bool { return u.sessions.authorize(r) }

// Handler serves the page, its assets, the login and the tests. Mount it
// for "GET /{$}", the asset paths, and the /api/ paths it names.
func (u *UI) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, p := range []string{"GET /{$}", "GET /app.js", "GET /style.css", "GET /favicon.svg"} {
		mux.Handle(p, u.page())
	}
	mux.HandleFunc("POST "+pathLogin, u.login)
	mux.HandleFunc("POST "+pathLogout, u.logout)
	mux.HandleFunc("GET "+pathSession, u.session)
	mux.HandleFunc("POST "+pathTests+"{part}", u.test)
	mux.HandleFunc("GET "+pathLevel, u.level)
	return mux
}

// Patterns are what the API's mux must route to Handler.
func Patterns() []string {
	return []string{"GET /{$}", "GET /app.js", "GET /style.css", "GET /favicon.svg",
		"POST " + pathLogin, "POST " + pathLogout, "GET " + pathSession, "POST " + pathTests, "GET " + pathLevel}
}

func (u *UI) page() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// The page loads only its own script and style, talks only to
		// its own origin, and may not be framed (clickjacking of the
		// relay test).
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "+
			"connect-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		u.static.ServeHTTP(w, r)
	})
}

// login exchanges the token for a session: a cookie the page never sees
// (HttpOnly; SameSite=Strict; Secure when served over TLS) and the CSRF
// token the page sends with every state-changing request.
func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&body); err != nil {
		http.Error(w, "send {\"token\": \"…\"}", http.StatusBadRequest)
		return
	}
	if u.cfg.Token == "" {
		// No token configured (a loopback-only API): the guard lets
		// every request of this origin through; nothing to log in to.
		writeJSON(w, http.StatusOK, map[string]any{"csrf": "", "open": true})
		return
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(body.Token)))
	if subtle.ConstantTimeCompare(sum[:], u.tokenSum[:]) != 1 {
		u.log.Info("web page login refused", "remote_addr", r.RemoteAddr)
		http.Error(w, "wrong token", http.StatusUnauthorized)
		return
	}
	id, csrf := u.sessions.create()
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: id, Path: "/", MaxAge: int(u.cfg.SessionTTL / time.Second),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	u.log.Info("web page login", "remote_addr", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]any{"csrf": csrf})
}

func (u *UI) logout(w http.ResponseWriter, r *http.Request) {
	u.sessions.remove(r)
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	w.WriteHeader(http.StatusNoContent)
}

// session tells a page that reloads its CSRF token; the guard has let
// the request through, so it holds a session or the token (or the API
// asks for none).
func (u *UI) session(w http.ResponseWriter, r *http.Request) {
	csrf := ""
	if s := u.sessions.lookup(r); s != nil {
		csrf = s.csrf
	}
	writeJSON(w, http.StatusOK, map[string]any{"csrf": csrf, "open": u.cfg.Token == "", "tests": u.cfg.Installer != nil})
}

// testResult is a test's outcome, as hwtest prints it: pass, fail, skip.
type testResult struct {
	Result  string `json:"result"`
	Message string `json:"message"`
}

// test runs one installer test: ringer, relay (with "confirm": true in the
// body, the page asks first), tone, button, microphone.
func (u *UI) test(w http.ResponseWriter, r *http.Request) {
	if u.cfg.Installer == nil {
		http.Error(w, "no installer tests here", http.StatusNotFound)
		return
	}
	var body struct {
		Confirm bool `json:"confirm"`
	}
	_ = json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&body) // an empty body confirms nothing
	var run func(context.Context) (string, error)
	switch part := r.PathValue("part"); part {
	case "ringer":
		run = u.cfg.Installer.Ring
	case "relay":
		if !body.Confirm {
			http.Error(w, "the relay opens the door: send {\"confirm\": true}", http.StatusBadRequest)
			return
		}
		run = u.cfg.Installer.PulseRelay
	case "tone":
		run = u.cfg.Installer.Tone
	case "button":
		run = func(ctx context.Context) (string, error) { return u.cfg.Installer.Button(ctx, u.cfg.ButtonWait) }
	case "microphone":
		run = u.cfg.Installer.Microphone
	default:
		http.Error(w, "no such test: "+part, http.StatusNotFound)
		return
	}
	if !u.testing.TryLock() {
		http.Error(w, "another test is running", http.StatusConflict)
		return
	}
	defer u.testing.Unlock()
	u.log.Info("installer test from the web page", "test", r.PathValue("part"), "remote_addr", r.RemoteAddr)
	msg, err := run(r.Context())
	switch {
	case errors.Is(err, ErrSkipped):
		writeJSON(w, http.StatusOK, testResult{"skip", strings.TrimPrefix(err.Error(), ErrSkipped.Error()+": ")})
	case err != nil:
		writeJSON(w, http.StatusOK, testResult{"fail", err.Error()})
	default:
		writeJSON(w, http.StatusOK, testResult{"pass", msg})
	}
}

// level is the live meter's reading: the microphone's level now.
func (u *UI) level(w http.ResponseWriter, _ *http.Request) {
	if u.cfg.Installer == nil {
		http.Error(w, "no installer tests here", http.StatusNotFound)
		return
	}
	peak, rms, ok := u.cfg.Installer.MicrophoneLevel()
	writeJSON(w, http.StatusOK, map[string]any{"peak_dbfs": peak, "rms_dbfs": rms, "live": ok})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
