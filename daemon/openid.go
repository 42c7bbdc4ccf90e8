package daemon

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/doorbell/intercom/matrix"
)

// openIDCache keeps a Matrix OpenID token for the JWT service, fetched
// ahead of the press and refreshed at half its lifetime, so that a press
// does not ask the homeserver for one: the token request would otherwise
// leave at the same moment as the call membership the ring must follow
// (issue 18), and the SFU connection would wait a round trip longer for
// it. A token is a bearer proof of the intercom's user ID, valid for its
// expires_in (an hour on Synapse and Dendrite) however often the service
// checks it, and it stays in memory only.
type openIDCache struct {
	fetch func(context.Context) (matrix.OpenIDToken, error)
	log   *slog.Logger

	mu    sync.Mutex
	tok   matrix.OpenIDToken
	until time.Time // handed out before this (expiry less openIDMargin)
	fresh time.Time // refreshed after this (half the lifetime)
}

const (
	// openIDMargin is how much of its lifetime a token must have left to
	// be handed out: the service checks it at once, but a slow request
	// should not carry one about to expire.
	openIDMargin = time.Minute
	// openIDRetryMin and openIDRetryMax bound Run's back-off while the
	// homeserver refuses or is away; Get still asks it itself meanwhile.
	openIDRetryMin = 5 * time.Second
	openIDRetryMax = 5 * time.Minute
)

// Get returns a cached token with at least openIDMargin left, else asks
// the homeserver (concurrent callers share one request).
func (c *openIDCache) Get(ctx context.Context) (any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Now().Before(c.until) {
		return c.tok, nil
	}
	asked := time.Now()
	tok, err := c.fetch(ctx)
	if err != nil {
		return nil, err
	}
	c.storeLocked(tok, asked)
	return tok, nil
}

// storeLocked keeps tok, asked for at asked, unless a token asked for
// later is kept already. Its lifetime counts from when it was asked for:
// the homeserver's clock started no earlier.
func (c *openIDCache) storeLocked(tok matrix.OpenIDToken, asked time.Time) {
	life := time.Duration(tok.ExpiresIn) * time.Second
	if fresh := asked.Add(life / 2); fresh.After(c.fresh) {
		c.tok, c.until, c.fresh = tok, asked.Add(life-openIDMargin), fresh
	}
}

// Run keeps a token ready until ctx ends: one now, then a new one at half
// the current one's lifetime, with back-off while that fails. Presses are
// never held up by it: the request is made outside the lock, and the token
// in hand stays valid meanwhile. A token too short-lived to hand out is
// not asked for again before the longest back-off.
func (c *openIDCache) Run(ctx context.Context) {
	retry := openIDRetryMin
	for {
		c.mu.Lock()
		wait := time.Until(c.fresh)
		c.mu.Unlock()
		if wait <= 0 {
			asked := time.Now()
			tok, err := c.fetch(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				c.log.Debug("OpenID token not fetched ahead; a press asks for one", "err", err, "retry_in", retry)
				wait, retry = retry, min(2*retry, openIDRetryMax)
			} else {
				retry = openIDRetryMin
				c.mu.Lock()
				c.storeLocked(tok, asked)
				wait = time.Until(c.fresh)
				c.mu.Unlock()
				if wait <= 0 || time.Duration(tok.ExpiresIn)*time.Second <= openIDMargin {
					wait = openIDRetryMax
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
