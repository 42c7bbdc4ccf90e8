package lkjwt_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"

	"github.com/doorbell/intercom/internal/testenv/dendrite"
	"github.com/doorbell/intercom/internal/testenv/lkjwt"
)

const (
	apiKey    = "APItestkey"
	apiSecret = "test-secret-that-is-long-enough-for-livekit"
	lkURL     = "ws://127.0.0.1:7880"
)

func TestRoomAlias(t *testing.T) {
	// sha256 of `["!a:b","m.call#ROOM"]`, standard alphabet, no padding.
	sum := sha256.Sum256([]byte(`["!a:b","m.call#ROOM"]`))
	want := strings.TrimRight(base64.StdEncoding.EncodeToString(sum[:]), "=")
	if got := lkjwt.RoomAlias("!a:b", lkjwt.SlotRoom); got != want || len(got) != 43 {
		t.Errorf("RoomAlias = %q, want %q", got, want)
	}
	sum = sha256.Sum256([]byte(`["@u:hs","DEV","m1"]`))
	if got, want := lkjwt.Identity("@u:hs", "DEV", "m1"), base64.RawStdEncoding.EncodeToString(sum[:]); got != want {
		t.Errorf("Identity = %q, want %q", got, want)
	}
}

// TestExchange swaps real OpenID tokens from a real Dendrite for LiveKit
// tokens and checks the refusals.
func TestExchange(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	hs := dendrite.StartTWith(t, dendrite.Options{OpenIDUserInfo: true})
	alice, err := hs.Register(ctx, "alice", "alice-password")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := hs.Register(ctx, "bob", "bob-password")
	if err != nil {
		t.Fatal(err)
	}
	svc := lkjwt.Start(t, lkjwt.Options{Homeserver: hs.BaseURL, LiveKitURL: lkURL, APIKey: apiKey, APISecret: apiSecret, TTL: 10 * time.Minute})

	tok := openID(ctx, t, hs.BaseURL, alice)
	if tok.MatrixServerName != hs.ServerName {
		t.Errorf("matrix_server_name %q, want %q", tok.MatrixServerName, hs.ServerName)
	}
	room := "!room:" + hs.ServerName

	t.Run("sfu/get", func(t *testing.T) {
		var res lkjwt.Response
		status, body := post(ctx, t, svc+"/sfu/get", map[string]any{"room": room, "openid_token": tok, "device_id": "ALICEDEV"}, &res)
		if status != http.StatusOK {
			t.Fatalf("%d %s", status, body)
		}
		if res.URL != lkURL {
			t.Errorf("url %q, want %q", res.URL, lkURL)
		}
		grants := verify(t, res.JWT)
		checkGrants(t, grants, alice.UserID+":ALICEDEV", lkjwt.RoomAlias(room, "m.call#ROOM"))
	})

	t.Run("get_token", func(t *testing.T) {
		var res lkjwt.Response
		req := map[string]any{"room_id": room, "slot_id": "m.call#ROOM", "openid_token": tok,
			"member": map[string]string{"id": "member1", "claimed_user_id": alice.UserID, "claimed_device_id": "ALICEDEV"}}
		status, body := post(ctx, t, svc+"/get_token", req, &res)
		if status != http.StatusOK {
			t.Fatalf("%d %s", status, body)
		}
		checkGrants(t, verify(t, res.JWT), lkjwt.Identity(alice.UserID, "ALICEDEV", "member1"), lkjwt.RoomAlias(room, "m.call#ROOM"))

		// Someone else's user ID with alice's token.
		req["member"] = map[string]string{"id": "m", "claimed_user_id": bob.UserID, "claimed_device_id": "D"}
		if status, body := post(ctx, t, svc+"/get_token", req, nil); status != http.StatusForbidden || !strings.Contains(body, "M_FORBIDDEN") {
			t.Errorf("claiming bob: %d %s, want 403 M_FORBIDDEN", status, body)
		}
	})

	for _, c := range []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"bad token", map[string]any{"room": room, "device_id": "D", "openid_token": lkjwt.OpenIDToken{AccessToken: "nope", TokenType: "Bearer", MatrixServerName: hs.ServerName, ExpiresIn: 3600}}, 401, "M_UNAUTHORIZED"},
		{"wrong server name", map[string]any{"room": room, "device_id": "D", "openid_token": lkjwt.OpenIDToken{AccessToken: tok.AccessToken, MatrixServerName: "example.org"}}, 401, "M_UNAUTHORIZED"},
		{"client access token", map[string]any{"room": room, "device_id": "D", "openid_token": lkjwt.OpenIDToken{AccessToken: bob.AccessToken, MatrixServerName: hs.ServerName}}, 401, "M_UNAUTHORIZED"},
		{"malformed", []byte(`{"room": `), 400, "M_NOT_JSON"},
		{"unknown field", map[string]any{"room": room, "openid_token": tok, "device_id": "D", "extra": 1}, 400, "M_NOT_JSON"},
		{"no room", map[string]any{"openid_token": tok, "device_id": "D"}, 400, "M_BAD_JSON"},
		{"no token", map[string]any{"room": room, "device_id": "D"}, 400, "M_BAD_JSON"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := post(ctx, t, svc+"/sfu/get", c.body, nil)
			if status != c.status || !strings.Contains(body, `"errcode":"`+c.code+`"`) {
				t.Errorf("%d %s, want %d %s", status, body, c.status, c.code)
			}
		})
	}

	t.Run("cors", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodOptions, svc+"/sfu/get", nil)
		req.Header.Set("Origin", "http://127.0.0.1:1234")
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "content-type")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK || res.Header.Get("Access-Control-Allow-Origin") != "*" ||
			!strings.Contains(strings.ToLower(res.Header.Get("Access-Control-Allow-Headers")), "content-type") {
			t.Errorf("preflight: %s %v", res.Status, res.Header)
		}
		res, err = http.Get(svc + "/sfu/get")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET /sfu/get: %s", res.Status)
		}
	})
}

func openID(ctx context.Context, t *testing.T, base string, u dendrite.User) lkjwt.OpenIDToken {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost,
		base+"/_matrix/client/v3/user/"+url.PathEscape(u.UserID)+"/openid/request_token", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+u.AccessToken)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("request_token: %s %s", res.Status, body)
	}
	var tok lkjwt.OpenIDToken
	if err := json.Unmarshal(body, &tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("request_token: %s: %v", body, err)
	}
	return tok
}

func post(ctx context.Context, t *testing.T, u string, in, out any) (int, string) {
	t.Helper()
	b, ok := in.([]byte) // sent as it is
	if !ok {
		var err error
		if b, err = json.Marshal(in); err != nil {
			t.Fatal(err)
		}
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("POST %s: no CORS header", u)
	}
	if res.StatusCode == http.StatusOK && out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("POST %s: %s: %v", u, body, err)
		}
	}
	return res.StatusCode, string(body)
}

func verify(t *testing.T, jwt string) *auth.ClaimGrants {
	t.Helper()
	v, err := auth.ParseAPIToken(jwt)
	if err != nil {
		t.Fatal(err)
	}
	if v.APIKey() != apiKey {
		t.Errorf("api key %q", v.APIKey())
	}
	claims, grants, err := v.Verify(apiSecret)
	if err != nil {
		t.Fatal(err)
	}
	if ttl := time.Until(claims.ExpiresAt.Time); ttl < 9*time.Minute || ttl > 11*time.Minute {
		t.Errorf("token valid for %v, want 10m", ttl)
	}
	return grants
}

func checkGrants(t *testing.T, g *auth.ClaimGrants, identity, room string) {
	t.Helper()
	if g.Identity != identity {
		t.Errorf("identity %q, want %q", g.Identity, identity)
	}
	v := g.Video
	if v == nil || !v.RoomJoin || v.Room != room || v.RoomCreate {
		t.Fatalf("video grant %+v, want roomJoin to %q", v, room)
	}
	if !v.GetCanPublish() || !v.GetCanSubscribe() || !v.GetCanPublishData() || !v.GetCanUpdateOwnMetadata() {
		t.Errorf("grant %+v lacks publish/subscribe/data/metadata", v)
	}
}
