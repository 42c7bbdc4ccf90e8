package matrix

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix"

	"github.com/doorbell/intercom/internal/runloop"
)

const (
	// Backoff of the sync loop and of start-up requests (Login,
	// EnsureDirectRooms): exponential from loopBackoffBase, capped at
	// loopBackoffMax (start-up) or syncBackoffMax (the sync loop), with
	// equal jitter, reset on success. Start-up waits as little as the
	// sync loop, for the same reason: the door already runs while the
	// intercom logs in (issue 15), and a visitor pressing meanwhile is
	// rung once login and the rooms are through.
	loopBackoffBase = 500 * time.Millisecond
	loopBackoffMax  = syncBackoffMax

	// syncBackoffMax caps the sync loop's wait between failed /syncs, so
	// that the intercom is back within about 5 s of its homeserver: equal
	// jitter makes the capped wait 2–4 s, the first /sync after a
	// failure asks for an immediate answer, and a homeserver restarting
	// on the same machine answers within half a second of starting. That
	// is one cheap request (a refused connection, a proxy's 502, an
	// incremental /sync) every 3 s on average per intercom during an
	// outage, spread by the jitter so that a homeserver serving many
	// intercoms sees them trickle in, not arrive in lockstep, when it
	// returns. A longer cap would spare it little and leave a visitor at
	// the door unannounced for longer.
	syncBackoffMax = 4 * time.Second
	// rateLimitMax caps how long the sync loop honours a 429's wait
	// (retry_after_ms or Retry-After); above syncBackoffMax it is the
	// homeserver asking to be spared, not an outage.
	rateLimitMax = 30 * time.Second

	// Sending a call event is bounded: the call engine has its own timers
	// (invite lifetime, candidate flushes), so a send gives up after a few
	// seconds rather than keep an invite queued for minutes.
	sendAttempts       = 5
	sendBackoffBase    = 250 * time.Millisecond
	sendBackoffMax     = 2 * time.Second
	sendMaxRetryAfter  = 10 * time.Second
	createRoomAttempts = 3
)

// transient classifies err from a mautrix request. It reports whether the
// request may succeed if repeated (connection errors, timeouts of one
// attempt, 429, 5xx) and, for 429, the wait the server asked for.
func transient(err error) (retry bool, after time.Duration) {
	if runloop.IsPermanent(err) {
		return false, 0
	}
	var herr mautrix.HTTPError
	if !errors.As(err, &herr) {
		return false, 0
	}
	if herr.Response == nil {
		// No response at all: connection refused or reset, DNS, or the
		// attempt's own deadline. Cancellation of the caller's context is
		// checked by the callers before they retry.
		return herr.WrappedError != nil && !errors.Is(herr.WrappedError, context.Canceled), 0
	}
	code := herr.Response.StatusCode
	switch {
	case code == http.StatusTooManyRequests:
		return true, retryAfter(herr)
	case code >= 500:
		return true, 0
	}
	return false, 0
}

// unreachable reports whether err from a mautrix request means the
// homeserver did not answer: no response at all (connection refused or
// reset, DNS, a timeout) or a 5xx, which a reverse proxy gives when the
// homeserver behind it is down.
func unreachable(err error) bool {
	var herr mautrix.HTTPError
	if !errors.As(err, &herr) {
		return false
	}
	if herr.Response == nil {
		return herr.WrappedError != nil && !errors.Is(herr.WrappedError, context.Canceled)
	}
	return herr.Response.StatusCode >= 500
}

// statusCode is the HTTP status of a failed mautrix request, 0 if none.
func statusCode(err error) int {
	var herr mautrix.HTTPError
	if errors.As(err, &herr) && herr.Response != nil {
		return herr.Response.StatusCode
	}
	return 0
}

// retryAfter reads the wait of a 429 answer: retry_after_ms in the body
// (Matrix spec, "Rate limiting") or the Retry-After header in seconds
// (spec v1.10 and later); 0 if neither is given.
func retryAfter(herr mautrix.HTTPError) time.Duration {
	if herr.RespError != nil {
		if ms, ok := herr.RespError.ExtraData["retry_after_ms"].(float64); ok && ms > 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	if h := strings.TrimSpace(herr.Response.Header.Get("Retry-After")); h != "" {
		if secs, err := strconv.Atoi(h); err == nil && secs > 0 {
			return time.Duration(secs) * time.Second
		}
	}
	return 0
}

// isUnknownToken reports whether err says the access token is no longer
// valid (Matrix spec, "Soft logout" / M_UNKNOWN_TOKEN).
func isUnknownToken(err error) bool { return errors.Is(err, mautrix.MUnknownToken) }

// retryPolicy tells do how to wait between attempts.
type retryPolicy struct {
	attempts      int             // 0: until ctx ends
	backoff       runloop.Backoff // its Jitter is the session's
	maxRetryAfter time.Duration   // a longer 429 wait ends the retries; 0: no limit but backoff.Max
}

var (
	loopPolicy = retryPolicy{backoff: runloop.Backoff{Base: loopBackoffBase, Max: loopBackoffMax}}
	sendPolicy = retryPolicy{attempts: sendAttempts, backoff: runloop.Backoff{Base: sendBackoffBase, Max: sendBackoffMax}, maxRetryAfter: sendMaxRetryAfter}
)

// do runs op with a per-attempt deadline and retries transient failures
// according to p. It returns op's last error, or the context's cause if ctx
// ended while waiting.
//
// It is not runloop.Retry: the wait can come from the server (429
// Retry-After), the attempts are counted, and the errors are classified
// (transient) rather than marked by op.
func (s *Session) do(ctx context.Context, what string, p retryPolicy, op func(ctx context.Context) error) error {
	b := p.backoff
	b.Jitter = s.jitter
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, requestTimeout)
		err := op(actx)
		cancel()
		if err == nil {
			s.startFailed(what, nil)
			return nil
		}
		if ctx.Err() != nil {
			return errors.Join(err, context.Cause(ctx))
		}
		s.startFailed(what, err)
		retry, after := transient(err)
		if !retry || (p.attempts > 0 && attempt >= p.attempts) {
			return err
		}
		wait := b.Next()
		if after > 0 {
			if p.maxRetryAfter > 0 && after > p.maxRetryAfter {
				return err
			}
			wait = after
			if p.maxRetryAfter == 0 && wait > max(b.Max, rateLimitMax) {
				wait = max(b.Max, rateLimitMax)
			}
		}
		s.log.Warn("matrix request failed, retrying", "op", what, "attempt", attempt, "delay", wait, "err", err)
		if serr := s.sleep(ctx, wait); serr != nil {
			return errors.Join(err, serr)
		}
	}
}

// startFailed records the outcome of a request made before the first
// successful /sync (logging in, the residents' rooms) in the status, as
// the sync loop does for /sync: until the intercom has synced once, these
// are what tell whether the homeserver answers. err nil: it answered.
// Later requests leave the status to the sync loop.
func (s *Session) startFailed(what string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.status
	if !st.LastSync.IsZero() {
		return
	}
	if err == nil {
		st.ConsecutiveFailures, st.LastError, st.UnreachableSince = 0, "", time.Time{}
		return
	}
	st.ConsecutiveFailures++
	st.LastError = what + ": " + err.Error()
	switch {
	case !unreachable(err):
		st.UnreachableSince = time.Time{}
	case st.UnreachableSince.IsZero():
		st.UnreachableSince = s.now()
	}
}
