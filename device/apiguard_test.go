package device

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

const testToken = "s3cret-token-0123456789"

// basic is RFC 7617's user-pass, as Go's client sends a URL's user info.
func basic(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

// served is an API handler that only records what reached it.
type served struct{ n int }

func (s *served) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.n++
	w.WriteHeader(http.StatusNoContent)
}

// guardReq is one request to the guard: method and path, the Host the
// client addressed, and headers.
type guardReq struct {
	method, path, host string
	remote             string            // RemoteAddr; 192.0.2.1:40000 if empty
	header             map[string]string // Origin, Sec-Fetch-Site, Authorization, Cookie
}

func (g guardReq) do(t *testing.T, h http.Handler) *httptest.ResponseRecorder {
	t.Helper()
	method := g.method
	if method == "" {
		method = http.MethodPost
	}
	path := g.path
	if path == "" {
		path = "/api/ring"
	}
	r := httptest.NewRequest(method, path, nil)
	r.Host = g.host
	r.RemoteAddr = g.remote
	if r.RemoteAddr == "" {
		r.RemoteAddr = "192.0.2.1:40000"
	}
	for k, v := range g.header {
		r.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

func newGuard(t *testing.T, cfg GuardConfig, next http.Handler) http.Handler {
	t.Helper()
	h, err := Guard(next, cfg)
	if err != nil {
		t.Fatalf("Guard(%+v): %v", cfg, err)
	}
	return h
}

// TestGuardLoopbackWithoutToken: the default API (loopback, no token)
// still serves a script on the board, and refuses what a web page or a
// rebound DNS name sends it (issue 19, finding 7).
func TestGuardLoopbackWithoutToken(t *testing.T) {
	h := map[string]string{}
	origin := func(o string) map[string]string { return map[string]string{"Origin": o} }
	for _, tt := range []struct {
		name string
		req  guardReq
		code int // 0: passed to the API
	}{
		{"curl on the board", guardReq{host: "127.0.0.1:8080", header: h}, 0},
		{"localhost", guardReq{host: "localhost:8080"}, 0},
		{"LOCALHOST.", guardReq{host: "LOCALHOST.:8080"}, 0},
		{"IPv6 loopback", guardReq{host: "[::1]:8080"}, 0},
		{"status", guardReq{method: "GET", path: "/api/status", host: "127.0.0.1:8080"}, 0},
		{"the API's own page", guardReq{host: "127.0.0.1:8080", header: origin("http://127.0.0.1:8080")}, 0},
		{"a fetch from the same origin", guardReq{host: "127.0.0.1:8080", header: map[string]string{"Sec-Fetch-Site": "same-origin"}}, 0},
		{"typed into the address bar", guardReq{method: "GET", path: "/api/status", host: "127.0.0.1:8080", header: map[string]string{"Sec-Fetch-Site": "none"}}, 0},

		{"DNS rebinding", guardReq{method: "GET", path: "/api/snapshot.jpg", host: "attacker.example:8080"}, http.StatusForbidden},
		{"DNS rebinding, no port", guardReq{method: "GET", path: "/api/status", host: "attacker.example"}, http.StatusForbidden},
		{"another port", guardReq{host: "127.0.0.1:8081"}, http.StatusForbidden},
		{"a LAN address", guardReq{host: "192.168.1.20:8080"}, http.StatusForbidden},
		{"no Host", guardReq{host: ""}, http.StatusForbidden},
		{"another site's page", guardReq{host: "127.0.0.1:8080", header: origin("https://attacker.example")}, http.StatusForbidden},
		{"hang-up from another site", guardReq{path: "/api/hangup", host: "127.0.0.1:8080", header: origin("http://attacker.example")}, http.StatusForbidden},
		{"another origin on this machine", guardReq{host: "127.0.0.1:8080", header: origin("http://127.0.0.1:3000")}, http.StatusForbidden},
		{"localhost is another origin", guardReq{host: "127.0.0.1:8080", header: origin("http://localhost:8080")}, http.StatusForbidden},
		{"opaque origin", guardReq{host: "127.0.0.1:8080", header: origin("null")}, http.StatusForbidden},
		{"garbled origin", guardReq{host: "127.0.0.1:8080", header: origin("::")}, http.StatusForbidden},
		{"an <img> on another site", guardReq{method: "GET", path: "/api/snapshot.jpg", host: "127.0.0.1:8080",
			header: map[string]string{"Sec-Fetch-Site": "cross-site"}}, http.StatusForbidden},
		{"a page of a sibling site", guardReq{method: "GET", path: "/api/status", host: "127.0.0.1:8080",
			header: map[string]string{"Sec-Fetch-Site": "same-site"}}, http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			api := &served{}
			rec := tt.req.do(t, newGuard(t, GuardConfig{Listen: "127.0.0.1:8080"}, api))
			want := tt.code
			if want == 0 {
				want = http.StatusNoContent
			}
			if rec.Code != want {
				t.Fatalf("status %d, want %d (%s)", rec.Code, want, strings.TrimSpace(rec.Body.String()))
			}
			if passed := api.n == 1; passed != (tt.code == 0) {
				t.Fatalf("reached the API: %v", passed)
			}
		})
	}
}

// TestGuardToken: with a token every request must carry it, loopback
// included; the Host and Origin checks hold even for a request that has
// it; the session seam lets the coming web page authenticate by cookie.
func TestGuardToken(t *testing.T) {
	bearer := func(v string) map[string]string { return map[string]string{"Authorization": v} }
	session := func(r *http.Request) bool {
		c, err := r.Cookie("intercom_session")
		return err == nil && c.Value == "valid"
	}
	lan := GuardConfig{Listen: "0.0.0.0:8080", Token: testToken, Hostnames: []string{"intercom.local", "Door.Example.org."}, Session: session}
	loop := GuardConfig{Listen: "127.0.0.1:8080", Token: testToken}
	public := lan
	public.Public = func(r *http.Request) bool { return r.Method == http.MethodGet && r.URL.Path == "/" }
	for _, tt := range []struct {
		name string
		cfg  GuardConfig
		req  guardReq
		code int // 0: passed to the API
	}{
		{"token", lan, guardReq{host: "192.168.1.20:8080", header: bearer("Bearer " + testToken)}, 0},
		{"scheme in any case", lan, guardReq{host: "192.168.1.20:8080", header: bearer("bearer " + testToken)}, 0},
		{"a configured name", lan, guardReq{host: "intercom.local:8080", header: bearer("Bearer " + testToken)}, 0},
		{"a configured name behind a proxy", lan, guardReq{host: "door.example.org", header: bearer("Bearer " + testToken)}, 0},
		{"an IPv6 address", lan, guardReq{host: "[2001:db8::20]:8080", header: bearer("Bearer " + testToken)}, 0},
		{"localhost", lan, guardReq{host: "localhost:8080", header: bearer("Bearer " + testToken)}, 0},
		{"loopback with the token", loop, guardReq{host: "127.0.0.1:8080", header: bearer("Bearer " + testToken)}, 0},
		{"the page's session", lan, guardReq{host: "intercom.local:8080", header: map[string]string{"Cookie": "intercom_session=valid"}}, 0},

		{"no token", lan, guardReq{host: "192.168.1.20:8080"}, http.StatusUnauthorized},
		{"loopback without the token", loop, guardReq{host: "127.0.0.1:8080"}, http.StatusUnauthorized},
		{"status without the token", lan, guardReq{method: "GET", path: "/api/status", host: "192.168.1.20:8080"}, http.StatusUnauthorized},
		{"health without the token", lan, guardReq{method: "GET", path: "/healthz", host: "192.168.1.20:8080"}, http.StatusUnauthorized},
		{"wrong token", lan, guardReq{host: "192.168.1.20:8080", header: bearer("Bearer " + strings.ToUpper(testToken))}, http.StatusUnauthorized},
		{"token prefix", lan, guardReq{host: "192.168.1.20:8080", header: bearer("Bearer " + testToken[:10])}, http.StatusUnauthorized},
		{"token and more", lan, guardReq{host: "192.168.1.20:8080", header: bearer("Bearer " + testToken + "x")}, http.StatusUnauthorized},
		{"basic", lan, guardReq{host: "192.168.1.20:8080", header: bearer("Basic " + testToken)}, http.StatusUnauthorized},
		{"bare token", lan, guardReq{host: "192.168.1.20:8080", header: bearer(testToken)}, http.StatusUnauthorized},
		{"expired session", lan, guardReq{host: "intercom.local:8080", header: map[string]string{"Cookie": "intercom_session=old"}}, http.StatusUnauthorized},
		{"session without the seam", loop, guardReq{host: "127.0.0.1:8080", header: map[string]string{"Cookie": "intercom_session=valid"}}, http.StatusUnauthorized},

		{"basic on whep", lan, guardReq{path: "/api/whep", host: "192.168.1.20:8080", header: bearer("Basic " + basic("go2rtc", testToken))}, 0},
		{"basic without a user on whep", lan, guardReq{method: "DELETE", path: "/api/whep/0a1b", host: "192.168.1.20:8080", header: bearer("Basic " + basic("", testToken))}, 0},
		{"basic, wrong password, on whep", lan, guardReq{path: "/api/whep", host: "192.168.1.20:8080", header: bearer("Basic " + basic(testToken, "x"))}, http.StatusUnauthorized},
		{"basic elsewhere", lan, guardReq{host: "192.168.1.20:8080", header: bearer("Basic " + basic("go2rtc", testToken))}, http.StatusUnauthorized},
		{"basic on whep from another site", lan, guardReq{path: "/api/whep", host: "192.168.1.20:8080",
			header: map[string]string{"Authorization": "Basic " + basic("u", testToken), "Origin": "http://attacker.example"}}, http.StatusForbidden},
		{"public", public, guardReq{method: "GET", path: "/", host: "192.168.1.20:8080"}, 0},
		{"not public", public, guardReq{method: "GET", path: "/api/status", host: "192.168.1.20:8080"}, http.StatusUnauthorized},
		{"public from another site", public, guardReq{method: "GET", path: "/", host: "192.168.1.20:8080",
			header: map[string]string{"Sec-Fetch-Site": "cross-site"}}, http.StatusForbidden},
		{"public, rebound", public, guardReq{method: "GET", path: "/", host: "attacker.example:8080"}, http.StatusForbidden},

		{"rebinding with a token", lan, guardReq{host: "attacker.example:8080", header: bearer("Bearer " + testToken)}, http.StatusForbidden},
		{"configured name on another site", lan, guardReq{host: "intercom.local:8080",
			header: map[string]string{"Cookie": "intercom_session=valid", "Origin": "https://attacker.example"}}, http.StatusForbidden},
		{"an address, another port", lan, guardReq{host: "192.168.1.20:9090", header: bearer("Bearer " + testToken)}, http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			api := &served{}
			rec := tt.req.do(t, newGuard(t, tt.cfg, api))
			want := tt.code
			if want == 0 {
				want = http.StatusNoContent
			}
			if rec.Code != want {
				t.Fatalf("status %d, want %d (%s)", rec.Code, want, strings.TrimSpace(rec.Body.String()))
			}
			if passed := api.n == 1; passed != (tt.code == 0) {
				t.Fatalf("reached the API: %v", passed)
			}
			// RFC 6750, section 3: a 401 names the scheme to use.
			if want == http.StatusUnauthorized && !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %v", rec.Header())
			}
		})
	}
}

// TestGuardRefusesAnOpenAPI: the guard itself refuses to serve beyond
// loopback without a token, whatever the configuration let through.
func TestGuardRefusesAnOpenAPI(t *testing.T) {
	for _, tt := range []struct {
		cfg  GuardConfig
		want error // nil: accepted; errAny: some error
	}{
		{GuardConfig{Listen: "127.0.0.1:8080"}, nil},
		{GuardConfig{Listen: "localhost:0"}, nil},
		{GuardConfig{Listen: "[::1]:8080"}, nil},
		{GuardConfig{Listen: "0.0.0.0:8080", Token: testToken}, nil},
		{GuardConfig{Listen: "0.0.0.0:8080"}, ErrOpenAPI},
		{GuardConfig{Listen: ":8080"}, ErrOpenAPI},
		{GuardConfig{Listen: "192.168.1.20:8080"}, ErrOpenAPI},
		{GuardConfig{Listen: "intercom.local:8080"}, ErrOpenAPI},
		{GuardConfig{Listen: "0.0.0.0:8080", Session: func(*http.Request) bool { return true }}, ErrOpenAPI},
		{GuardConfig{Listen: "8080"}, errAny},
	} {
		t.Run(tt.cfg.Listen, func(t *testing.T) {
			_, err := Guard(&served{}, tt.cfg)
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("Guard: %v", err)
			case tt.want == errAny && err == nil, tt.want != nil && tt.want != errAny && !errors.Is(err, tt.want):
				t.Fatalf("Guard = %v, want %v", err, tt.want)
			}
		})
	}
}

var errAny = errors.New("any error")

// TestGuardRateLimitsRings: a token bucket per client address; a client
// over it gets 429 with Retry-After, others and other requests are not
// affected.
func TestGuardRateLimitsRings(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	api := &served{}
	g := newGuard(t, GuardConfig{Listen: "127.0.0.1:8080", now: func() time.Time { return now }}, api)
	ring := func(remote string) *httptest.ResponseRecorder {
		return guardReq{host: "127.0.0.1:8080", remote: remote}.do(t, g)
	}
	for i := range DefaultRingBurst {
		if rec := ring("192.0.2.1:1000"); rec.Code != http.StatusNoContent {
			t.Fatalf("ring %d of the burst: %d", i+1, rec.Code)
		}
	}
	rec := ring("192.0.2.1:1001")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != fmt.Sprint(int(DefaultRingEvery/time.Second)) {
		t.Fatalf("ring over the burst: %d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	if api.n != DefaultRingBurst {
		t.Fatalf("%d rings reached the API", api.n)
	}
	// Other requests of the same client, and other clients, go on.
	for _, r := range []guardReq{
		{method: "GET", path: "/api/status", host: "127.0.0.1:8080", remote: "192.0.2.1:1000"},
		{path: "/api/hangup", host: "127.0.0.1:8080", remote: "192.0.2.1:1000"},
		{host: "127.0.0.1:8080", remote: "192.0.2.2:1000"},
	} {
		if rec := r.do(t, g); rec.Code != http.StatusNoContent {
			t.Fatalf("%s %s from %s: %d", r.method, r.path, r.remote, rec.Code)
		}
	}
	// The bucket refills: 3 s later 7 s remain; after them, one ring.
	now = now.Add(3 * time.Second)
	if rec := ring("192.0.2.1:1000"); rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "7" {
		t.Fatalf("3 s later: %d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	now = now.Add(7 * time.Second)
	if rec := ring("192.0.2.1:1000"); rec.Code != http.StatusNoContent {
		t.Fatalf("after Retry-After: %d", rec.Code)
	}
	if rec := ring("192.0.2.1:1000"); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("right after: %d", rec.Code)
	}
	// An IPv6 client's /64 is one client: its addresses are free to pick.
	for i := range DefaultRingBurst {
		ring(fmt.Sprintf("[2001:db8:1:2::%x]:1000", i+1))
	}
	if rec := ring("[2001:db8:1:2:ffff::1]:1000"); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("another address of the same /64: %d", rec.Code)
	}
	if rec := ring("[2001:db8:1:3::1]:1000"); rec.Code != http.StatusNoContent {
		t.Fatalf("another /64: %d", rec.Code)
	}
}

// TestGuardRateLimitAfterAuth: refused requests take nothing from the
// client's bucket, so a stranger cannot use up a resident's rings.
func TestGuardRateLimitAfterAuth(t *testing.T) {
	g := newGuard(t, GuardConfig{Listen: "0.0.0.0:8080", Token: testToken}, &served{})
	for range 3 * DefaultRingBurst {
		if rec := (guardReq{host: "192.168.1.20:8080"}).do(t, g); rec.Code != http.StatusUnauthorized {
			t.Fatalf("without the token: %d", rec.Code)
		}
	}
	rec := guardReq{host: "192.168.1.20:8080", header: map[string]string{"Authorization": "Bearer " + testToken}}.do(t, g)
	if rec.Code != http.StatusNoContent {
		t.Fatalf("with the token after refused rings: %d", rec.Code)
	}
}

// TestGuardRateLimiterIsBounded: a flood from many addresses keeps the
// limiter's table bounded and is still limited.
func TestGuardRateLimiterIsBounded(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	api := &served{}
	g := newGuard(t, GuardConfig{Listen: "127.0.0.1:8080", now: func() time.Time { return now }}, api)
	const clients = 3 * maxRingClients
	for i := range clients {
		guardReq{host: "127.0.0.1:8080", remote: fmt.Sprintf("10.%d.%d.1:1000", i>>8, i&0xff)}.do(t, g)
	}
	l := g.(*guard).rings
	if n := len(l.clients); n > maxRingClients {
		t.Fatalf("%d clients tracked, at most %d", n, maxRingClients)
	}
	// While the table is full of clients that rang just now, newcomers
	// share one bucket.
	if api.n > maxRingClients+DefaultRingBurst {
		t.Fatalf("%d of %d rings went through", api.n, clients)
	}
	// Clients whose buckets refilled make room again.
	now = now.Add(time.Duration(DefaultRingBurst) * DefaultRingEvery)
	if rec := (guardReq{host: "127.0.0.1:8080", remote: "172.16.0.1:1000"}).do(t, g); rec.Code != http.StatusNoContent {
		t.Fatalf("a new client once the others' buckets are full again: %d", rec.Code)
	}
	if n := len(l.clients); n > maxRingClients {
		t.Fatalf("%d clients tracked", n)
	}
}

// TestGuardKeepsTheBoardScriptWorking: the README's
// curl -X POST http://127.0.0.1:8080/api/ring through the guard and the
// real handler, with the default configuration.
func TestGuardKeepsTheBoardScriptWorking(t *testing.T) {
	d := New(Config{Caller: &fakeCaller{status: callengine.Status{Phase: callengine.PhaseIdle}},
		Residents: func() []callengine.Resident { return nil }})
	srv := httptest.NewServer(newGuard(t, GuardConfig{Listen: "127.0.0.1:8080"}, d.Handler()))
	defer srv.Close()
	// The test server listens on another port; address it as curl on the
	// board addresses the API.
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/api/ring", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "127.0.0.1:8080"
	req.Header.Set("User-Agent", "curl/8.5.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("ring: %d", resp.StatusCode)
	}
}
