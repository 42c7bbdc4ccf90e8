package whep

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/internal/runloop"
)

// viewerOffer is a viewer's offer as a browser makes it for WHEP, trimmed:
// audio and video, both recvonly.
const viewerOffer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n" +
	"a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n" +
	"a=setup:actpass\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n" +
	"m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n" +
	"a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n" +
	"a=setup:actpass\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:102 H264/90000\r\n" +
	"a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"

// fakePeer is a viewer's peer connection; the test drives its states.
type fakePeer struct {
	callengine.Peer // only Close is called
	sink            func(callengine.PeerEvent)
	closed          chan struct{}
	once            sync.Once
}

func (p *fakePeer) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

func (p *fakePeer) set(st callengine.PeerState) { p.sink(callengine.PeerEvent{State: &st}) }

func (p *fakePeer) isClosed() bool {
	select {
	case <-p.closed:
		return true
	default:
		return false
	}
}

// fakePeers answers every offer, or fails with err.
type fakePeers struct {
	mu    sync.Mutex
	peers []*fakePeer
	err   error
}

func (f *fakePeers) AcceptViewer(ctx context.Context, offer string, sink func(callengine.PeerEvent)) (callengine.Peer, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, "", f.err
	}
	p := &fakePeer{sink: sink, closed: make(chan struct{})}
	f.peers = append(f.peers, p)
	return p, "v=0\r\nanswer\r\n", nil
}

func (f *fakePeers) peer(i int) *fakePeer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.peers[i]
}

// manualClock holds the connect timeouts for the test to fire.
type manualClock struct {
	mu    sync.Mutex
	fires []func()
}

func (c *manualClock) after(d time.Duration, f func()) runloop.Stopper {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fires = append(c.fires, f)
	return stopper{}
}

type stopper struct{}

func (stopper) Stop() bool { return true }

func (c *manualClock) fireAll() {
	c.mu.Lock()
	fs := c.fires
	c.fires = nil
	c.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

type env struct {
	srv   *Server
	peers *fakePeers
	clock *manualClock
	url   string
	stop  context.CancelFunc
	done  chan struct{}
}

func newEnv(t *testing.T, max int) *env {
	t.Helper()
	e := &env{peers: &fakePeers{}, clock: &manualClock{}, done: make(chan struct{})}
	e.srv = New(Config{Peers: e.peers, MaxViewers: max, AfterFunc: e.clock.after})
	mux := http.NewServeMux()
	mux.Handle(Path, e.srv.Handler())
	mux.Handle(Path+"/", e.srv.Handler())
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	e.url = ts.URL
	ctx, cancel := context.WithCancel(context.Background())
	e.stop = cancel
	go func() {
		defer close(e.done)
		e.srv.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-e.done })
	// Run marks the server running on its goroutine.
	waitFor(t, "server running", func() bool {
		e.srv.mu.Lock()
		defer e.srv.mu.Unlock()
		return e.srv.running
	})
	return e
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func (e *env) do(t *testing.T, method, path, ctype, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (e *env) offer(t *testing.T) (*http.Response, string) {
	t.Helper()
	return e.do(t, http.MethodPost, Path, "application/sdp", viewerOffer)
}

func TestCreateAndDelete(t *testing.T) {
	e := newEnv(t, 0)
	resp, body := e.offer(t)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %s %s", resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/sdp" {
		t.Errorf("Content-Type %q", ct)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, Path+"/") || len(loc) != len(Path)+1+32 {
		t.Errorf("Location %q, want %s/<32 hex digits>", loc, Path)
	}
	if body != "v=0\r\nanswer\r\n" {
		t.Errorf("body %q is not the answer", body)
	}
	if st := e.srv.Status(); st.Viewers != 1 || st.Sessions != 1 || st.MaxViewers != DefaultMaxViewers {
		t.Errorf("status %+v", st)
	}
	if resp, body := e.do(t, http.MethodPatch, loc, "application/trickle-ice-sdpfrag", "a=end-of-candidates\r\n"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PATCH: %s %s, want 405 (trickle not supported)", resp.Status, body)
	}
	if resp, body := e.do(t, http.MethodDelete, loc, "", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %s %s", resp.Status, body)
	}
	if !e.peers.peer(0).isClosed() {
		t.Error("DELETE left the peer open")
	}
	if st := e.srv.Status(); st.Viewers != 0 {
		t.Errorf("after DELETE: status %+v", st)
	}
	if resp, _ := e.do(t, http.MethodDelete, loc, "", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("second DELETE: %s, want 404", resp.Status)
	}
	if resp, _ := e.do(t, http.MethodDelete, Path+"/"+strings.Repeat("0", 32), "", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("DELETE of a session never made: %s, want 404", resp.Status)
	}
	resp, _ = e.do(t, http.MethodOptions, Path, "", "")
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Accept-Post") != "application/sdp" {
		t.Errorf("OPTIONS: %s, Accept-Post %q", resp.Status, resp.Header.Get("Accept-Post"))
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Error("OPTIONS answers CORS: the API serves its own origin only")
	}
	if resp, _ := e.do(t, http.MethodGet, Path, "", ""); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %s, want 405", resp.Status)
	}
}

// TestViewerLimit: beyond the limit an offer gets 503 with Retry-After and
// no peer is made; a DELETE frees the slot.
func TestViewerLimit(t *testing.T) {
	e := newEnv(t, 2)
	var locs []string
	for i := range 2 {
		resp, body := e.offer(t)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("viewer %d: %s %s", i, resp.Status, body)
		}
		locs = append(locs, resp.Header.Get("Location"))
	}
	resp, body := e.offer(t)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "10" {
		t.Fatalf("third viewer: %s (Retry-After %q) %s, want 503 with Retry-After 10", resp.Status, resp.Header.Get("Retry-After"), body)
	}
	if n := len(e.peers.peers); n != 2 {
		t.Errorf("%d peers made, want 2: the refused offer must not make one", n)
	}
	if st := e.srv.Status(); st.Refused != 1 || st.Viewers != 2 {
		t.Errorf("status %+v", st)
	}
	if resp, _ := e.do(t, http.MethodDelete, locs[0], "", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %s", resp.Status)
	}
	if resp, body := e.offer(t); resp.StatusCode != http.StatusCreated {
		t.Fatalf("after DELETE: %s %s, want 201", resp.Status, body)
	}
}

func TestRefusedOffers(t *testing.T) {
	sendonly := strings.ReplaceAll(viewerOffer, "a=recvonly", "a=sendonly")
	rejected := strings.ReplaceAll(strings.ReplaceAll(viewerOffer, "m=audio 9", "m=audio 0"), "m=video 9", "m=video 0")
	tests := []struct {
		name       string
		ctype      string
		body       string
		peersErr   error
		want       int
		wantInBody string
	}{
		{"no content type", "", viewerOffer, nil, http.StatusUnsupportedMediaType, "application/sdp"},
		{"json", "application/json", `{"sdp":"v=0"}`, nil, http.StatusUnsupportedMediaType, "application/sdp"},
		{"empty", "application/sdp", "", nil, http.StatusBadRequest, "empty"},
		{"not sdp", "application/sdp", "hello", nil, http.StatusBadRequest, "bad offer"},
		{"too large", "application/sdp", viewerOffer + strings.Repeat("a=x-pad:0123456789\r\n", 4000), nil, http.StatusRequestEntityTooLarge, "larger"},
		{"sendonly", "application/sdp", sendonly, nil, http.StatusBadRequest, "recvonly"},
		{"all rejected", "application/sdp", rejected, nil, http.StatusBadRequest, "recvonly"},
		{"too many sections", "application/sdp", viewerOffer + strings.Repeat("m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n", 8), nil, http.StatusBadRequest, "media sections"},
		{"peers refuse", "application/sdp", viewerOffer, fmt.Errorf("no codec: %w", ErrBadOffer), http.StatusBadRequest, "no codec"},
		{"peers fail", "application/sdp", viewerOffer, errors.New("out of ports"), http.StatusInternalServerError, "out of ports"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, 1)
			e.peers.err = tt.peersErr
			resp, body := e.do(t, http.MethodPost, Path, tt.ctype, tt.body)
			if resp.StatusCode != tt.want || !strings.Contains(body, tt.wantInBody) {
				t.Errorf("%s %q, want %d with %q", resp.Status, body, tt.want, tt.wantInBody)
			}
			// A refused offer holds no slot.
			e.peers.err = nil
			if resp, body := e.offer(t); resp.StatusCode != http.StatusCreated {
				t.Errorf("next offer: %s %s", resp.Status, body)
			}
		})
	}
}

// TestSessionEnds: a session whose connection failed or closed, or never
// came up, is ended and its slot freed; one that came up outlives the
// connect timeout.
func TestSessionEnds(t *testing.T) {
	for _, tt := range []struct {
		name   string
		states []callengine.PeerState
		fire   bool
		ends   bool
	}{
		{"failed", []callengine.PeerState{callengine.PeerConnecting, callengine.PeerConnected, callengine.PeerDisconnected, callengine.PeerFailed}, false, true},
		{"closed by the viewer", []callengine.PeerState{callengine.PeerConnected, callengine.PeerClosed}, false, true},
		{"never connected", []callengine.PeerState{callengine.PeerConnecting}, true, true},
		{"connected outlives the timeout", []callengine.PeerState{callengine.PeerConnecting, callengine.PeerConnected}, true, false},
		{"disconnected is not the end", []callengine.PeerState{callengine.PeerConnected, callengine.PeerDisconnected}, true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, 1)
			if resp, body := e.offer(t); resp.StatusCode != http.StatusCreated {
				t.Fatalf("POST: %s %s", resp.Status, body)
			}
			p := e.peers.peer(0)
			for _, st := range tt.states {
				p.set(st)
			}
			if tt.fire {
				e.clock.fireAll()
			}
			if tt.ends {
				waitFor(t, "the session to end", func() bool { return p.isClosed() && e.srv.Status().Viewers == 0 })
				return
			}
			// Give the loop its chance to (wrongly) end it.
			time.Sleep(50 * time.Millisecond)
			if p.isClosed() || e.srv.Status().Viewers != 1 {
				t.Errorf("session ended: closed %v, status %+v", p.isClosed(), e.srv.Status())
			}
		})
	}
}

// TestFailedBeforeRegistered: a connection that fails while its answer is
// still being sent is ended all the same.
func TestFailedBeforeRegistered(t *testing.T) {
	e := newEnv(t, 1)
	e.peers.err = nil
	fp := &failingPeers{fakePeers: e.peers}
	e.srv.cfg.Peers = fp
	if resp, body := e.offer(t); resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %s %s", resp.Status, body)
	}
	waitFor(t, "the session to end", func() bool { return e.peers.peer(0).isClosed() && e.srv.Status().Viewers == 0 })
}

type failingPeers struct{ *fakePeers }

func (f *failingPeers) AcceptViewer(ctx context.Context, offer string, sink func(callengine.PeerEvent)) (callengine.Peer, string, error) {
	p, a, err := f.fakePeers.AcceptViewer(ctx, offer, sink)
	st := callengine.PeerFailed
	sink(callengine.PeerEvent{State: &st})
	return p, a, err
}

// TestStopClosesEverySession: when the daemon stops, every viewer's peer
// is closed and new offers are refused.
func TestStopClosesEverySession(t *testing.T) {
	e := newEnv(t, 3)
	for range 3 {
		if resp, body := e.offer(t); resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST: %s %s", resp.Status, body)
		}
	}
	e.stop()
	<-e.done
	for i := range 3 {
		if !e.peers.peer(i).isClosed() {
			t.Errorf("peer %d left open", i)
		}
	}
	if resp, _ := e.offer(t); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("POST after stop: %s, want 503", resp.Status)
	}
}

// FuzzCheckOffer: any body either is refused with ErrBadOffer or has a
// section to receive on; nothing panics.
func FuzzCheckOffer(f *testing.F) {
	f.Add([]byte(viewerOffer))
	f.Add([]byte(strings.ReplaceAll(viewerOffer, "a=recvonly", "a=sendonly")))
	f.Add([]byte("v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 RTP/AVP 0\r\n"))
	f.Add([]byte("v=0\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		err := checkOffer(raw)
		if err != nil && !errors.Is(err, ErrBadOffer) {
			t.Fatalf("error %v does not wrap ErrBadOffer", err)
		}
		if err == nil && !strings.Contains(string(raw), "m=") {
			t.Fatalf("accepted an offer without a media section: %q", raw)
		}
	})
}
