// Package matrixtest is an in-memory Matrix homeserver for tests, as
// net/http/httptest is a web server: an httptest.Server answering the part
// of the client-server API the intercom uses, for one account.
//
// It keeps a small model of the rooms (state events, memberships,
// aliases), the account data and the access tokens, records every request
// and every event the client sends, and delivers what a test injects
// (timeline and state events, to-device events, invites) in the next
// /sync. A route can be scripted to answer with chosen replies first
// (errors, odd bodies), after which the model answers again.
//
// Routes are named by method and the significant path segment: "POST
// login", "GET whoami", "GET sync", "POST filter", "GET filter", "PUT send",
// "PUT state", "GET state", "POST createRoom", "POST join", "POST invite",
// "GET members", "GET joined_rooms", "GET account_data", "PUT
// account_data", "GET directory", "PUT sendToDevice", "POST upload", "GET
// voip", "POST openid", "GET versions".
//
// What it leaves out: federation, other users' clients (a test speaks for
// them by injecting their events), room versions and auth rules (every
// request of the account succeeds), and the initial sync's room state
// (rooms appear in /sync only with what a test delivers).
package matrixtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Options configure a Server. The zero value is usable.
type Options struct {
	// UserID is the one account; default "@door:hs.test". Its server name
	// names the rooms the server makes.
	UserID string
	// Password logs UserID in; default "correct horse".
	Password string
	// IdlePoll is how long a /sync with nothing to deliver waits at most
	// before it answers empty (less if the client's timeout is shorter);
	// default 20 ms. Anything delivered or scripted meanwhile ends the
	// wait at once.
	IdlePoll time.Duration
}

// Reply is one scripted answer.
type Reply struct {
	Status int
	Body   string
	Header http.Header
}

// OK is a 200 answer with body.
func OK(body string) Reply { return Reply{Status: http.StatusOK, Body: body} }

// Error is a Matrix error answer (errcode "" is allowed).
func Error(status int, errcode string) Reply {
	return Reply{Status: status, Body: fmt.Sprintf(`{"errcode":%q,"error":"scripted"}`, errcode)}
}

// Request is a request the server received.
type Request struct {
	Method string
	Path   string // unescaped
	Route  string // as in the package comment
	Query  url.Values
	Body   string
	Token  string // the bearer access token
}

// Event is a room event in the client-server API's client format. A nil
// StateKey makes a message event.
type Event struct {
	ID        string // made up when empty
	Room      string
	Type      string
	Sender    string
	StateKey  *string
	Content   json.RawMessage
	Timestamp time.Time // origin_server_ts; now when zero
}

// Message is a room (non-state) event from sender with content (JSON
// bytes or a value to marshal).
func Message(room, sender, eventType string, content any) Event {
	return Event{Room: room, Sender: sender, Type: eventType, Content: JSON(content)}
}

// State is a state event from sender with content (JSON bytes or a value
// to marshal).
func State(room, sender, eventType, stateKey string, content any) Event {
	return Event{Room: room, Sender: sender, Type: eventType, StateKey: &stateKey, Content: JSON(content)}
}

// JSON returns v as JSON: json.RawMessage, []byte and string are taken
// as they are, anything else is marshalled. It panics on a value that
// does not marshal, a bug in the test.
func JSON(v any) json.RawMessage {
	switch b := v.(type) {
	case json.RawMessage:
		return b
	case []byte:
		return b
	case string:
		return json.RawMessage(b)
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("matrixtest: marshal %T: %v", v, err))
	}
	return b
}

// ToDeviceMessage is a to-device event the client sent (PUT sendToDevice),
// one per recipient device.
type ToDeviceMessage struct {
	Type, User, Device string
	Content            json.RawMessage
}

// Upload is a file the client uploaded.
type Upload struct {
	ContentType, Name, URI string
	Data                   []byte
}

// Server is the fake homeserver. Its methods may be called from any
// goroutine.
type Server struct {
	*httptest.Server
	// UserID and Password are the account's (read only).
	UserID, Password string
	server           string // UserID's server name
	idlePoll         time.Duration

	mu      sync.Mutex
	tokens  map[string][2]string // access token -> user, device
	queues  map[string][]Reply   // route -> scripted replies
	syncs   []Reply              // scripted /sync answers; then the model's
	reqs    []Request
	seq     int
	rooms   map[string]*room
	aliases map[string]string // alias -> room ID
	account map[string]string // account data type -> JSON
	filters map[string]string
	turn    string // the voip/turnServer answer
	sent    []Event
	toDev   []ToDeviceMessage
	uploads []Upload
	// deviceKeys are the device keys uploaded (POST keys/upload), by user
	// and device, for keys/query: enough for the intercom's crypto to
	// start (matrix/e2ee.go); no one-time keys are handed out.
	deviceKeys map[string]map[string]json.RawMessage
	pending    batch // what the next /sync delivers
	batches    int

	// changed is closed (and replaced) at every request and change, for
	// Await; news when /sync has something new to answer with.
	changed, news chan struct{}
	syncIdle      chan struct{}
}

// room is the model of one room: its current state.
type room struct {
	state map[[2]string]Event // type, state key -> event
}

// batch is what the next /sync delivers besides the model.
type batch struct {
	timeline, state map[string][]Event
	invite          map[string][]json.RawMessage // room -> stripped state
	leave           []string
	toDevice        []json.RawMessage
}

func (b *batch) empty() bool {
	return len(b.timeline) == 0 && len(b.state) == 0 && len(b.invite) == 0 && len(b.leave) == 0 && len(b.toDevice) == 0
}

// NewServer starts a Server, closed when the test ends.
func NewServer(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.UserID == "" {
		opts.UserID = "@door:hs.test"
	}
	if opts.Password == "" {
		opts.Password = "correct horse"
	}
	if opts.IdlePoll <= 0 {
		opts.IdlePoll = 20 * time.Millisecond
	}
	_, server, _ := strings.Cut(opts.UserID, ":")
	s := &Server{
		UserID:   opts.UserID,
		Password: opts.Password,
		server:   server,
		idlePoll: opts.IdlePoll,
		tokens:   map[string][2]string{},
		queues:   map[string][]Reply{},
		rooms:    map[string]*room{},
		aliases:  map[string]string{},
		account:  map[string]string{},
		filters:  map[string]string{},
		turn:     `{}`,
		changed:  make(chan struct{}),
		news:     make(chan struct{}),
		syncIdle: make(chan struct{}, 1),
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// changedLocked wakes Await; news also wakes a waiting /sync. s.mu is held.
func (s *Server) changedLocked(news bool) {
	close(s.changed)
	s.changed = make(chan struct{})
	if news {
		close(s.news)
		s.news = make(chan struct{})
	}
}

// Await returns once cond holds, checking it now and after every request
// and change; ctx's error if ctx ends first. cond runs without the
// server's lock, so it may call the server's methods.
func (s *Server) Await(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		ch := s.changed // taken before cond: a change after it closes ch
		s.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// WaitSent waits up to 10 s for an event of eventType ("" any) that match
// accepts (nil: any) to be sent by the client, and returns the first;
// the test fails if none comes. match is asked again about every event
// at every change, so it must not count or keep state.
func (s *Server) WaitSent(t testing.TB, eventType string, match func(Event) bool) Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var got Event
	err := s.Await(ctx, func() bool {
		for _, e := range s.Sent(eventType) {
			if match == nil || match(e) {
				got = e
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("matrixtest: no %q event sent within 10 s; sent: %s", eventType, s.sentSummary())
	}
	return got
}

func (s *Server) sentSummary() string {
	var b strings.Builder
	for _, e := range s.Sent("") {
		fmt.Fprintf(&b, "\n  %s %s", e.Room, e.Type)
		if e.StateKey != nil {
			fmt.Fprintf(&b, " [%s]", *e.StateKey)
		}
		fmt.Fprintf(&b, " %.200s", e.Content)
	}
	return b.String()
}

// Script queues replies for a route such as "PUT send" or "GET whoami";
// they answer the route's next requests, before the model and before any
// check of the access token.
func (s *Server) Script(route string, r ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queues[route] = append(s.queues[route], r...)
	s.changedLocked(route == "GET sync")
}

// ScriptSync queues answers for /sync, as Script("GET sync") does.
func (s *Server) ScriptSync(r ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncs = append(s.syncs, r...)
	s.changedLocked(true)
}

// Requests returns the requests received on route ("" every route), in
// order.
func (s *Server) Requests(route string) []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return matching(s.reqs, func(r Request) bool { return route == "" || r.Route == route })
}

// Sent returns the events the client sent (PUT send) and the state it set
// (PUT state) of eventType ("" every type), in order.
func (s *Server) Sent(eventType string) []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return matching(s.sent, func(e Event) bool { return eventType == "" || e.Type == eventType })
}

// ToDevice returns the to-device messages the client sent of eventType
// ("" every type), in order.
func (s *Server) ToDevice(eventType string) []ToDeviceMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return matching(s.toDev, func(m ToDeviceMessage) bool { return eventType == "" || m.Type == eventType })
}

// matching is a copy of the elements of xs that keep accepts, in order.
func matching[T any](xs []T, keep func(T) bool) []T {
	var out []T
	for _, x := range xs {
		if keep(x) {
			out = append(out, x)
		}
	}
	return out
}

// Uploads returns the files the client uploaded, in order.
func (s *Server) Uploads() []Upload {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.uploads)
}

// routeOf names a request by method and the significant path segment.
func routeOf(method, path string) string {
	p := path
	for _, prefix := range []string{"/_matrix/client/v3/", "/_matrix/client/v1/", "/_matrix/media/v3/", "/_matrix/client/"} {
		if strings.HasPrefix(p, prefix) {
			p = strings.TrimPrefix(p, prefix)
			break
		}
	}
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

func write(w http.ResponseWriter, r Reply) {
	for k, v := range r.Header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(r.Status)
	io.WriteString(w, r.Body)
}

func okJSON(v any) Reply {
	b, _ := json.Marshal(v)
	return OK(string(b))
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	path := r.URL.EscapedPath()
	if u, err := url.PathUnescape(path); err == nil {
		path = u
	}
	route := routeOf(r.Method, path)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, Request{Method: r.Method, Path: path, Route: route, Query: r.URL.Query(), Body: string(body), Token: token})
	s.changedLocked(false)
	if q := s.queues[route]; len(q) > 0 {
		s.queues[route] = q[1:]
		write(w, q[0])
		return
	}
	if route == "GET sync" && len(s.syncs) > 0 {
		rep := s.syncs[0]
		s.syncs = s.syncs[1:]
		write(w, rep)
		return
	}
	switch route {
	case "POST login":
		write(w, s.login(body))
		return
	case "GET login":
		write(w, OK(`{"flows":[{"type":"m.login.password"}]}`))
		return
	case "GET versions":
		write(w, OK(`{"versions":["v1.1","v1.2","v1.3","v1.4","v1.5","v1.6","v1.7","v1.8","v1.9","v1.10","v1.11"]}`))
		return
	}
	who, authed := s.tokens[token]
	if !authed {
		write(w, Error(http.StatusUnauthorized, "M_UNKNOWN_TOKEN"))
		return
	}
	if route == "GET sync" {
		s.sync(w, r)
		return
	}
	write(w, s.answer(route, path, r, body, who))
}
