package daemon

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
	"github.com/doorbell/intercom/matrix"
)

// sfuToken is where and how the intercom joins one room's SFU.
type sfuToken struct{ URL, JWT string }

// tokenSource gives the intercom a LiveKit token for a Matrix room's call.
type tokenSource interface {
	token(ctx context.Context, room callengine.RoomID) (sfuToken, error)
}

// serviceTokens asks the LiveKit JWT service Element Call uses
// (lk-jwt-service, matrix-voip.md §5.2): a Matrix OpenID token proves who
// the intercom is, and /sfu/get returns the SFU's URL and a token for the
// room's call, with identity "<user>:<device>".
type serviceTokens struct {
	session *matrix.Session
	url     string // livekit_service_url
	http    *http.Client
}

func (s serviceTokens) token(ctx context.Context, room callengine.RoomID) (sfuToken, error) {
	oid, err := s.session.OpenIDToken(ctx)
	if err != nil {
		return sfuToken{}, err
	}
	body, err := json.Marshal(map[string]any{"room": room, "openid_token": oid, "device_id": s.session.DeviceID()})
	if err != nil {
		return sfuToken{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(s.url, "/")+"/sfu/get", bytes.NewReader(body))
	if err != nil {
		return sfuToken{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		return sfuToken{}, fmt.Errorf("livekit JWT service: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return sfuToken{}, fmt.Errorf("livekit JWT service: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return sfuToken{}, fmt.Errorf("livekit JWT service: %s: %s", resp.Status, bytes.TrimSpace(raw))
	}
	var t struct {
		URL string `json:"url"`
		JWT string `json:"jwt"`
	}
	if err := json.Unmarshal(raw, &t); err != nil || t.URL == "" || t.JWT == "" {
		return sfuToken{}, fmt.Errorf("livekit JWT service: answer without url and jwt: %.200s", raw)
	}
	return sfuToken{URL: t.URL, JWT: t.JWT}, nil
}

// mintedTokens signs the intercom's own tokens with the SFU's API key
// pair, for the same identity and LiveKit room lk-jwt-service would give,
// so residents who got theirs from such a service meet the intercom there.
type mintedTokens struct {
	url, key, secret string
	self             rtc.Device
}

func (m mintedTokens) token(_ context.Context, room callengine.RoomID) (sfuToken, error) {
	yes := true
	at := auth.NewAccessToken(m.key, m.secret).
		SetIdentity(m.self.Identity()).
		SetValidFor(time.Hour).
		SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: rtc.LiveKitRoomName(room),
			CanPublish: &yes, CanSubscribe: &yes, CanPublishData: &yes})
	jwt, err := at.ToJWT()
	if err != nil {
		return sfuToken{}, fmt.Errorf("mint livekit token: %w", err)
	}
	return sfuToken{URL: m.url, JWT: jwt}, nil
}
