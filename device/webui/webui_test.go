package webui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doorbell/intercom/device"
	"github.com/doorbell/intercom/device/webui"
)

const token = "page-test-token-0123456789"

// fakeInstaller records the tests run; relay blocks until released when
// hold is set.
type fakeInstaller struct {
	mu   sync.Mutex
	ran  []string
	hold chan struct{}
}

func (f *fakeInstaller) note(s string) {
	f.mu.Lock()
	f.ran = append(f.ran, s)
	f.mu.Unlock()
}

func (f *fakeInstaller) Ring(ctx context.Context) (string, error) { f.note("ring"); return "rang", nil }
func (f *fakeInstaller) PulseRelay(ctx context.Context) (string, error) {
	f.note("relay")
	if f.hold != nil {
		<-f.hold
	}
	return "pulsed", nil
}
func (f *fakeInstaller) Tone(ctx context.Context) (string, error) {
	f.note("tone")
	return "", fmt.Errorf("%w: audio is simulated", webui.ErrSkipped)
}
func (f *fakeInstaller) Microphone(ctx context.Context) (string, error) {
	f.note("microphone")
	return "loudest -20.0 dBFS", nil
}
func (f *fakeInstaller) MicrophoneLevel() (float64, float64, bool) { return -20, -30, true }
func (f *fakeInstaller) Button(ctx context.Context, wait time.Duration) (string, error) {
	f.note("button")
	return "", fmt.Errorf("no press within %v", wait)
}

// env is the page behind the real guard, beside a stand-in for the
// intercom's API, on a real HTTP server.
type env struct {
	url  string
	inst *fakeInstaller
	now  time.Time
	mu   sync.Mutex
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{inst: &fakeInstaller{}, now: time.Now()}
	ui := webui.New(webui.Config{Token: token, Installer: e.inst, MaxSessions: 2, ButtonWait: time.Second,
		Now: func() time.Time { e.mu.Lock(); defer e.mu.Unlock(); return e.now }})
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) }) // the intercom's API
	for _, p := range webui.Patterns() {
		mux.Handle(p, ui.Handler())
	}
	ts := httptest.NewUnstartedServer(nil)
	ts.Start()
	t.Cleanup(ts.Close)
	g, err := device.Guard(mux, device.GuardConfig{Listen: ts.Listener.Addr().String(), Token: token,
		Session: ui.Authorize, Public: ui.Public})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = g
	e.url = ts.URL
	return e
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	e.now = e.now.Add(d)
	e.mu.Unlock()
}

// browser is a client with a cookie jar, as a browser keeps the cookie.
func browser(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar}
}

func do(t *testing.T, c *http.Client, method, url, body string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func login(t *testing.T, e *env, c *http.Client) string {
	t.Helper()
	resp, body := do(t, c, "POST", e.url+"/api/login", `{"token":"`+token+`"}`, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %s %s", resp.Status, body)
	}
	var r struct{ CSRF string }
	if err := json.Unmarshal([]byte(body), &r); err != nil || len(r.CSRF) != 32 {
		t.Fatalf("login answer %q: %v", body, err)
	}
	return r.CSRF
}

func TestLoginCookieAndCSRF(t *testing.T) {
	e := newEnv(t)
	c := browser(t)

	// The page is public; the API is not.
	resp, body := do(t, c, "GET", e.url+"/", "", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "<title>Intercom</title>") {
		t.Fatalf("GET /: %s", resp.Status)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	for _, p := range []string{"/app.js", "/style.css", "/favicon.svg"} {
		if resp, _ := do(t, c, "GET", e.url+p, "", nil); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", p, resp.Status)
		}
	}
	if resp, _ := do(t, c, "GET", e.url+"/api/session", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("session before login: %s", resp.Status)
	}

	// A wrong token gets no cookie.
	resp, _ = do(t, c, "POST", e.url+"/api/login", `{"token":"`+strings.ToUpper(token)+`"}`, nil)
	if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Fatalf("wrong token: %s, cookies %v", resp.Status, resp.Cookies())
	}

	resp, body = do(t, c, "POST", e.url+"/api/login", `{"token":"`+token+`"}`, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %s %s", resp.Status, body)
	}
	ck := resp.Cookies()
	if len(ck) != 1 || ck[0].Name != webui.CookieName || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteStrictMode || ck[0].Secure || ck[0].Path != "/" {
		t.Fatalf("cookie %+v: want HttpOnly, SameSite=Strict, not Secure over plain HTTP", ck)
	}
	var r struct{ CSRF string }
	_ = json.Unmarshal([]byte(body), &r)

	// Reading needs the cookie only; changing state its CSRF token too.
	if resp, _ := do(t, c, "GET", e.url+"/api/status", "", nil); resp.StatusCode != http.StatusAccepted {
		t.Errorf("GET with the session: %s", resp.Status)
	}
	if resp, _ := do(t, c, "POST", e.url+"/api/ring", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST without the CSRF token: %s, want 401", resp.Status)
	}
	if resp, _ := do(t, c, "POST", e.url+"/api/ring", "", map[string]string{webui.CSRFHeader: strings.Repeat("0", 32)}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST with a wrong CSRF token: %s, want 401", resp.Status)
	}
	if resp, _ := do(t, c, "POST", e.url+"/api/ring", "", map[string]string{webui.CSRFHeader: r.CSRF}); resp.StatusCode != http.StatusAccepted {
		t.Errorf("POST with the CSRF token: %s", resp.Status)
	}
	// Another site's page: the browser sends its Origin, the cookie
	// cannot help it.
	if resp, _ := do(t, c, "POST", e.url+"/api/ring", "", map[string]string{webui.CSRFHeader: r.CSRF, "Origin": "http://attacker.example"}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("POST from another origin: %s, want 403", resp.Status)
	}
	resp, body = do(t, c, "GET", e.url+"/api/session", "", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, r.CSRF) {
		t.Errorf("session after login: %s %s", resp.Status, body)
	}

	// Logout ends the session on the board, not only in the browser.
	old := c.Jar.Cookies(mustURL(t, e.url))
	if resp, _ := do(t, c, "POST", e.url+"/api/logout", "", map[string]string{webui.CSRFHeader: r.CSRF}); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: %s", resp.Status)
	}
	replay := browser(t)
	replay.Jar.SetCookies(mustURL(t, e.url), old)
	if resp, _ := do(t, replay, "GET", e.url+"/api/status", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the logged-out cookie replayed: %s, want 401", resp.Status)
	}
}

func TestSessionsExpireAndAreBounded(t *testing.T) {
	e := newEnv(t)
	a, b, c := browser(t), browser(t), browser(t)
	login(t, e, a)
	e.advance(time.Minute)
	login(t, e, b)
	e.advance(time.Minute)
	login(t, e, c) // MaxSessions 2: a's, the oldest, makes room
	if resp, _ := do(t, a, "GET", e.url+"/api/status", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the oldest session beyond the bound: %s, want 401", resp.Status)
	}
	if resp, _ := do(t, b, "GET", e.url+"/api/status", "", nil); resp.StatusCode != http.StatusAccepted {
		t.Errorf("b's session: %s", resp.Status)
	}
	e.advance(webui.DefaultSessionTTL)
	if resp, _ := do(t, c, "GET", e.url+"/api/status", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("expired session: %s, want 401", resp.Status)
	}
}

func TestInstallerTests(t *testing.T) {
	e := newEnv(t)
	c := browser(t)
	csrf := login(t, e, c)
	h := map[string]string{webui.CSRFHeader: csrf, "Content-Type": "application/json"}
	result := func(part, body string) (int, string) {
		resp, b := do(t, c, "POST", e.url+"/api/test/"+part, body, h)
		return resp.StatusCode, b
	}
	if code, body := result("ringer", "{}"); code != http.StatusOK || !strings.Contains(body, `"result":"pass"`) {
		t.Errorf("ringer: %d %s", code, body)
	}
	if code, body := result("relay", "{}"); code != http.StatusBadRequest {
		t.Errorf("relay without confirmation: %d %s, want 400", code, body)
	}
	if code, body := result("tone", ""); code != http.StatusOK || !strings.Contains(body, `{"result":"skip","message":"audio is simulated"}`) {
		t.Errorf("tone: %d %s", code, body)
	}
	if code, body := result("button", ""); code != http.StatusOK || !strings.Contains(body, `"result":"fail"`) || !strings.Contains(body, "no press within 1s") {
		t.Errorf("button: %d %s", code, body)
	}
	if code, body := result("microphone", ""); code != http.StatusOK || !strings.Contains(body, `"result":"pass"`) || !strings.Contains(body, "-20.0 dBFS") {
		t.Errorf("microphone: %d %s", code, body)
	}
	if resp, body := do(t, c, "GET", e.url+"/api/test/microphone/level", "", nil); resp.StatusCode != http.StatusOK ||
		!strings.Contains(body, `"peak_dbfs":-20`) || !strings.Contains(body, `"live":true`) {
		t.Errorf("microphone level: %s %s", resp.Status, body)
	}
	if resp, _ := do(t, browser(t), "GET", e.url+"/api/test/microphone/level", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("microphone level without a session: %s, want 401", resp.Status)
	}
	if code, _ := result("camera", ""); code != http.StatusNotFound {
		t.Errorf("unknown test: %d", code)
	}
	// One test at a time.
	e.inst.hold = make(chan struct{})
	done := make(chan string)
	go func() {
		_, body := result("relay", `{"confirm":true}`)
		done <- body
	}()
	for {
		e.inst.mu.Lock()
		n := len(e.inst.ran)
		e.inst.mu.Unlock()
		if n == 5 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if code, _ := result("ringer", ""); code != http.StatusConflict {
		t.Errorf("a second test while the relay test runs: %d, want 409", code)
	}
	close(e.inst.hold)
	if body := <-done; !strings.Contains(body, `"result":"pass"`) {
		t.Errorf("relay: %s", body)
	}
	// Without a session, no test runs.
	if resp, _ := do(t, browser(t), "POST", e.url+"/api/test/ringer", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("test without a session: %s", resp.Status)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
