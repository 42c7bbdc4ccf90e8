package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/rtc"
	"github.com/doorbell/intercom/matrix"
	"github.com/doorbell/intercom/matrix/matrixtest"
	mlivekit "github.com/doorbell/intercom/media/livekit"
	"github.com/doorbell/intercom/provisioning"
)

// loggedInSession is the daemon's Matrix session on hs, logged in.
func loggedInSession(t *testing.T, hs *matrixtest.Server) *matrix.Session {
	t.Helper()
	cfg, err := provisioning.Load(writeConfig(t, hs, ""))
	if err != nil {
		t.Fatal(err)
	}
	state, err := provisioning.OpenState(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := newSession(cfg, state, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Login(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestServiceTokens: the intercom proves who it is to the LiveKit JWT
// service with a Matrix OpenID token and takes the SFU's URL and token
// from the answer; anything else is an error that says where it came
// from.
func TestServiceTokens(t *testing.T) {
	hs := newHS(t)
	session := loggedInSession(t, hs)
	var got struct {
		Room   string `json:"room"`
		OpenID struct {
			AccessToken      string `json:"access_token"`
			MatrixServerName string `json:"matrix_server_name"`
		} `json:"openid_token"`
		DeviceID string `json:"device_id"`
	}
	answer := func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/sfu/get" || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusTeapot)
			return
		}
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		switch got.Room {
		case "!ok:hs.test":
			io.WriteString(w, `{"url":"wss://sfu.hs.test","jwt":"a.b.c"}`)
		case "!down:hs.test":
			http.Error(w, "  no SFU configured\n", http.StatusServiceUnavailable)
		case "!odd:hs.test":
			io.WriteString(w, `{"url":"wss://sfu.hs.test"}`)
		default:
			io.WriteString(w, `<html>`)
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(answer))
	defer srv.Close()
	self := rtc.Device{User: session.UserID(), DeviceID: session.DeviceID()}
	openID := func(ctx context.Context) (any, error) { return session.OpenIDToken(ctx) }
	src := &mlivekit.ServiceTokens{URL: srv.URL + "/", Endpoint: mlivekit.EndpointLegacy, HTTP: srv.Client(), Self: self, OpenID: openID}

	tok, err := src.Token(t.Context(), "!ok:hs.test")
	if err != nil || tok != (mlivekit.Token{URL: "wss://sfu.hs.test", JWT: "a.b.c"}) {
		t.Fatalf("token %+v, %v", tok, err)
	}
	if got.OpenID.AccessToken == "" || got.OpenID.MatrixServerName != "hs.test" || got.DeviceID != session.DeviceID() {
		t.Errorf("service got %+v", got)
	}

	for room, want := range map[callengine.RoomID]string{
		"!down:hs.test":    "livekit JWT service /sfu/get: HTTP 503: no SFU configured",
		"!odd:hs.test":     "livekit JWT service /sfu/get: answer without url and jwt",
		"!garbage:hs.test": "livekit JWT service /sfu/get: answer without url and jwt: <html>",
	} {
		if _, err := src.Token(t.Context(), room); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", room, err, want)
		}
	}
	gone := &mlivekit.ServiceTokens{URL: "http://127.0.0.1:1", Endpoint: mlivekit.EndpointLegacy, HTTP: srv.Client(), Self: self, OpenID: openID}
	if _, err := gone.Token(t.Context(), "!ok:hs.test"); err == nil || !strings.Contains(err.Error(), "livekit JWT service /sfu/get: ") {
		t.Errorf("unreachable service: %v", err)
	}
	hs.Script("POST openid", matrixtest.Error(http.StatusForbidden, "M_FORBIDDEN"))
	if _, err := src.Token(t.Context(), "!ok:hs.test"); err == nil || !strings.Contains(err.Error(), "openid") {
		t.Errorf("without an OpenID token: %v", err)
	}
}

// fixedTokens is a tokenSource with a fixed answer.
type fixedTokens struct {
	tok mlivekit.Token
	err error
}

func (f fixedTokens) Token(context.Context, callengine.RoomID) (mlivekit.Token, error) {
	return f.tok, f.err
}

type closer struct{}

func (closer) Close() error { return nil }

// TestLiveKitSFU: a join takes the room's token, then connects with it;
// either failing fails the join.
func TestLiveKitSFU(t *testing.T) {
	var joined []mlivekit.Token
	join := func(_ context.Context, tok mlivekit.Token, _ *rtc.CallKeys, _ func(string, bool), _ func(error)) (io.Closer, error) {
		joined = append(joined, tok)
		if tok.JWT == "refused" {
			return nil, errors.New("refused")
		}
		return closer{}, nil
	}
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	noop := func(string, bool) {}
	lost := func(error) {}

	c, err := livekitSFU{tokens: fixedTokens{tok: mlivekit.Token{URL: "wss://sfu", JWT: "ok"}}, join: join, log: log}.Join(t.Context(), "!r:hs.test", nil, noop, lost)
	if err != nil || c == nil || !strings.Contains(logs.String(), "joined SFU") {
		t.Errorf("join: %v, %v; log %s", c, err, logs)
	}
	if _, err := (livekitSFU{tokens: fixedTokens{tok: mlivekit.Token{JWT: "refused"}}, join: join, log: log}).Join(t.Context(), "!r:hs.test", nil, noop, lost); err == nil {
		t.Error("refused join succeeded")
	}
	if _, err := (livekitSFU{tokens: fixedTokens{err: errors.New("no token")}, join: join, log: log}).Join(t.Context(), "!r:hs.test", nil, noop, lost); err == nil {
		t.Error("join without a token succeeded")
	}
	if len(joined) != 2 {
		t.Errorf("joined with %v: a failed token must not be used", joined)
	}
}
