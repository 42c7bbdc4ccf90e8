package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Where a homeserver advertises its MatrixRTC transports, in the order
// they are asked (MSC4143, "Discovery of transport infrastructure";
// matrix-voip.md §5.1):
//
//  1. GET /_matrix/client/v1/rtc/transports, authenticated, answering
//     {"rtc_transports":[{"type":"livekit","livekit_service_url":…},…]};
//  2. the same under the unstable prefix
//     /_matrix/client/unstable/org.matrix.msc4143/rtc/transports, which
//     is what Synapse (experimental_features.msc4143_enabled with
//     matrix_rtc.transports) and matrix-js-sdk's
//     _unstable_getRTCTransports speak today;
//  3. the client .well-known's "org.matrix.msc4143.rtc_foci", a list of
//     the same objects: what Element Call read before August 2026 and
//     FluffyChat still reads. It is asked at https://<server name>/ as
//     the Matrix spec says (Client-Server API, "Well-known URIs"), then at
//     the homeserver's own URL, which serves it in many deployments
//     (Synapse's serve_client_wellknown).
//
// The first LiveKit transport of the first source that has one wins, as
// js-sdk's find(isLivekitTransportConfig) picks within a list.
const (
	RTCSourceStable    = "/_matrix/client/v1/rtc/transports"
	RTCSourceUnstable  = "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports"
	RTCSourceWellKnown = "/.well-known/matrix/client"
)

// maxRTCAnswer bounds what is read of each discovery answer; real ones are
// a few hundred bytes.
const maxRTCAnswer = 64 << 10

// rtcDiscoveryTimeout bounds each discovery request.
const rtcDiscoveryTimeout = 10 * time.Second

// RTCTransport is the LiveKit transport a homeserver advertises: the JWT
// service the intercom gets its tokens from and names in its membership.
type RTCTransport struct {
	ServiceURL string
	// Source is the URL it was found at.
	Source string
}

// RTCDiscovery asks a homeserver for its MatrixRTC transport.
type RTCDiscovery struct {
	// Homeserver is the client-server API's base URL.
	Homeserver string
	// ServerName is the domain of the intercom's user ID, whose
	// .well-known is asked first.
	ServerName string
	// AccessToken authenticates /rtc/transports; without one (before the
	// first login) those are asked anyway and answer 401.
	AccessToken string
	HTTP        *http.Client
	// Timeout bounds each request; 10 s when 0.
	Timeout time.Duration
}

// RTCDiscoveryError says why Discover found nothing: what each source
// answered. It is ErrRTCUnreachable when the homeserver itself could not
// be asked (no answer, or a 5xx from a proxy in front of it), otherwise
// ErrNoRTCTransport.
type RTCDiscoveryError struct {
	Unreachable bool
	// NeedsLogin: /rtc/transports refused the request for want of a
	// valid access token (401), so only the .well-known was read.
	NeedsLogin bool
	Tried      []string // "<url>: <what it answered>", in order
}

func (e *RTCDiscoveryError) Error() string {
	what := ErrNoRTCTransport
	if e.Unreachable {
		what = ErrRTCUnreachable
	}
	return what.Error() + ": " + strings.Join(e.Tried, "; ")
}

// Is makes errors.Is see ErrRTCUnreachable or ErrNoRTCTransport.
func (e *RTCDiscoveryError) Is(target error) bool {
	return (target == ErrRTCUnreachable && e.Unreachable) || (target == ErrNoRTCTransport && !e.Unreachable)
}

// Discover asks the sources in order and returns the first LiveKit
// transport; otherwise an *RTCDiscoveryError.
func (d RTCDiscovery) Discover(ctx context.Context) (RTCTransport, error) {
	hs := strings.TrimRight(d.Homeserver, "/")
	type source struct {
		url    string
		decode func([]byte) (string, error)
		ofHS   bool // the homeserver's own API (authenticated)
	}
	sources := []source{
		{url: hs + RTCSourceStable, decode: DecodeRTCTransports, ofHS: true},
		{url: hs + RTCSourceUnstable, decode: DecodeRTCTransports, ofHS: true},
	}
	own := hs + RTCSourceWellKnown
	if host := wellKnownHost(d.ServerName); host != "" && "https://"+host+RTCSourceWellKnown != own {
		sources = append(sources, source{url: "https://" + host + RTCSourceWellKnown, decode: DecodeRTCFoci})
	}
	sources = append(sources, source{url: own, decode: DecodeRTCFoci})
	fail := &RTCDiscoveryError{Unreachable: true}
	for _, src := range sources {
		body, status, err := d.get(ctx, src.url, src.ofHS)
		if ctx.Err() != nil {
			return RTCTransport{}, fmt.Errorf("discover MatrixRTC transport: %w", context.Cause(ctx))
		}
		if err == nil {
			var u string
			if u, err = src.decode(body); err == nil {
				return RTCTransport{ServiceURL: u, Source: src.url}, nil
			}
		}
		if src.ofHS && status != 0 && status < 500 {
			fail.Unreachable = false
		}
		if src.ofHS && status == http.StatusUnauthorized {
			fail.NeedsLogin = true
		}
		fail.Tried = append(fail.Tried, src.url+": "+err.Error())
	}
	return RTCTransport{}, fail
}

// wellKnownHost is the host of the server name's well-known: the server
// name without its port (Matrix spec, "Well-known URIs": "https://hostname").
func wellKnownHost(serverName string) string {
	if serverName == "" {
		return ""
	}
	if h, _, err := net.SplitHostPort(serverName); err == nil {
		return h
	}
	return serverName
}

// get fetches one source; a non-2xx answer is an error that keeps the
// status.
func (d RTCDiscovery) get(ctx context.Context, u string, auth bool) ([]byte, int, error) {
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = rtcDiscoveryTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	// The access token goes to the homeserver's API only, never to a
	// .well-known host.
	if auth && d.AccessToken != "" {
		req.Header.Set("Authorization", "Bearer "+d.AccessToken)
	}
	c := d.HTTP
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // the URL is said by the caller
		}
		return nil, 0, fmt.Errorf("no answer: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxRTCAnswer+1))
	if err != nil {
		return nil, resp.StatusCode, fmt.Errorf("read answer: %w", err)
	}
	if len(body) > maxRTCAnswer {
		return nil, resp.StatusCode, fmt.Errorf("answer larger than %d bytes", maxRTCAnswer)
	}
	if resp.StatusCode/100 != 2 {
		return nil, resp.StatusCode, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return body, resp.StatusCode, nil
}

// rtcTransportEntry is one transport object; only LiveKit is used.
type rtcTransportEntry struct {
	Type       string `json:"type"`
	ServiceURL string `json:"livekit_service_url"`
}

// DecodeRTCTransports reads an /rtc/transports answer and returns the
// first usable LiveKit transport's service URL.
func DecodeRTCTransports(body []byte) (string, error) {
	var r struct {
		Transports []json.RawMessage `json:"rtc_transports"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return "", fmt.Errorf("not an rtc/transports answer: %w", err)
	}
	return firstLiveKit(r.Transports, "rtc_transports")
}

// DecodeRTCFoci reads a client .well-known and returns the first usable
// LiveKit transport of its org.matrix.msc4143.rtc_foci.
func DecodeRTCFoci(body []byte) (string, error) {
	var r struct {
		Foci json.RawMessage `json:"org.matrix.msc4143.rtc_foci"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return "", fmt.Errorf("not a client .well-known: %w", err)
	}
	if len(r.Foci) == 0 || string(r.Foci) == "null" {
		return "", errors.New("no org.matrix.msc4143.rtc_foci")
	}
	var list []json.RawMessage
	if err := json.Unmarshal(r.Foci, &list); err != nil {
		return "", errors.New("org.matrix.msc4143.rtc_foci is not a list")
	}
	return firstLiveKit(list, "org.matrix.msc4143.rtc_foci")
}

// firstLiveKit returns the service URL of the first entry of type
// "livekit" whose livekit_service_url is an http(s) URL. Other entries
// (other transport types, malformed ones) are passed over, not fatal: a
// list may hold transports of kinds the intercom does not speak.
func firstLiveKit(list []json.RawMessage, what string) (string, error) {
	var bad error
	for _, raw := range list {
		var e rtcTransportEntry
		if json.Unmarshal(raw, &e) != nil || e.Type != "livekit" {
			continue
		}
		if err := serviceURL(e.ServiceURL); err != nil {
			bad = err
			continue
		}
		return e.ServiceURL, nil
	}
	if bad != nil {
		return "", fmt.Errorf("%s: %w", what, bad)
	}
	return "", fmt.Errorf("%s has no livekit transport", what)
}

// serviceURL accepts a JWT service URL: http(s), a host, no credentials.
// The intercom posts its OpenID token there, and names it to residents.
func serviceURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case s == "" || err != nil:
		return fmt.Errorf("livekit_service_url %q is not a URL", s)
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("livekit_service_url %q is not http(s)", s)
	case u.Host == "":
		return fmt.Errorf("livekit_service_url %q has no host", s)
	case u.User != nil:
		return fmt.Errorf("livekit_service_url %q carries credentials", s)
	}
	return nil
}

// DiscoverRTCTransport asks the homeserver for its MatrixRTC transport
// with the session's login (RTCDiscovery.Discover).
func (s *Session) DiscoverRTCTransport(ctx context.Context) (RTCTransport, error) {
	c, err := s.client()
	if err != nil {
		return RTCTransport{}, err
	}
	_, server, _ := strings.Cut(string(c.UserID), ":")
	return RTCDiscovery{Homeserver: s.hsURL.String(), ServerName: server, AccessToken: c.AccessToken, HTTP: s.http}.Discover(ctx)
}
