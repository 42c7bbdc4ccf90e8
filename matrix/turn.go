package matrix

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"maunium.net/go/mautrix"

	"github.com/doorbell/intercom/internal/runloop"
)

const (
	// turnCheckInterval is how often the homeserver is asked again when it
	// hands out no TURN server, and the most credentials are refreshed
	// ahead of their expiry. matrix-js-sdk polls every 10 minutes and
	// refetches once less than 10 minutes of the ttl remain
	// (client.ts TURN_CHECK_INTERVAL, checkTurnServers).
	turnCheckInterval = 10 * time.Minute
	// turnMinRefresh keeps a homeserver that hands out tiny ttls from being
	// asked in a tight loop.
	turnMinRefresh = 5 * time.Second
	// Failed fetches are retried from turnRetryBase doubling to
	// turnCheckInterval; the credentials in hand stay in use until they
	// expire.
	turnRetryBase = 5 * time.Second
)

// TURNServer is a set of TURN URIs and their credentials, as the
// homeserver hands them out (Matrix spec, VoIP module, "TURN server":
// GET /_matrix/client/v3/voip/turnServer; shared/matrix-voip.md §2).
type TURNServer struct {
	URIs     []string
	Username string
	Password string
	// TTL is how long the credentials were said to be valid; Expires is
	// when that runs out by this machine's clock (zero: never).
	TTL     time.Duration
	Expires time.Time
}

// FetchTURN asks the homeserver once for TURN credentials. A homeserver
// without TURN answers {} (Dendrite, unless turn_user_lifetime, turn_uris
// and turn_shared_secret are all set), or 404 M_UNRECOGNIZED where the
// endpoint is off: both give ok false and no error.
func (s *Session) FetchTURN(ctx context.Context) (srv TURNServer, ok bool, err error) {
	c, err := s.client()
	if err != nil {
		return TURNServer{}, false, err
	}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	var resp mautrix.RespTurnServer
	_, err = c.MakeFullRequest(rctx, mautrix.FullRequest{
		Method:       http.MethodGet,
		URL:          c.BuildClientURL("v3", "voip", "turnServer"),
		ResponseJSON: &resp,
		MaxAttempts:  1,
	})
	switch code := statusCode(err); {
	case err == nil:
	case code == http.StatusNotFound || code == http.StatusForbidden:
		return TURNServer{}, false, nil
	default:
		return TURNServer{}, false, fmt.Errorf("get voip/turnServer: %w", err)
	}
	uris := slices.DeleteFunc(slices.Clone(resp.URIs), func(u string) bool { return u == "" })
	if len(uris) == 0 {
		return TURNServer{}, false, nil
	}
	srv = TURNServer{URIs: uris, Username: resp.Username, Password: resp.Password}
	if resp.TTL > 0 {
		srv.TTL = time.Duration(resp.TTL) * time.Second
		srv.Expires = s.now().Add(srv.TTL)
	}
	return srv, true, nil
}

// TURNServers returns the credentials RunTURN holds now: nil before the
// first fetch, when the homeserver has none, or once they expired without
// a successful refresh.
func (s *Session) TURNServers() []TURNServer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.turn == nil || (!s.turn.Expires.IsZero() && !s.now().Before(s.turn.Expires)) {
		return nil
	}
	t := *s.turn
	t.URIs = slices.Clone(t.URIs)
	return []TURNServer{t}
}

// RunTURN fetches TURN credentials and keeps them fresh until ctx ends,
// calling update (on its own goroutine, never concurrently) with every new
// set, and with nil when the homeserver stops handing them out or they
// expire. Credentials are refreshed when min(10 min, ttl/2) of their ttl
// remains; failed fetches are retried with backoff up to every 10 minutes.
// It returns ctx's cause.
func (s *Session) RunTURN(ctx context.Context, update func([]TURNServer)) error {
	failures := 0
	retry := runloop.Backoff{Base: turnRetryBase, Max: turnCheckInterval, Jitter: s.jitter}
	var have *TURNServer
	set := func(t *TURNServer) {
		s.mu.Lock()
		s.turn = t
		s.mu.Unlock()
		if t == nil {
			update(nil)
			return
		}
		cp := *t
		update([]TURNServer{cp})
	}
	for {
		srv, ok, err := s.FetchTURN(ctx)
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		var next time.Duration
		switch {
		case err != nil:
			failures++
			next = retry.Next()
			if failures == 1 {
				s.log.Warn("fetch TURN credentials failed", "err", err, "retry_in", next)
			} else {
				s.log.Debug("fetch TURN credentials failed", "err", err, "failures", failures, "retry_in", next)
			}
		case !ok:
			failures = 0
			retry.Reset()
			next = turnCheckInterval
			if have != nil {
				s.log.Info("homeserver no longer hands out TURN servers")
				have = nil
				set(nil)
			}
		default:
			failures = 0
			retry.Reset()
			next = turnCheckInterval
			if srv.TTL > 0 {
				next = max(srv.TTL-min(turnCheckInterval, srv.TTL/2), turnMinRefresh)
			}
			s.log.Info("TURN credentials", "uris", srv.URIs, "ttl", srv.TTL, "refresh_in", next)
			have = &srv
			set(have)
		}
		// Sleep until the next fetch; credentials that expire first are
		// dropped at their expiry, as a TURN server refuses them anyway.
		for {
			wait := next
			expiring := have != nil && !have.Expires.IsZero()
			if expiring {
				if left := have.Expires.Sub(s.now()); left < wait {
					wait = max(left, 0)
				} else {
					expiring = false
				}
			}
			start := s.now()
			if s.sleep(ctx, wait) != nil {
				return context.Cause(ctx)
			}
			if !expiring {
				break
			}
			s.log.Warn("TURN credentials expired before they could be refreshed")
			have = nil
			set(nil)
			next -= s.now().Sub(start)
			if next <= 0 {
				break
			}
		}
	}
}
