package matrix

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeDiscovery is a homeserver (plain HTTP) and, optionally, the server
// name's own HTTPS host; each path answers what the test says. The
// client resolves the server name "example.com" to the TLS server,
// whose certificate is made for that name.
type fakeDiscovery struct {
	hs, site *httptest.Server
	mu       sync.Mutex
	asked    []string          // "hs <path>" or "site <path>", in order
	authz    map[string]string // Authorization header per "who path"
}

func newFakeDiscovery(t *testing.T, hs, site map[string]http.HandlerFunc) (*fakeDiscovery, RTCDiscovery) {
	t.Helper()
	f := &fakeDiscovery{authz: map[string]string{}}
	handler := func(who string, routes map[string]http.HandlerFunc) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			key := who + " " + r.URL.Path
			f.mu.Lock()
			f.asked = append(f.asked, key)
			f.authz[key] = r.Header.Get("Authorization")
			f.mu.Unlock()
			if h := routes[r.URL.Path]; h != nil {
				h(w, r)
				return
			}
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`)
		})
	}
	f.hs = httptest.NewServer(handler("hs", hs))
	t.Cleanup(f.hs.Close)
	f.site = httptest.NewTLSServer(handler("site", site))
	t.Cleanup(f.site.Close)
	client := f.site.Client()
	tr := client.Transport.(*http.Transport).Clone()
	siteAddr := f.site.Listener.Addr().String()
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == "example.com:443" {
			addr = siteAddr
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	tr.TLSClientConfig = &tls.Config{RootCAs: tr.TLSClientConfig.RootCAs, ServerName: "example.com"}
	return f, RTCDiscovery{Homeserver: f.hs.URL, ServerName: "example.com:8448", AccessToken: "secret-token",
		HTTP: &http.Client{Transport: tr}, Timeout: 2 * time.Second}
}

func (f *fakeDiscovery) order() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.asked, ", ")
}

func answer(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, body) }
}

const (
	transports   = `{"rtc_transports":[{"type":"livekit","livekit_service_url":"https://rtc.example.com/livekit/jwt"}]}`
	wellKnownRTC = `{"m.homeserver":{"base_url":"https://matrix.example.com"},"org.matrix.msc4143.rtc_foci":[{"type":"livekit","livekit_service_url":"https://wk.example.com/jwt"}]}`
)

func TestDiscoverRTCTransport(t *testing.T) {
	allAsked := "hs " + RTCSourceStable + ", hs " + RTCSourceUnstable + ", site " + RTCSourceWellKnown + ", hs " + RTCSourceWellKnown
	for _, tc := range []struct {
		name       string
		hs, site   map[string]http.HandlerFunc
		want, from string // service URL and the source it came from ("hs <path>" / "site <path>")
		asked      string
		err        error
	}{
		{name: "stable endpoint", hs: map[string]http.HandlerFunc{RTCSourceStable: answer(transports), RTCSourceUnstable: answer(`{"rtc_transports":[]}`)},
			want: "https://rtc.example.com/livekit/jwt", from: "hs " + RTCSourceStable, asked: "hs " + RTCSourceStable},
		{name: "unstable endpoint (Synapse msc4143_enabled)", hs: map[string]http.HandlerFunc{RTCSourceUnstable: answer(transports)},
			want: "https://rtc.example.com/livekit/jwt", from: "hs " + RTCSourceUnstable, asked: "hs " + RTCSourceStable + ", hs " + RTCSourceUnstable},
		{name: "server name's well-known", site: map[string]http.HandlerFunc{RTCSourceWellKnown: answer(wellKnownRTC)},
			want: "https://wk.example.com/jwt", from: "site " + RTCSourceWellKnown},
		{name: "homeserver's own well-known", hs: map[string]http.HandlerFunc{RTCSourceWellKnown: answer(wellKnownRTC)},
			want: "https://wk.example.com/jwt", from: "hs " + RTCSourceWellKnown, asked: allAsked},
		{name: "first livekit entry wins", hs: map[string]http.HandlerFunc{RTCSourceStable: answer(`{"rtc_transports":[
			{"type":"mesh"},"junk",{"type":"livekit","livekit_service_url":"https://first.example.com"},
			{"type":"livekit","livekit_service_url":"https://second.example.com"}]}`)},
			want: "https://first.example.com", from: "hs " + RTCSourceStable},
		{name: "a list without livekit falls through", hs: map[string]http.HandlerFunc{
			RTCSourceStable: answer(`{"rtc_transports":[{"type":"mesh"}]}`), RTCSourceUnstable: answer(transports)},
			want: "https://rtc.example.com/livekit/jwt", from: "hs " + RTCSourceUnstable},
		{name: "unusable URLs are passed over", hs: map[string]http.HandlerFunc{RTCSourceStable: answer(`{"rtc_transports":[
			{"type":"livekit","livekit_service_url":"javascript:alert(1)"},{"type":"livekit","livekit_service_url":"https://u:p@x.example.com"},
			{"type":"livekit","livekit_service_url":5},{"type":"livekit","livekit_service_url":"https:///nohost"}]}`),
			RTCSourceWellKnown: answer(wellKnownRTC)},
			want: "https://wk.example.com/jwt", from: "hs " + RTCSourceWellKnown},
		{name: "malformed answers", hs: map[string]http.HandlerFunc{RTCSourceStable: answer(`<html>`),
			RTCSourceUnstable: answer(`{"rtc_transports":{"type":"livekit"}}`), RTCSourceWellKnown: answer(`{"org.matrix.msc4143.rtc_foci":{"type":"livekit"}}`)},
			site:  map[string]http.HandlerFunc{RTCSourceWellKnown: answer(strings.Repeat(" ", maxRTCAnswer+1))},
			asked: allAsked, err: ErrNoRTCTransport},
		{name: "nothing advertised (Dendrite)", asked: allAsked, err: ErrNoRTCTransport},
		{name: "a hanging source times out", hs: map[string]http.HandlerFunc{
			RTCSourceStable: func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, RTCSourceUnstable: answer(transports)},
			want: "https://rtc.example.com/livekit/jwt", from: "hs " + RTCSourceUnstable},
		{name: "homeserver down behind a proxy", hs: map[string]http.HandlerFunc{
			RTCSourceStable:   func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) },
			RTCSourceUnstable: func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) },
		}, asked: allAsked, err: ErrRTCUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, d := newFakeDiscovery(t, tc.hs, tc.site)
			if strings.Contains(tc.name, "times out") {
				d.Timeout = 200 * time.Millisecond
			}
			got, err := d.Discover(t.Context())
			if tc.err != nil {
				var de *RTCDiscoveryError
				if !errors.Is(err, tc.err) || !errors.As(err, &de) || len(de.Tried) != 4 {
					t.Fatalf("err %v, want %v with 4 sources said", err, tc.err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got.ServiceURL != tc.want {
				t.Errorf("service URL %q, want %q", got.ServiceURL, tc.want)
			}
			if tc.from != "" {
				base := f.hs.URL
				if strings.HasPrefix(tc.from, "site ") {
					base = "https://example.com"
				}
				if want := base + strings.SplitN(tc.from, " ", 2)[1]; got.Source != want {
					t.Errorf("source %q, want %q", got.Source, want)
				}
			}
			if tc.asked != "" && f.order() != tc.asked {
				t.Errorf("asked %s\nwant  %s", f.order(), tc.asked)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			for key, a := range f.authz {
				api := strings.HasPrefix(key, "hs /_matrix/")
				if api != (a == "Bearer secret-token") {
					t.Errorf("%s got Authorization %q", key, a)
				}
			}
		})
	}
}

// TestDiscoverRTCTransportUnreachable: a homeserver that does not answer
// at all is told apart from one that advertises nothing, and a 401 says
// that a login is needed.
func TestDiscoverRTCTransportUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	d := RTCDiscovery{Homeserver: "http://" + addr, Timeout: time.Second}
	if _, err := d.Discover(t.Context()); !errors.Is(err, ErrRTCUnreachable) {
		t.Fatalf("closed port: %v, want ErrRTCUnreachable", err)
	}

	_, d = newFakeDiscovery(t, map[string]http.HandlerFunc{
		RTCSourceStable:   func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusUnauthorized) },
		RTCSourceUnstable: func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusUnauthorized) },
	}, nil)
	d.AccessToken = ""
	_, err = d.Discover(t.Context())
	var de *RTCDiscoveryError
	if !errors.Is(err, ErrNoRTCTransport) || !errors.As(err, &de) || !de.NeedsLogin {
		t.Fatalf("401: %v, want ErrNoRTCTransport needing a login", err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := d.Discover(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// TestDendriteRTCTransports: Dendrite has no transport endpoint and no
// well-known: a logged-in session hears "none advertised", not
// "unreachable", and a logged-out one ErrNotLoggedIn.
func TestDendriteRTCTransports(t *testing.T) {
	e := startHS(t)
	s := e.loggedIn(t)
	_, err := s.DiscoverRTCTransport(t.Context())
	var de *RTCDiscoveryError
	if !errors.Is(err, ErrNoRTCTransport) || !errors.As(err, &de) || de.NeedsLogin {
		t.Fatalf("Dendrite: %v", err)
	}
	t.Logf("Dendrite: %v", err)
	if _, err := e.session(t).DiscoverRTCTransport(t.Context()); !errors.Is(err, ErrNotLoggedIn) {
		t.Fatalf("before login: %v", err)
	}
}
