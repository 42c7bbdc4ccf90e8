package matrix

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
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

// reply is one scripted answer of the fake homeserver.
type reply struct {
	status int
	body   string
	header http.Header
}

func okReply(body string) reply { return reply{status: 200, body: body} }

func errReply(status int, errcode string) reply {
	return reply{status: status, body: fmt.Sprintf(`{"errcode":%q,"error":"scripted"}`, errcode)}
}

// request is a request the fake homeserver received.
type request struct {
	method, path string
	query        url.Values
	body         string
	token        string
}

// fakeHS is a scripted homeserver for unit tests. Endpoints answer from
// per-route queues; when a queue is empty the default handler answers.
type fakeHS struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	tokens   map[string][2]string // access token -> user, device
	password string
	user     string
	queues   map[string][]reply // route -> scripted replies
	reqs     []request
	syncs    []reply // scripted /sync answers; then idle empty syncs
	seq      int
	members  map[string]string // "room|user" -> membership
	joined   []string
	account  map[string]string // account data type -> JSON
	filters  map[string]string
	syncIdle chan struct{} // signalled by each idle /sync once the script is used up
}

func newFakeHS(t *testing.T) *fakeHS {
	t.Helper()
	f := &fakeHS{
		t:        t,
		tokens:   map[string][2]string{},
		user:     "@door:hs.test",
		password: "correct horse",
		queues:   map[string][]reply{},
		members:  map[string]string{},
		account:  map[string]string{},
		filters:  map[string]string{},
		syncIdle: make(chan struct{}, 1),
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// script queues replies for a route such as "PUT send" or "GET whoami".
func (f *fakeHS) script(route string, r ...reply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queues[route] = append(f.queues[route], r...)
}

func (f *fakeHS) scriptSync(r ...reply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs = append(f.syncs, r...)
}

func (f *fakeHS) requests(route string) []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []request
	for _, r := range f.reqs {
		if route == "" || routeOf(r.method, r.path) == route {
			out = append(out, r)
		}
	}
	return out
}

// routeOf names a request by method and the significant path segment.
func routeOf(method, path string) string {
	p := strings.TrimPrefix(path, "/_matrix/client/v3/")
	seg := strings.Split(p, "/")
	name := seg[0]
	switch {
	case seg[0] == "account":
		name = "whoami"
	case seg[0] == "rooms" && len(seg) > 2:
		name = seg[2]
	case seg[0] == "user" && len(seg) > 2:
		name = seg[2]
	}
	return method + " " + name
}

func (f *fakeHS) write(w http.ResponseWriter, r reply) {
	for k, v := range r.header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(r.status)
	io.WriteString(w, r.body)
}

func (f *fakeHS) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	path := r.URL.EscapedPath()
	if u, err := url.PathUnescape(path); err == nil {
		path = u
	}
	route := routeOf(r.Method, path)
	f.mu.Lock()
	f.reqs = append(f.reqs, request{method: r.Method, path: path, query: r.URL.Query(), body: string(body), token: token})
	if q := f.queues[route]; len(q) > 0 {
		f.queues[route] = q[1:]
		f.mu.Unlock()
		f.write(w, q[0])
		return
	}
	if route == "GET sync" && len(f.syncs) > 0 {
		rep := f.syncs[0]
		f.syncs = f.syncs[1:]
		f.mu.Unlock()
		f.write(w, rep)
		return
	}
	who, authed := f.tokens[token]
	f.mu.Unlock()

	if route == "POST login" {
		f.login(w, body)
		return
	}
	if !authed {
		f.write(w, errReply(401, "M_UNKNOWN_TOKEN"))
		return
	}
	seg := strings.Split(strings.TrimPrefix(path, "/_matrix/client/v3/"), "/")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	switch route {
	case "GET whoami":
		f.write(w, okReply(fmt.Sprintf(`{"user_id":%q,"device_id":%q}`, who[0], who[1])))
	case "GET sync":
		select {
		case f.syncIdle <- struct{}{}:
		default:
		}
		f.mu.Unlock()
		select {
		case <-r.Context().Done():
		case <-time.After(20 * time.Millisecond):
		}
		f.mu.Lock()
		since := r.URL.Query().Get("since")
		if since == "" {
			since = "s0"
		}
		f.write(w, okReply(fmt.Sprintf(`{"next_batch":%q}`, since)))
	case "POST filter":
		fid := fmt.Sprintf("f%d", f.seq)
		f.filters[fid] = string(body)
		f.write(w, okReply(fmt.Sprintf(`{"filter_id":%q}`, fid)))
	case "GET filter":
		if fl, ok := f.filters[seg[len(seg)-1]]; ok {
			f.write(w, okReply(fl))
		} else {
			f.write(w, errReply(404, "M_NOT_FOUND"))
		}
	case "PUT send":
		f.write(w, okReply(fmt.Sprintf(`{"event_id":"$e%d"}`, f.seq)))
	case "POST join":
		f.joined = append(f.joined, seg[1])
		f.write(w, okReply(fmt.Sprintf(`{"room_id":%q}`, seg[1])))
	case "GET joined_rooms":
		b, _ := json.Marshal(map[string][]string{"joined_rooms": f.joined})
		f.write(w, okReply(string(b)))
	case "GET members":
		var chunk []map[string]any
		for k, m := range f.members {
			room, user, _ := strings.Cut(k, "|")
			if room == seg[1] {
				chunk = append(chunk, map[string]any{"type": "m.room.member", "state_key": user, "sender": user, "content": map[string]string{"membership": m}})
			}
		}
		b, _ := json.Marshal(map[string]any{"chunk": chunk})
		f.write(w, okReply(string(b)))
	case "GET account_data":
		if d, ok := f.account[seg[len(seg)-1]]; ok {
			f.write(w, okReply(d))
		} else {
			f.write(w, errReply(404, "M_NOT_FOUND"))
		}
	case "PUT account_data":
		f.account[seg[len(seg)-1]] = string(body)
		f.write(w, okReply(`{}`))
	case "POST createRoom":
		var req struct{ Invite []string }
		json.Unmarshal(body, &req)
		room := fmt.Sprintf("!r%d:hs.test", f.seq)
		f.joined = append(f.joined, room)
		f.members[room+"|"+who[0]] = "join"
		for _, u := range req.Invite {
			f.members[room+"|"+u] = "invite"
		}
		f.write(w, okReply(fmt.Sprintf(`{"room_id":%q}`, room)))
	default:
		f.write(w, errReply(404, "M_UNRECOGNIZED"))
	}
}

func (f *fakeHS) login(w http.ResponseWriter, body []byte) {
	var req struct {
		Identifier struct{ User string }
		Password   string
		DeviceID   string `json:"device_id"`
	}
	json.Unmarshal(body, &req)
	f.mu.Lock()
	defer f.mu.Unlock()
	if req.Identifier.User != f.user || req.Password != f.password {
		f.write(w, errReply(403, "M_FORBIDDEN"))
		return
	}
	f.seq++
	dev := req.DeviceID
	if dev == "" {
		dev = fmt.Sprintf("DEV%d", f.seq)
	}
	tok := fmt.Sprintf("tok%d", f.seq)
	f.tokens[tok] = [2]string{f.user, dev}
	f.write(w, okReply(fmt.Sprintf(`{"user_id":%q,"device_id":%q,"access_token":%q}`, f.user, dev, tok)))
}

// addToken makes tok valid for the fake's user and device dev.
func (f *fakeHS) addToken(tok, dev string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens[tok] = [2]string{f.user, dev}
}

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

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
