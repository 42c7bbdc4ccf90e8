package livekit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/livekit/protocol/auth"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/rtc"
)

// Token is where and how the intercom joins one Matrix room's SFU.
type Token struct{ URL, JWT string }

// Endpoint picks how ServiceTokens asks a LiveKit JWT service
// (lk-jwt-service, matrix-voip.md §5.2) for a token. The two endpoints
// differ in the LiveKit identity they give: /sfu/get "<user>:<device>",
// /get_token a hash of user, device and member ID (rtc.HashedIdentity).
type Endpoint int

const (
	// EndpointAuto asks POST /get_token first and falls back to /sfu/get
	// when the service lacks it, as Element Call does on SFUs where it
	// only subscribes (openIDSFU.ts getSFUConfigWithOpenID without
	// forceJwtEndpoint). A service found without /get_token is asked
	// /sfu/get directly for the next hour.
	EndpointAuto Endpoint = iota
	// EndpointLegacy asks /sfu/get only. Clients pair a session-shaped
	// membership (the one the intercom writes) with the LiveKit identity
	// "<user>:<device>" and nothing else (js-sdk
	// CallMembership.parseFromEvent; Element Call 0.26.1's
	// RemoteMatrixLivekitMembers), so the SFU the intercom publishes on
	// must give it that identity: Element Call itself uses /sfu/get for
	// its own SFU in its default (compatibility) mode.
	EndpointLegacy
)

func (e Endpoint) String() string {
	if e == EndpointLegacy {
		return "/sfu/get"
	}
	return "/get_token, else /sfu/get"
}

// legacyFor is how long a service that lacked /get_token is asked
// /sfu/get directly; after that /get_token is tried again, in case the
// service was upgraded.
const legacyFor = time.Hour

// maxServiceAnswer bounds a JWT service's answer; a real one is ~1 KiB.
const maxServiceAnswer = 64 << 10

// ServiceTokens asks LiveKit JWT services for the intercom's tokens: a
// Matrix OpenID token proves who the intercom is, and the service answers
// the SFU's URL and a token for the room's call. Use it as a pointer: it
// remembers, per service URL, a service without /get_token. It is safe
// for concurrent use.
type ServiceTokens struct {
	// URL is the service Token asks (matrixrtc.livekit_service_url or the
	// transport discovered from the homeserver); Endpoint how.
	URL      string
	Endpoint Endpoint
	HTTP     *http.Client
	// OpenID returns a fresh Matrix OpenID token (the object
	// /openid/request_token answers), sent to the service as it is.
	OpenID func(ctx context.Context) (any, error)
	// Self is the intercom's device; MemberID the member ID /get_token
	// hashes into its identity, by default Self.Identity(): the
	// membershipID of the intercom's own membership (rtc.NewMembership),
	// stable across calls and restarts.
	Self     rtc.Device
	MemberID string
	// Now is the clock of the memory of services without /get_token;
	// time.Now by default.
	Now func() time.Time

	mu     sync.Mutex
	legacy map[string]time.Time // service URL → until when to skip /get_token
}

// ServiceError is a JWT service's refusal.
type ServiceError struct {
	Endpoint string // "/get_token" or "/sfu/get"
	Status   int
	ErrCode  string // Matrix-style errcode of the answer, if any
	Body     string // the answer, cut to 200 bytes
}

func (e *ServiceError) Error() string {
	return fmt.Sprintf("livekit JWT service %s: HTTP %d: %s", e.Endpoint, e.Status, e.Body)
}

// unsupported reports whether a /get_token refusal says the service has
// no such endpoint, rather than refusing this request: 404 (Element
// Call's NotSupportedError), 405 or 501 from a proxy in front of an old
// service, or M_UNRECOGNIZED.
func (e *ServiceError) unsupported() bool {
	switch e.Status {
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return true
	}
	return e.ErrCode == "M_UNRECOGNIZED"
}

// Token asks URL for room's call.
func (s *ServiceTokens) Token(ctx context.Context, room callengine.RoomID) (Token, error) {
	return s.TokenFrom(ctx, s.URL, room, s.Endpoint)
}

// TokenFrom asks serviceURL for room's call through ep. With
// EndpointAuto, any failure of /get_token other than the caller's
// cancellation falls back to /sfu/get for this request (as Element Call
// does); only an answer that says the endpoint is missing is remembered.
func (s *ServiceTokens) TokenFrom(ctx context.Context, serviceURL string, room callengine.RoomID, ep Endpoint) (Token, error) {
	if serviceURL == "" {
		return Token{}, errors.New("livekit JWT service: no URL")
	}
	base := strings.TrimRight(serviceURL, "/")
	oid, err := s.OpenID(ctx)
	if err != nil {
		return Token{}, err
	}
	if ep == EndpointAuto && !s.skipGetToken(base) {
		memberID := s.MemberID
		if memberID == "" {
			memberID = s.Self.Identity()
		}
		tok, err := s.post(ctx, base, "/get_token", map[string]any{
			"room_id": room, "slot_id": rtc.Slot, "openid_token": oid,
			"member": map[string]string{"id": memberID, "claimed_user_id": string(s.Self.User), "claimed_device_id": s.Self.DeviceID},
		})
		if err == nil || ctx.Err() != nil {
			return tok, err
		}
		if se := (*ServiceError)(nil); errors.As(err, &se) && se.unsupported() {
			s.rememberLegacy(base)
		}
	}
	return s.post(ctx, base, "/sfu/get", map[string]any{"room": room, "openid_token": oid, "device_id": s.Self.DeviceID})
}

func (s *ServiceTokens) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *ServiceTokens) skipGetToken(base string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	until, ok := s.legacy[base]
	if ok && !s.now().Before(until) {
		delete(s.legacy, base)
		return false
	}
	return ok
}

func (s *ServiceTokens) rememberLegacy(base string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.legacy == nil {
		s.legacy = map[string]time.Time{}
	}
	s.legacy[base] = s.now().Add(legacyFor)
}

// post sends one request to the service and reads its {url, jwt}.
func (s *ServiceTokens) post(ctx context.Context, base, endpoint string, body any) (Token, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return Token{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+endpoint, bytes.NewReader(b))
	if err != nil {
		return Token{}, fmt.Errorf("livekit JWT service %s: %w", endpoint, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return Token{}, fmt.Errorf("livekit JWT service %s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxServiceAnswer+1))
	if err != nil {
		return Token{}, fmt.Errorf("livekit JWT service %s: %w", endpoint, err)
	}
	if len(raw) > maxServiceAnswer {
		return Token{}, fmt.Errorf("livekit JWT service %s: answer larger than %d bytes", endpoint, maxServiceAnswer)
	}
	if resp.StatusCode != http.StatusOK {
		se := &ServiceError{Endpoint: endpoint, Status: resp.StatusCode, Body: string(truncate(bytes.TrimSpace(raw), 200))}
		var m struct {
			ErrCode string `json:"errcode"`
		}
		if json.Unmarshal(raw, &m) == nil {
			se.ErrCode = m.ErrCode
		}
		return Token{}, se
	}
	var t struct {
		URL string `json:"url"`
		JWT string `json:"jwt"`
	}
	if err := json.Unmarshal(raw, &t); err != nil || t.URL == "" || t.JWT == "" {
		return Token{}, fmt.Errorf("livekit JWT service %s: answer without url and jwt: %.200s", endpoint, raw)
	}
	return Token{URL: t.URL, JWT: t.JWT}, nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// MintedTokens signs the intercom's own tokens with the SFU's API key
// pair, for the same identity and LiveKit room lk-jwt-service would give,
// so residents who got theirs from such a service meet the intercom there.
type MintedTokens struct {
	URL, Key, Secret string
	Self             rtc.Device
}

// Token mints a token for room's call, valid for an hour.
func (m MintedTokens) Token(_ context.Context, room callengine.RoomID) (Token, error) {
	yes := true
	at := auth.NewAccessToken(m.Key, m.Secret).
		SetIdentity(m.Self.Identity()).
		SetValidFor(time.Hour).
		SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: rtc.LiveKitRoomName(room),
			CanPublish: &yes, CanSubscribe: &yes, CanPublishData: &yes})
	jwt, err := at.ToJWT()
	if err != nil {
		return Token{}, fmt.Errorf("mint livekit token: %w", err)
	}
	return Token{URL: m.URL, JWT: jwt}, nil
}
