package livekit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/rtc"
	"github.com/doorbell/intercom/internal/testenv/dendrite"
	"github.com/doorbell/intercom/internal/testenv/lkjwt"
)

// TestMintedTokens: a self-minted token names the identity and LiveKit
// room lk-jwt-service would, and is signed with the configured key pair.
func TestMintedTokens(t *testing.T) {
	self := rtc.Device{User: "@door:hs.test", DeviceID: "DEV"}
	m := MintedTokens{URL: "wss://sfu.hs.test", Key: "APIkey", Secret: strings.Repeat("s", 32), Self: self}
	tok, err := m.Token(t.Context(), "!room:hs.test")
	if err != nil || tok.URL != "wss://sfu.hs.test" {
		t.Fatalf("token %+v, %v", tok, err)
	}
	v, err := auth.ParseAPIToken(tok.JWT)
	if err != nil {
		t.Fatal(err)
	}
	if v.APIKey() != "APIkey" {
		t.Errorf("signed with key %q", v.APIKey())
	}
	_, claims, err := v.Verify(m.Secret)
	if err != nil {
		t.Fatal(err)
	}
	g := claims.Video
	if claims.Identity != self.Identity() || g == nil || !g.RoomJoin || g.Room != rtc.LiveKitRoomName("!room:hs.test") ||
		g.CanPublish == nil || !*g.CanPublish || g.CanSubscribe == nil || !*g.CanSubscribe {
		t.Errorf("claims %+v, video %+v", claims, g)
	}
	if _, _, err := v.Verify("another secret, long enough to be a secret"); err == nil {
		t.Error("token verifies with another secret")
	}
}

// TestServiceTokens asks the JWT service stand-in, with OpenID tokens
// from a real Dendrite, through each endpoint: the LiveKit identity tells
// which one answered. A service without /get_token is asked /sfu/get and
// remembered as such until legacyFor has passed.
func TestServiceTokens(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Dendrite")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	hs := dendrite.StartTWith(t, dendrite.Options{OpenIDUserInfo: true})
	door, err := hs.Register(ctx, "door", "door-password")
	if err != nil {
		t.Fatal(err)
	}
	self := rtc.Device{User: callengine.UserID(door.UserID), DeviceID: door.DeviceID}
	const secret = "test-secret-that-is-long-enough-for-livekit"
	opts := lkjwt.Options{Homeserver: hs.BaseURL, LiveKitURL: "ws://127.0.0.1:7880", APIKey: "APIkey", APISecret: secret}
	room := callengine.RoomID("!room:" + hs.ServerName)
	openID := func(ctx context.Context) (any, error) { return requestOpenID(ctx, hs.BaseURL, door) }
	identity := func(t *testing.T, tok Token) string {
		t.Helper()
		v, err := auth.ParseAPIToken(tok.JWT)
		if err != nil {
			t.Fatal(err)
		}
		_, claims, err := v.Verify(secret)
		if err != nil {
			t.Fatal(err)
		}
		if claims.Video == nil || claims.Video.Room != rtc.LiveKitRoomName(room) {
			t.Fatalf("token for LiveKit room %+v, want %s", claims.Video, rtc.LiveKitRoomName(room))
		}
		return claims.Identity
	}
	hashed := rtc.HashedIdentity(self, self.Identity())

	t.Run("auto uses /get_token", func(t *testing.T) {
		svc, calls := serve(t, lkjwt.New(opts))
		s := &ServiceTokens{URL: svc, HTTP: http.DefaultClient, OpenID: openID, Self: self}
		tok, err := s.Token(ctx, room)
		if err != nil {
			t.Fatal(err)
		}
		if got := identity(t, tok); got != hashed {
			t.Fatalf("identity %q, want the /get_token hash %q", got, hashed)
		}
		if calls("/get_token") != 1 || calls("/sfu/get") != 0 {
			t.Fatalf("requests: /get_token %d, /sfu/get %d", calls("/get_token"), calls("/sfu/get"))
		}
	})
	t.Run("legacy uses /sfu/get", func(t *testing.T) {
		svc, calls := serve(t, lkjwt.New(opts))
		s := &ServiceTokens{URL: svc + "/", HTTP: http.DefaultClient, OpenID: openID, Self: self, Endpoint: EndpointLegacy}
		tok, err := s.Token(ctx, room)
		if err != nil {
			t.Fatal(err)
		}
		if got := identity(t, tok); got != self.Identity() || calls("/get_token") != 0 {
			t.Fatalf("identity %q after %d /get_token requests, want %q from /sfu/get only", got, calls("/get_token"), self.Identity())
		}
	})
	t.Run("fallback is remembered", func(t *testing.T) {
		old := opts
		old.NoGetToken = true
		svc, calls := serve(t, lkjwt.New(old))
		now := time.Unix(1_790_000_000, 0)
		s := &ServiceTokens{URL: svc, HTTP: http.DefaultClient, OpenID: openID, Self: self, Now: func() time.Time { return now }}
		for i := range 2 {
			tok, err := s.Token(ctx, room)
			if err != nil {
				t.Fatal(err)
			}
			if got := identity(t, tok); got != self.Identity() {
				t.Fatalf("round %d: identity %q, want %q", i, got, self.Identity())
			}
		}
		if calls("/get_token") != 1 || calls("/sfu/get") != 2 {
			t.Fatalf("requests: /get_token %d, /sfu/get %d; want 1 and 2", calls("/get_token"), calls("/sfu/get"))
		}
		now = now.Add(legacyFor)
		if _, err := s.Token(ctx, room); err != nil {
			t.Fatal(err)
		}
		if calls("/get_token") != 2 {
			t.Fatalf("/get_token not tried again after %v", legacyFor)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		svc, _ := serve(t, lkjwt.New(opts))
		bad := func(context.Context) (any, error) {
			return map[string]any{"access_token": "forged", "token_type": "Bearer", "matrix_server_name": hs.ServerName, "expires_in": 3600}, nil
		}
		s := &ServiceTokens{URL: svc, HTTP: http.DefaultClient, OpenID: bad, Self: self}
		_, err := s.Token(ctx, room)
		var se *ServiceError
		if !errors.As(err, &se) || se.Status != http.StatusUnauthorized || se.ErrCode != "M_UNAUTHORIZED" || se.Endpoint != "/sfu/get" {
			t.Fatalf("forged OpenID token: %v (%+v)", err, se)
		}
		if s.skipGetToken(svc) {
			t.Fatal("a refusal of the token was remembered as a missing /get_token")
		}
	})
}

// TestServiceTokensAnswers: what the service answers is untrusted: a
// huge or malformed answer is an error, not a token.
func TestServiceTokensAnswers(t *testing.T) {
	self := rtc.Device{User: "@door:hs.test", DeviceID: "DEV"}
	for name, h := range map[string]http.HandlerFunc{
		"huge": func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write(bytes.Repeat([]byte(" "), maxServiceAnswer+10))
		},
		"not json":  func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "<html>") },
		"no jwt":    func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"url":"wss://x"}`) },
		"empty url": func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"url":"","jwt":"x"}`) },
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(h)
			defer srv.Close()
			s := &ServiceTokens{URL: srv.URL, HTTP: srv.Client(), Self: self,
				OpenID: func(context.Context) (any, error) { return map[string]string{}, nil }}
			if tok, err := s.Token(t.Context(), "!r:hs.test"); err == nil {
				t.Fatalf("token %+v from a bad answer", tok)
			}
		})
	}
}

// serve runs h on a test server and counts the requests per path.
func serve(t *testing.T, h http.Handler) (string, func(path string) int) {
	t.Helper()
	var mu sync.Mutex
	n := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n[r.URL.Path]++
		mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func(path string) int { mu.Lock(); defer mu.Unlock(); return n[path] }
}

// requestOpenID asks the homeserver for u's OpenID token.
func requestOpenID(ctx context.Context, base string, u dendrite.User) (any, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		base+"/_matrix/client/v3/user/"+url.PathEscape(u.UserID)+"/openid/request_token", strings.NewReader("{}"))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+u.AccessToken)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var tok map[string]any
	if err := json.NewDecoder(res.Body).Decode(&tok); err != nil || res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("request_token: %s: %v", res.Status, err)
	}
	return tok, nil
}
