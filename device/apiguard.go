package device

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The rate limit of POST /api/ring per client: a burst of DefaultRingBurst
// rings, then one per DefaultRingEvery. A visitor or a script presses a
// few times; a flood rings residents' phones at most six times a minute.
const (
	DefaultRingBurst = 5
	DefaultRingEvery = 10 * time.Second
)

// maxRingClients bounds the clients the ring limiter remembers, so a flood
// from many addresses cannot grow it without end.
const maxRingClients = 1024

// GuardConfig says who may use the local API (issue 19, finding 7).
type GuardConfig struct {
	// Listen is the address the API is bound to, host:port, with the
	// port actually bound. Its host decides which Host headers are the
	// API's own: loopback names for a loopback address, any IP address
	// for an unspecified one (0.0.0.0, ::, empty), else that address or
	// name.
	Listen string
	// Hostnames are further names the API is addressed by (api.hostnames:
	// an mDNS name, the name a reverse proxy forwards), with any port.
	Hostnames []string
	// Token, when set, must come with every request as
	// "Authorization: Bearer <token>" (RFC 6750, section 2.1). It is
	// required unless Listen is a loopback address.
	Token string
	// Session is the seam for the intercom's coming web page: when set,
	// it reports whether r carries a valid session of that page (a
	// cookie its login set), which then stands in for the bearer token.
	// It is asked only when a token is configured, and only after the
	// Host, Origin and Fetch Metadata checks, so a cookie alone never
	// authorises a request from another site; the cookie should still be
	// HttpOnly and SameSite=Strict.
	Session func(r *http.Request) bool
	// Public, when set, reports the requests that need no token: what
	// the web page needs before its login (the page, its assets, the
	// login request itself, which carries the token in its body). They
	// still pass the Host, Origin and Fetch Metadata checks.
	Public func(r *http.Request) bool
	// RingBurst and RingEvery are the token bucket of POST /api/ring per
	// client address (an IPv6 client by its /64); defaults
	// DefaultRingBurst and DefaultRingEvery.
	RingBurst int
	RingEvery time.Duration
	Logger    *slog.Logger

	now func() time.Time // tests
}

// guard is the middleware Guard returns.
type guard struct {
	next     http.Handler
	hosts    hostRule
	token    bool
	tokenSum [sha256.Size]byte
	session  func(*http.Request) bool
	public   func(*http.Request) bool
	rings    *ringLimiter
	log      *slog.Logger
	now      func() time.Time
}

// Guard wraps the local API's handler (Intercom.Handler) so that it
// serves only requests that are addressed to it, come from no other web
// origin, carry the token when one is configured, and, for rings, stay
// within the client's rate. It refuses (ErrOpenAPI) an API listening
// beyond loopback without a token.
//
// The checks, in order:
//   - Host must be the API's own (GuardConfig.Listen, Hostnames): a web
//     page whose DNS name was rebound to the board sends its own name,
//     so it can neither read the status nor the snapshot (403).
//   - Origin, when present, must be the API's own origin (the Host the
//     request was sent to, as Go's http.CrossOriginProtection compares
//     it), and Sec-Fetch-Site, when present, same-origin or none (W3C
//     Fetch Metadata Request Headers): browsers send them with requests
//     made by other sites' pages, forms and images (403).
//   - The bearer token, or the page's session (401); for the WHEP
//     endpoint also the token as a Basic password. Public requests (the
//     page before its login) need none.
//   - POST /api/ring: the client's token bucket (429 with Retry-After,
//     RFC 6585 section 4). Refused requests take nothing from it.
func Guard(next http.Handler, cfg GuardConfig) (http.Handler, error) {
	hosts, err := newHostRule(cfg.Listen, cfg.Hostnames)
	if err != nil {
		return nil, err
	}
	if !hosts.loopback && cfg.Token == "" {
		return nil, fmt.Errorf("api listen %q: %w", cfg.Listen, ErrOpenAPI)
	}
	if cfg.RingBurst <= 0 {
		cfg.RingBurst = DefaultRingBurst
	}
	if cfg.RingEvery <= 0 {
		cfg.RingEvery = DefaultRingEvery
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	g := &guard{
		next: next, hosts: hosts, session: cfg.Session, public: cfg.Public, log: cfg.Logger, now: cfg.now,
		rings: newRingLimiter(cfg.RingBurst, cfg.RingEvery),
	}
	if cfg.Token != "" {
		g.token, g.tokenSum = true, sha256.Sum256([]byte(cfg.Token))
	}
	return g, nil
}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	refuse := func(code int, reason, msg string) {
		// Debug: a flood of refused requests must not flood the journal;
		// the client reads the reason in the response.
		g.log.Debug("api request refused", "reason", reason, "remote_addr", r.RemoteAddr,
			"method", r.Method, "path", r.URL.Path, "host", r.Host)
		http.Error(w, msg, code)
	}
	switch {
	case !g.hosts.allowed(r.Host):
		refuse(http.StatusForbidden, "host", "forbidden: the request is not addressed to this API (see api.hostnames)")
		return
	case !sameOrigin(r):
		refuse(http.StatusForbidden, "origin", "forbidden: cross-origin request")
		return
	case !g.authorized(r) && (g.public == nil || !g.public(r)):
		w.Header().Set("WWW-Authenticate", `Bearer realm="intercom"`)
		refuse(http.StatusUnauthorized, "token", "unauthorized: send Authorization: Bearer <the token of api.token_file>")
		return
	}
	if r.Method == http.MethodPost && r.URL.Path == "/api/ring" {
		if ok, wait := g.rings.take(clientKey(r.RemoteAddr), g.now()); !ok {
			// Whole seconds (RFC 9110, section 10.2.3), rounded up, after
			// rounding away the float arithmetic's nanoseconds.
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(wait.Round(time.Millisecond).Seconds())))))
			refuse(http.StatusTooManyRequests, "ring rate", "too many rings from this client")
			return
		}
	}
	g.next.ServeHTTP(w, r)
}

// authorized checks the bearer token in constant time (both sides hashed,
// so not even the length is compared early), else the page's session.
func (g *guard) authorized(r *http.Request) bool {
	if !g.token {
		return true
	}
	// RFC 9110, section 11.1: the scheme is case-insensitive.
	if scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		if g.isToken(strings.TrimSpace(cred)) {
			return true
		}
	}
	// WHEP clients that cannot set a header (go2rtc's WHEP source sends
	// none) take the token as the password of the URL's user info, which
	// Go's HTTP client (and curl) turn into Basic credentials (RFC 7617);
	// the user name is ignored. Only for the WHEP endpoint: a browser may
	// keep Basic credentials and send them by itself, and the Origin checks
	// above are what make that harmless.
	if strings.HasPrefix(r.URL.Path, WHEPPath) {
		if _, pass, ok := r.BasicAuth(); ok && g.isToken(pass) {
			return true
		}
	}
	return g.session != nil && g.session(r)
}

// WHEPPath is where the WHEP endpoint (package device/whep) is served:
// the one place Basic credentials are taken.
const WHEPPath = "/api/whep"

// isToken compares cred with the token in constant time, on SHA-256 sums
// so that not even the length is compared early.
func (g *guard) isToken(cred string) bool {
	sum := sha256.Sum256([]byte(cred))
	return subtle.ConstantTimeCompare(sum[:], g.tokenSum[:]) == 1
}

// sameOrigin refuses what a browser sends on behalf of another origin:
// an Origin header (RFC 6454, section 7; sent with every POST and every
// CORS request) other than the API's own, which is the Host the request
// was sent to, scheme aside, as http.CrossOriginProtection does; and a
// Sec-Fetch-Site of cross-site or same-site (W3C Fetch Metadata Request
// Headers), which also covers an <img> or <a> on another site's page
// that sends no Origin. Clients other than browsers send neither.
func sameOrigin(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

// hostRule is which Host headers name the API.
type hostRule struct {
	port     string          // the listen port; a Host without one means 80
	loopback bool            // listening on loopback: loopback names only
	anyAddr  bool            // unspecified address: any IP address
	addr     netip.Addr      // a specific address
	name     string          // a DNS name listened on
	names    map[string]bool // GuardConfig.Hostnames, normalised
}

func newHostRule(listen string, hostnames []string) (hostRule, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return hostRule{}, fmt.Errorf("api listen %q: %w", listen, err)
	}
	h := hostRule{port: port, names: map[string]bool{}}
	for _, n := range hostnames {
		h.names[normalHost(n)] = true
	}
	switch a, err := netip.ParseAddr(host); {
	case host == "":
		h.anyAddr = true
	case err == nil && a.IsUnspecified():
		h.anyAddr = true
	case err == nil && a.Unmap().IsLoopback():
		h.loopback = true
	case err == nil:
		h.addr = a.Unmap()
	case normalHost(host) == "localhost":
		h.loopback = true
	default:
		h.name = normalHost(host)
	}
	return h, nil
}

// allowed reports whether a request with this Host header is addressed to
// the API. Any IP address is safe to accept where the API listens on all
// of them: DNS rebinding needs a name, and a browser that addressed an IP
// address sends it as the Host, so the page is the API's own.
func (h hostRule) allowed(hostHeader string) bool {
	if hostHeader == "" {
		return false
	}
	name, port, err := net.SplitHostPort(hostHeader)
	if err != nil {
		name, port = hostHeader, "80"
	}
	name = normalHost(name)
	if h.names[name] {
		return true
	}
	if port != h.port {
		return false
	}
	if a, err := netip.ParseAddr(name); err == nil {
		a = a.Unmap()
		switch {
		case h.loopback:
			return a.IsLoopback()
		case h.anyAddr:
			return true
		default:
			return a == h.addr
		}
	}
	if name == "localhost" {
		return h.loopback || h.anyAddr
	}
	return h.name != "" && name == h.name
}

// normalHost lower-cases a host name and drops a final dot and IPv6
// brackets, so that equal names compare equal.
func normalHost(s string) string {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	return strings.TrimSuffix(strings.ToLower(s), ".")
}

// clientKey is the rate limiter's idea of a client: its IPv4 address, or
// the /64 of its IPv6 address (one host is free to use any address of
// its /64). Addresses that do not parse share one key.
func clientKey(remoteAddr string) netip.Prefix {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return netip.Prefix{}
	}
	a := ap.Addr().Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// ringLimiter is a token bucket per client.
type ringLimiter struct {
	burst float64
	every time.Duration

	mu       sync.Mutex
	clients  map[netip.Prefix]*bucket
	overflow bucket // shared by new clients while clients is full
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newRingLimiter(burst int, every time.Duration) *ringLimiter {
	return &ringLimiter{burst: float64(burst), every: every, clients: map[netip.Prefix]*bucket{},
		overflow: bucket{tokens: float64(burst)}}
}

// refill brings b's tokens up to now.
func (l *ringLimiter) refill(b *bucket, now time.Time) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(l.burst, b.tokens+float64(d)/float64(l.every))
	}
	b.at = now
}

// take spends one of key's tokens, or says how long until there is one.
func (l *ringLimiter) take(key netip.Prefix, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.clients[key]
	if b == nil {
		if len(l.clients) >= maxRingClients {
			// A full bucket is a client the limiter may forget: it
			// would start full anyway.
			for k, c := range l.clients {
				if l.refill(c, now); c.tokens >= l.burst {
					delete(l.clients, k)
				}
			}
		}
		if len(l.clients) < maxRingClients {
			b = &bucket{tokens: l.burst, at: now}
			l.clients[key] = b
		} else {
			b = &l.overflow
		}
	}
	l.refill(b, now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) * float64(l.every))
}
