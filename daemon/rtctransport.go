package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/rtc"
	"github.com/doorbell/intercom/internal/runloop"
	"github.com/doorbell/intercom/matrix"
	mlivekit "github.com/doorbell/intercom/media/livekit"
	"github.com/doorbell/intercom/provisioning"
)

// With matrixrtc.enabled and no livekit_service_url the intercom's
// MatrixRTC transport is the one its homeserver advertises
// (provisioning.MatrixRTC.Discovers): asked at start, off the path to
// READY=1, and again with backoff while the homeserver is unreachable or
// advertises nothing. Until one is known MatrixRTC rings nobody (the
// other paths ring as ever), which /api/status shows and the log says
// once.

const (
	// transportRetryBase and transportRetryMax: the backoff while nothing
	// is known. An installer who just configured the homeserver sees the
	// intercom take it up within minutes.
	transportRetryBase = 5 * time.Second
	transportRetryMax  = 5 * time.Minute
	// transportRecheck: how often a known transport is asked again, in
	// case the homeserver moved it. A failed recheck keeps it.
	transportRecheck = time.Hour
)

// errNoTransport is the matrixrtc path's answer to a ring while no
// transport is known: the ring coordinator logs it and rings the others.
var errNoTransport = errors.New("matrixrtc: no MatrixRTC transport known yet (see /api/status matrix.matrixrtc.transport)")

// rtcTransport is the JWT service in use, configured or discovered.
type rtcTransport struct {
	mu      sync.Mutex
	st      transportStatus
	changed func(serviceURL string) // tells the runner; nil in tests
}

// transportStatus is matrix.matrixrtc.transport in /api/status.
type transportStatus struct {
	ServiceURL string `json:"service_url"`
	// Source is "config", or the URL the homeserver advertised it at.
	Source string `json:"source,omitempty"`
	// Problem says why none is known (or why the last check failed).
	Problem string `json:"problem,omitempty"`
}

func (t *rtcTransport) status() transportStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st
}

func (t *rtcTransport) url() string { return t.status().ServiceURL }

func (t *rtcTransport) known() bool { return t.url() != "" }

// set makes serviceURL the transport. Only one goroutine sets it (the
// discovery, or newDaemonRTC before anything runs).
func (t *rtcTransport) set(serviceURL, source string) (changed bool) {
	changed = t.url() != serviceURL
	if changed && t.changed != nil {
		// The runner first: a ring that known() lets through below must
		// reach its machine after the transport does.
		t.changed(serviceURL)
	}
	t.mu.Lock()
	t.st = transportStatus{ServiceURL: serviceURL, Source: source}
	t.mu.Unlock()
	return changed
}

func (t *rtcTransport) failed(problem string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.st.Problem = problem
}

// discoverer asks the homeserver for its transport: the session.
type discoverer interface {
	DiscoverRTCTransport(ctx context.Context) (matrix.RTCTransport, error)
}

// discoverTransport keeps t filled from the homeserver until ctx ends.
func discoverTransport(ctx context.Context, d discoverer, t *rtcTransport, log *slog.Logger) {
	retry := runloop.Backoff{Base: transportRetryBase, Max: transportRetryMax, Jitter: rand.Int64N}
	warned := false
	for {
		found, err := d.DiscoverRTCTransport(ctx)
		if ctx.Err() != nil {
			return
		}
		var next time.Duration
		switch {
		case err == nil:
			retry.Reset()
			next = transportRecheck
			if t.set(found.ServiceURL, found.Source) {
				log.Info("MatrixRTC transport discovered from the homeserver", "service_url", found.ServiceURL, "source", found.Source)
			}
			warned = false
		case t.known():
			// Keep what works; the homeserver may be away for a while.
			next = retry.Next()
			t.failed("last check: " + err.Error())
			log.Debug("MatrixRTC transport check failed; keeping the one known", "err", err, "retry_in", next)
		default:
			next = retry.Next()
			problem := err.Error() + "; MatrixRTC rings nobody until the homeserver advertises a transport"
			if errors.Is(err, matrix.ErrRTCUnreachable) {
				problem = err.Error() + "; MatrixRTC rings nobody until the homeserver can be asked"
			}
			t.failed(problem)
			if !warned {
				log.Warn("MatrixRTC ringing unavailable: no transport yet; asking the homeserver again with backoff",
					"err", err, "retry_in", next)
				warned = true
			} else {
				log.Debug("MatrixRTC transport still unknown", "err", err, "retry_in", next)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
	}
}

// rtcLine is the matrixrtc path as the ring coordinator sees it: the
// runner, refusing rings while no transport is known (a press that
// reached the runner then would sit in its inbox, or publish a
// membership nobody can join).
type rtcLine struct {
	*rtc.Runner
	transport *rtcTransport
}

func (l rtcLine) Ring(ctx context.Context, residents []callengine.Resident) error {
	if !l.transport.known() {
		return errNoTransport
	}
	return l.Runner.Ring(ctx, residents)
}

// transportTokens asks the JWT service known at the time of each join.
type transportTokens struct {
	tokens    *mlivekit.ServiceTokens
	transport *rtcTransport
}

func (t transportTokens) Token(ctx context.Context, room callengine.RoomID) (mlivekit.Token, error) {
	return t.tokens.TokenFrom(ctx, t.transport.url(), room, t.tokens.Endpoint)
}

// describeTimeout bounds the discovery check-config and provision make.
const describeTimeout = 20 * time.Second

// DescribeRTCTransport says, for check-config and provision, which
// MatrixRTC transport the intercom would use: the configured one, or what
// the homeserver advertises now (asked with the access token kept in
// state_dir or configured; without one only the .well-known can answer).
// It returns "" with MatrixRTC off. It changes nothing.
func DescribeRTCTransport(ctx context.Context, cfg *provisioning.Config) string {
	mc := cfg.MatrixRTC
	switch {
	case !mc.Enabled:
		return ""
	case !mc.Discovers():
		how := "tokens from its /sfu/get"
		if mc.SelfMinted() {
			how = "tokens self-minted for " + mc.LiveKit.URL
		}
		return fmt.Sprintf("matrixrtc: transport from the configuration: %s (%s)", mc.ServiceURL, how)
	}
	token := cfg.Matrix.AccessToken
	if c, ok, err := provisioning.PeekCredentials(cfg.StateDir); err == nil && ok && c.AccessToken != "" &&
		c.UserID == cfg.Matrix.UserID {
		token = c.AccessToken
	}
	_, server, _ := strings.Cut(cfg.Matrix.UserID, ":")
	ctx, cancel := context.WithTimeout(ctx, describeTimeout)
	defer cancel()
	d := matrix.RTCDiscovery{Homeserver: cfg.Matrix.Homeserver, ServerName: server, AccessToken: token,
		HTTP: &http.Client{}, Timeout: describeTimeout / 4}
	found, err := d.Discover(ctx)
	if err == nil {
		return fmt.Sprintf("matrixrtc: transport discovered from the homeserver: %s (via %s)", found.ServiceURL, found.Source)
	}
	var de *matrix.RTCDiscoveryError
	if !errors.As(err, &de) {
		return "matrixrtc: transport not checked: " + err.Error()
	}
	if de.Unreachable {
		return fmt.Sprintf("matrixrtc: the homeserver %s could not be reached (offline?), so its transport is unknown; "+
			"the intercom asks it at start and rings through MatrixRTC once it answers with one (%s)",
			cfg.Matrix.Homeserver, strings.Join(de.Tried, "; "))
	}
	login := ""
	if de.NeedsLogin {
		login = " (not logged in yet, so /rtc/transports could not be asked: run intercom provision)"
	}
	return fmt.Sprintf("matrixrtc: none advertised%s: MatrixRTC ringing stays off until the homeserver advertises a LiveKit transport "+
		"(Synapse: experimental_features.msc4143_enabled with matrix_rtc.transports; any homeserver: "+
		"org.matrix.msc4143.rtc_foci in https://%s/.well-known/matrix/client) or matrixrtc.livekit_service_url is set (%s)",
		login, wellKnownHostOf(server), strings.Join(de.Tried, "; "))
}

// wellKnownHostOf is a server name without its port.
func wellKnownHostOf(server string) string {
	if h, _, err := net.SplitHostPort(server); err == nil {
		return h
	}
	return server
}
