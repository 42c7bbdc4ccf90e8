package matrix

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/internal/runloop"
)

const (
	// pollTimeout is the /sync long-poll timeout.
	pollTimeout = 30 * time.Second
	// requestTimeout bounds one non-sync request attempt.
	requestTimeout = 30 * time.Second
	// healthWindow is how recent the last successful sync must be for
	// Healthy to report true even when no /sync has failed since: a long
	// poll that hangs on a dead connection fails only after pollTimeout +
	// requestTimeout, and this catches a loop stuck for longer. A failed
	// /sync makes the session unhealthy at once, whatever this says.
	healthWindow = 2*pollTimeout + 10*time.Second
)

// Options configure a Session.
type Options struct {
	// Homeserver is the base URL of the client-server API, e.g.
	// "https://matrix.example.org".
	Homeserver string
	// UserID is the intercom's Matrix user. It is required for password
	// login and otherwise used to check stored credentials and tokens.
	UserID callengine.UserID
	// Password logs in when there are no usable stored credentials. It is
	// never stored.
	Password string
	// AccessToken is used when there are no stored credentials and no
	// password.
	AccessToken string
	// DeviceName is the device display name at login and the name of the
	// direct rooms the intercom creates. Default "Intercom".
	DeviceName string
	// Residents are the users who get a direct room, and the only users
	// whose room invites the intercom accepts.
	Residents []callengine.UserID
	// Store keeps credentials, the sync token, the filter ID and the direct
	// rooms. Required.
	Store Store
	// Logger receives the adapter's and mautrix's logs. Default: discard.
	Logger *slog.Logger
	// HTTPClient is used for all requests. Default: a client without an
	// overall timeout (each request has its own deadline).
	HTTPClient *http.Client
	// Messages makes Run deliver room messages and reactions (the door
	// commands, messages.go) besides call events.
	Messages bool
	// Encryption, when set, turns on end-to-end encryption (e2ee.go):
	// Login opens the crypto store, Run decrypts what arrives encrypted,
	// senders encrypt for encrypted rooms, and rooms the intercom creates
	// are encrypted. Nil keeps every room in the clear, and encrypted
	// rooms deaf.
	Encryption *EncryptionOptions
}

// Status describes the sync loop for the status API.
type Status struct {
	// Healthy: the last /sync succeeded, within healthWindow. A long poll
	// in flight keeps it; the first failed /sync ends it.
	Healthy             bool
	LastSync            time.Time // last successful /sync; zero if none yet
	ConsecutiveFailures int
	// SyncErrors counts the failed /syncs since start (the metrics).
	SyncErrors uint64
	LastError  string // of the last failed /sync; "" after a success
	// UnreachableSince is when the homeserver stopped answering: the
	// first of the current run of failed /syncs that got no answer
	// (connection refused, timeout) or a 5xx. Zero while it answers, even
	// with an error (a rejected token, a 429).
	UnreachableSince time.Time
}

// Session is the intercom's Matrix session. Its methods may be called from
// several goroutines; Run must be running (once) for inbound events.
type Session struct {
	opts    Options
	hsURL   *url.URL
	log     *slog.Logger
	store   Store
	http    *http.Client
	ownHTTP bool // http was made here, so Close may close its connections

	// cli is replaced as a whole when the session logs in again, so that
	// concurrent senders never see half-updated credentials.
	cli atomic.Pointer[mautrix.Client]

	running atomic.Bool // a Run is active
	mu      sync.Mutex
	status  Status
	turn    *TURNServer       // held by RunTURN; nil if none
	avatars map[string]string // SHA-256 → mxc URI of avatars uploaded (roomlook.go)

	// resMu guards the residents (SetResidents replaces them while Run
	// reads them) and the invites left alone because their sender was not
	// a resident, so that a reload that adds the sender can still take
	// them up (an invite shows up in one incremental sync only).
	resMu        sync.Mutex
	residentList []callengine.UserID
	residents    map[id.UserID]bool
	ignored      map[id.RoomID]id.UserID

	txnPrefix string
	txnSeq    atomic.Uint64

	// The sync loop's hooks, nil when unset: household receives the
	// household room's state and to-device events (household.go), rtc
	// MatrixRTC state and declines (rtc.go). Each is replaced as a whole
	// by its setter, possibly while Run reads it.
	household atomic.Pointer[HouseholdHooks]
	rtc       atomic.Pointer[RTCHooks]

	// crypt is the end-to-end encryption, set by the first Login when
	// Options.Encryption is; nil otherwise.
	crypt atomic.Pointer[e2ee]

	// clock is the homeserver's clock as the last /sync showed it
	// (servertime.go); nil until then.
	clock atomic.Pointer[serverClock]

	// Test seams: sleeping, jitter and the clock.
	sleep  func(ctx context.Context, d time.Duration) error
	jitter func(n int64) int64
	now    func() time.Time
}

// New checks opts and returns a Session that is not logged in yet.
func New(opts Options) (*Session, error) {
	if opts.Store == nil {
		return nil, errors.New("matrix: Options.Store is required")
	}
	if opts.Homeserver == "" {
		return nil, errors.New("matrix: Options.Homeserver is required")
	}
	hsURL, err := mautrix.ParseAndNormalizeBaseURL(opts.Homeserver)
	if err != nil {
		return nil, fmt.Errorf("matrix: parse homeserver URL %q: %w", opts.Homeserver, err)
	}
	if opts.UserID != "" {
		if _, _, err := id.UserID(opts.UserID).Parse(); err != nil {
			return nil, fmt.Errorf("matrix: parse user ID %q: %w", opts.UserID, err)
		}
	}
	if opts.Password != "" && opts.UserID == "" {
		return nil, errors.New("matrix: password login needs Options.UserID")
	}
	if opts.DeviceName == "" {
		opts.DeviceName = "Intercom"
	}
	s := &Session{
		opts:      opts,
		hsURL:     hsURL,
		log:       opts.Logger,
		store:     opts.Store,
		http:      opts.HTTPClient,
		txnPrefix: fmt.Sprintf("intercom.%x", rand.Uint64()),
		sleep:     runloop.Sleep,
		jitter:    rand.Int64N,
		now:       time.Now,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.http == nil {
		s.http, s.ownHTTP = &http.Client{Transport: newTransport()}, true
	}
	if err := s.SetResidents(opts.Residents); err != nil {
		return nil, err
	}
	return s, nil
}

// TCP keepalive of the connections to the homeserver. A /sync long poll
// is idle for up to pollTimeout; if the network path dies without a reset
// (a Wi-Fi drop, a router's reboot, a NAT that forgot the flow), nothing
// arrives to say so and the poll would wait for its request deadline
// (pollTimeout plus requestTimeout, a minute). Probes every keepAliveIdle
// of idleness, keepAliveCount of them unanswered, end such a connection
// after keepAliveIdle + keepAliveCount × keepAliveIdle (20 s), so the
// intercom admits the outage (unhealthy) and reconnects that much sooner.
// A probe is a bare ACK every few seconds on one idle connection: nothing
// a board's link or a homeserver notices.
const (
	keepAliveIdle  = 5 * time.Second
	keepAliveCount = 3
)

// newTransport is http.DefaultTransport's configuration with keepalive
// probes that notice a silent drop (above).
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: keepAliveIdle, Interval: keepAliveIdle, Count: keepAliveCount,
	}}
	t.DialContext = d.DialContext
	return t
}

// SetResidents replaces the residents (a configuration reload): from now
// on EnsureDirectRooms makes rooms for these users, and only their room
// invites are joined. An invite from a new resident that the sync loop
// left alone before is joined at the loop's next iteration (within one
// long poll). On error (a malformed user ID) nothing changes.
func (s *Session) SetResidents(residents []callengine.UserID) error {
	set := make(map[id.UserID]bool, len(residents))
	for _, r := range residents {
		if _, _, err := id.UserID(r).Parse(); err != nil {
			return fmt.Errorf("matrix: parse resident %q: %w", r, err)
		}
		set[id.UserID(r)] = true
	}
	s.resMu.Lock()
	defer s.resMu.Unlock()
	s.residentList = slices.Clone(residents)
	s.residents = set
	return nil
}

// Residents returns the current residents, in configuration order.
func (s *Session) Residents() []callengine.UserID {
	s.resMu.Lock()
	defer s.resMu.Unlock()
	return slices.Clone(s.residentList)
}

// newClient returns a mautrix client for the given credentials. mautrix's
// own retries stay off: this package retries with its own policy. No
// Syncer or SyncStore: the sync loop is this package's own (sync.go).
func (s *Session) newClient(userID id.UserID, deviceID id.DeviceID, token string) *mautrix.Client {
	return &mautrix.Client{
		HomeserverURL:   s.hsURL,
		UserID:          userID,
		DeviceID:        deviceID,
		AccessToken:     token,
		UserAgent:       "doorbell-intercom " + mautrix.DefaultUserAgent,
		Client:          s.http,
		Log:             newZerolog(s.log),
		IgnoreRateLimit: true,
	}
}

func (s *Session) client() (*mautrix.Client, error) {
	c := s.cli.Load()
	if c == nil {
		return nil, ErrNotLoggedIn
	}
	return c, nil
}

// UserID is the logged-in user, or "" before Login.
func (s *Session) UserID() callengine.UserID {
	if c := s.cli.Load(); c != nil {
		return callengine.UserID(c.UserID)
	}
	return ""
}

// DeviceID is the logged-in device, or "" before Login. It is the
// intercom's party_id in call events.
func (s *Session) DeviceID() string {
	if c := s.cli.Load(); c != nil {
		return string(c.DeviceID)
	}
	return ""
}

// Status reports the state of the sync loop.
func (s *Session) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.Healthy = !st.LastSync.IsZero() && st.ConsecutiveFailures == 0 && s.now().Sub(st.LastSync) < healthWindow
	return st
}

// Healthy reports whether the last /sync succeeded, less than
// healthWindow ago (Status.Healthy).
func (s *Session) Healthy() bool { return s.Status().Healthy }

// Close releases the idle connections of the HTTP client it made. Run
// must have returned; the Session must not be used after.
func (s *Session) Close() error {
	var err error
	if e := s.crypt.Swap(nil); e != nil {
		err = e.close()
	}
	if s.ownHTTP {
		s.http.CloseIdleConnections()
	}
	return err
}

// Encrypting reports whether end-to-end encryption is on (after Login
// with matrix.encryption).
func (s *Session) Encrypting() bool { return s.crypt.Load() != nil }

// CryptoStatus reports end-to-end encryption for the status API; Enabled
// is false when it is off or Login has not opened it yet.
func (s *Session) CryptoStatus() CryptoStatus {
	if e := s.crypt.Load(); e != nil {
		return e.statusCopy()
	}
	return CryptoStatus{}
}

func (s *Session) isResident(u id.UserID) bool {
	s.resMu.Lock()
	defer s.resMu.Unlock()
	return s.residents[u]
}

// maxIgnoredInvites bounds the remembered invites from non-residents, so
// that strangers inviting the intercom cannot grow its memory.
const maxIgnoredInvites = 256

// ignoreInvite remembers an invite left alone because inviter is not a
// resident; forgetInvite drops it (joined, or the invite withdrawn).
func (s *Session) ignoreInvite(room id.RoomID, inviter id.UserID) {
	s.resMu.Lock()
	defer s.resMu.Unlock()
	if s.ignored == nil {
		s.ignored = map[id.RoomID]id.UserID{}
	}
	if _, ok := s.ignored[room]; ok || len(s.ignored) < maxIgnoredInvites {
		s.ignored[room] = inviter
	}
}

func (s *Session) forgetInvite(room id.RoomID) {
	s.resMu.Lock()
	defer s.resMu.Unlock()
	delete(s.ignored, room)
}

// residentInvites takes the remembered invites whose sender has become a
// resident since they arrived.
func (s *Session) residentInvites() map[id.RoomID]id.UserID {
	s.resMu.Lock()
	defer s.resMu.Unlock()
	var out map[id.RoomID]id.UserID
	for room, inviter := range s.ignored {
		if s.residents[inviter] {
			if out == nil {
				out = map[id.RoomID]id.UserID{}
			}
			out[room] = inviter
			delete(s.ignored, room)
		}
	}
	return out
}

// delivers reports whether Run hands events of type t to its handler.
func (s *Session) delivers(t string) bool {
	return isCallEventType(t) || (s.opts.Messages && isMessageEventType(t))
}

// isCallEventType reports whether t is a 1:1 VoIP event type (Matrix spec,
// VoIP module) or one of its unstable "org.matrix.call." variants.
func isCallEventType(t string) bool {
	return strings.HasPrefix(t, "m.call.") || strings.HasPrefix(t, "org.matrix.call.")
}
