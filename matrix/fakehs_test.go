package matrix

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/matrix/matrixtest"
)

// memStore is an in-memory Store.
type memStore struct {
	mu        sync.Mutex
	creds     *Credentials
	nextBatch string
	filterID  string
	direct    map[string]string
	saves     int // SaveNextBatch calls
}

func (m *memStore) Credentials() (Credentials, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.creds == nil {
		return Credentials{}, false, nil
	}
	return *m.creds, true, nil
}

func (m *memStore) SaveCredentials(c Credentials) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.creds = &c
	return nil
}

func (m *memStore) NextBatch() (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nextBatch, nil
}

func (m *memStore) SaveNextBatch(s string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextBatch = s
	m.saves++
	return nil
}

func (m *memStore) FilterID() (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.filterID, nil
}

func (m *memStore) SaveFilterID(s string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.filterID = s
	return nil
}

func (m *memStore) DirectRoom(user string) (string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.direct[user]
	return r, ok, nil
}

func (m *memStore) SaveDirectRoom(user, room string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.direct == nil {
		m.direct = map[string]string{}
	}
	m.direct[user] = room
	return nil
}

func (m *memStore) get() memStore {
	m.mu.Lock()
	defer m.mu.Unlock()
	return memStore{creds: m.creds, nextBatch: m.nextBatch, filterID: m.filterID, direct: m.direct, saves: m.saves}
}

// fakeHS is matrixtest's homeserver with this package's older test
// vocabulary (lower-case replies and requests), so that the tests read as
// before the fake moved.
type fakeHS struct {
	*matrixtest.Server
	srv      *httptest.Server
	password string
	syncIdle <-chan struct{} // signalled by each idle /sync once the script is used up
}

func newFakeHS(t *testing.T) *fakeHS {
	t.Helper()
	s := matrixtest.NewServer(t, matrixtest.Options{})
	return &fakeHS{Server: s, srv: s.Server, password: s.Password, syncIdle: s.SyncIdle()}
}

// reply is one scripted answer of the fake homeserver.
type reply struct {
	status int
	body   string
	header http.Header
}

func okReply(body string) reply { return reply{status: 200, body: body} }

func errReply(status int, errcode string) reply {
	r := matrixtest.Error(status, errcode)
	return reply{status: r.Status, body: r.Body}
}

func replies(rs []reply) []matrixtest.Reply {
	out := make([]matrixtest.Reply, len(rs))
	for i, r := range rs {
		out[i] = matrixtest.Reply{Status: r.status, Body: r.body, Header: r.header}
	}
	return out
}

// request is a request the fake homeserver received.
type request struct {
	method, path string
	query        url.Values
	body         string
	token        string
}

// script queues replies for a route such as "PUT send" or "GET whoami".
func (f *fakeHS) script(route string, r ...reply) { f.Script(route, replies(r)...) }

func (f *fakeHS) scriptSync(r ...reply) { f.ScriptSync(replies(r)...) }

func (f *fakeHS) requests(route string) []request {
	var out []request
	for _, r := range f.Requests(route) {
		out = append(out, request{method: r.Method, path: r.Path, query: r.Query, body: r.Body, token: r.Token})
	}
	return out
}

// addToken makes tok valid for the fake's user and device dev.
func (f *fakeHS) addToken(tok, dev string) { f.AddToken(tok, dev) }

// sleeps records the waits of a Session instead of sleeping.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeps) get() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.d...)
}

// newTestSession returns a Session on f with fake sleep and no jitter
// (every backoff is exactly half its nominal value).
func newTestSession(t *testing.T, f *fakeHS, store *memStore, mod func(*Options)) (*Session, *sleeps) {
	t.Helper()
	opts := Options{
		Homeserver: f.srv.URL,
		UserID:     "@door:hs.test",
		Password:   f.password,
		DeviceName: "Front door",
		Residents:  []callengine.UserID{"@alice:hs.test"},
		Store:      store,
		Logger:     slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	sl := &sleeps{}
	s.sleep = sl.sleep
	s.jitter = func(int64) int64 { return 0 }
	t.Cleanup(func() { s.Close() })
	return s, sl
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
