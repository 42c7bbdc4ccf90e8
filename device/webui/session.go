package webui

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"sync"
	"time"
)

// CookieName is the page's session cookie.
const CookieName = "intercom_session"

// CSRFHeader carries a session's CSRF token on every state-changing
// request the page makes (the "custom request header" defence of the OWASP
// CSRF cheat sheet, on top of the guard's Origin checks): another site can
// neither read the token nor, without CORS, set the header.
const CSRFHeader = "X-CSRF-Token"

// Defaults of Config.
const (
	DefaultSessionTTL  = 7 * 24 * time.Hour
	DefaultMaxSessions = 16
)

// session is one login of the page.
type session struct {
	csrf    string
	created time.Time
}

// sessions is the in-memory store of logins: a restart logs every page
// out, which costs one login and keeps no secret on the board's disk.
type sessions struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu sync.Mutex
	m  map[[sha256.Size]byte]*session // by the SHA-256 of the cookie's value
}

func newSessions(ttl time.Duration, max int, now func() time.Time) *sessions {
	return &sessions{ttl: ttl, max: max, now: now, m: map[[sha256.Size]byte]*session{}}
}

// create makes a session and returns its cookie value and CSRF token. The
// oldest session makes room when the store is full, so a flood of logins
// (each needs the token) cannot grow it.
func (s *sessions) create() (id, csrf string) {
	id, csrf = random(), random()
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for k, v := range s.m {
		if now.Sub(v.created) >= s.ttl {
			delete(s.m, k)
		}
	}
	for len(s.m) >= s.max {
		var oldest [sha256.Size]byte
		var at time.Time
		for k, v := range s.m {
			if at.IsZero() || v.created.Before(at) {
				oldest, at = k, v.created
			}
		}
		delete(s.m, oldest)
	}
	s.m[sha256.Sum256([]byte(id))] = &session{csrf: csrf, created: now}
	return id, csrf
}

// lookup returns r's session, if its cookie names a live one. The store
// is keyed by hashes, so a lookup's time says nothing about how close a
// guess came.
func (s *sessions) lookup(r *http.Request) *session {
	c, err := r.Cookie(CookieName)
	if err != nil || c.Value == "" {
		return nil
	}
	key := sha256.Sum256([]byte(c.Value))
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.m[key]
	if sess == nil {
		return nil
	}
	if s.now().Sub(sess.created) >= s.ttl {
		delete(s.m, key)
		return nil
	}
	return sess
}

func (s *sessions) remove(r *http.Request) {
	if c, err := r.Cookie(CookieName); err == nil {
		s.mu.Lock()
		delete(s.m, sha256.Sum256([]byte(c.Value)))
		s.mu.Unlock()
	}
}

// authorize is the guard's session seam (device.GuardConfig.Session): a
// live session's cookie, and for a request that changes state (anything
// but GET, HEAD and OPTIONS, RFC 9110 section 9.2.1's safe methods) its
// CSRF token in CSRFHeader.
func (s *sessions) authorize(r *http.Request) bool {
	sess := s.lookup(r)
	if sess == nil {
		return false
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	got := r.Header.Get(CSRFHeader)
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(sess.csrf)) == 1
}

// random is 128 bits from crypto/rand, hex.
func random() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (Go 1.24)
	return hex.EncodeToString(b[:])
}
