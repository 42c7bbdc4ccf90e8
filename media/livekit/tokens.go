package livekit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/livekit/protocol/auth"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/rtc"
)

// Token is where and how the intercom joins one Matrix room's SFU.
type Token struct{ URL, JWT string }

// ServiceTokens asks the LiveKit JWT service Element Call uses
// (lk-jwt-service, matrix-voip.md §5.2): a Matrix OpenID token proves who
// the intercom is, and /sfu/get returns the SFU's URL and a token for the
// room's call, with identity "<user>:<device>".
type ServiceTokens struct {
	URL  string // matrixrtc.livekit_service_url
	HTTP *http.Client
	// OpenID returns a fresh Matrix OpenID token (the object
	// /openid/request_token answers), sent to the service as it is.
	OpenID   func(ctx context.Context) (any, error)
	DeviceID string
}

// Token asks the service for room's call.
func (s ServiceTokens) Token(ctx context.Context, room callengine.RoomID) (Token, error) {
	oid, err := s.OpenID(ctx)
	if err != nil {
		return Token{}, err
	}
	body, err := json.Marshal(map[string]any{"room": room, "openid_token": oid, "device_id": s.DeviceID})
	if err != nil {
		return Token{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(s.URL, "/")+"/sfu/get", bytes.NewReader(body))
	if err != nil {
		return Token{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return Token{}, fmt.Errorf("livekit JWT service: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return Token{}, fmt.Errorf("livekit JWT service: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return Token{}, fmt.Errorf("livekit JWT service: %s: %s", resp.Status, bytes.TrimSpace(raw))
	}
	var t struct {
		URL string `json:"url"`
		JWT string `json:"jwt"`
	}
	if err := json.Unmarshal(raw, &t); err != nil || t.URL == "" || t.JWT == "" {
		return Token{}, fmt.Errorf("livekit JWT service: answer without url and jwt: %.200s", raw)
	}
	return Token{URL: t.URL, JWT: t.JWT}, nil
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
