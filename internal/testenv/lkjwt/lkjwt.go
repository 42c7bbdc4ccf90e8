// Package lkjwt is a test stand-in for Element's lk-jwt-service (the
// "MatrixRTC Authorization Service"): it swaps a Matrix OpenID token for a
// LiveKit access token, so that MatrixRTC clients (Element Call, Element X,
// the resident page) can join a LiveKit SFU in tests. It does what the real
// service does for a restricted user (../../shared/matrix-voip.md §5.2):
//
//   - POST /sfu/get {"room","openid_token":{…},"device_id"} (the endpoint of
//     Element Call's "legacy" and "compatibility" modes) and POST /get_token
//     {"room_id","slot_id","openid_token","member":{…}} (matrix_2_0 mode)
//     both answer {"url","jwt"};
//   - the OpenID token is checked with GET
//     /_matrix/federation/v1/openid/userinfo on the homeserver, whose "sub"
//     must belong to the token's matrix_server_name;
//   - the LiveKit room is unpaddedBase64(sha256(json([room, slot]))) with
//     the standard base64 alphabet (slot "m.call#ROOM" for /sfu/get); the
//     identity is "<mxid>:<device_id>" for /sfu/get and
//     unpaddedBase64(sha256(json([mxid, device, member id]))) for /get_token;
//   - errors are Matrix-style {"errcode","error"}: M_NOT_JSON (body not
//     JSON), M_BAD_JSON (fields missing), M_UNAUTHORIZED (token refused),
//     M_FORBIDDEN (claimed user is not the token's);
//   - CORS: every answer carries Access-Control-Allow-Origin *, and OPTIONS
//     is a preflight answered 200.
//
// Unlike the real service it never resolves server names (every token goes
// to Options.Homeserver), never creates LiveKit rooms through the room API
// (livekit-server creates one when the first participant joins) and does not
// delegate delayed leave events (Dendrite has none).
//
// Dendrite serves the userinfo endpoint only with federation enabled
// (dendrite.Options.OpenIDUserInfo), on the same port as the client API.
package lkjwt

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
)

// SlotRoom is the MatrixRTC slot of a room's single call: the slot of
// every call.member event with call_id "" and of every /sfu/get request.
const SlotRoom = "m.call#ROOM"

// DefaultTTL is how long a LiveKit token stays valid when Options.TTL is 0,
// as with the real service.
const DefaultTTL = time.Hour

// Options configure the service.
type Options struct {
	// Homeserver is the client-server base URL, e.g.
	// "http://127.0.0.1:8008"; OpenID tokens are checked at
	// {Homeserver}/_matrix/federation/v1/openid/userinfo whatever their
	// matrix_server_name.
	Homeserver string
	// LiveKitURL is the SFU's WebSocket URL handed to clients, e.g.
	// "ws://127.0.0.1:7880".
	LiveKitURL string
	// APIKey and APISecret sign the LiveKit tokens.
	APIKey, APISecret string
	// TTL is the LiveKit token's validity; 0 means DefaultTTL.
	TTL time.Duration
	// HTTPClient asks the homeserver; nil means a client that ignores
	// proxy settings (the homeserver is on loopback) with a 10 s timeout.
	HTTPClient *http.Client
	// NoGetToken leaves /get_token out (404, as from releases before it),
	// so that clients must fall back to /sfu/get.
	NoGetToken bool
}

// RoomAlias returns the LiveKit room name for a Matrix room and MatrixRTC
// slot: unpadded standard base64 of the SHA-256 of the JSON array
// [roomID, slot].
func RoomAlias(roomID, slot string) string {
	b, _ := json.Marshal([]string{roomID, slot}) // []string always marshals
	sum := sha256.Sum256(b)
	return base64.RawStdEncoding.EncodeToString(sum[:])
}

// Identity returns the LiveKit identity /get_token gives a member: unpadded
// standard base64 of the SHA-256 of the JSON array [userID, deviceID,
// memberID]. /sfu/get uses userID + ":" + deviceID instead.
func Identity(userID, deviceID, memberID string) string {
	b, _ := json.Marshal([]string{userID, deviceID, memberID})
	sum := sha256.Sum256(b)
	return base64.RawStdEncoding.EncodeToString(sum[:])
}

// OpenIDToken is what POST /_matrix/client/v3/user/{userId}/openid/request_token
// returns.
type OpenIDToken struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	MatrixServerName string `json:"matrix_server_name"`
	ExpiresIn        int    `json:"expires_in"`
}

// LegacyRequest is the body of POST /sfu/get.
type LegacyRequest struct {
	Room         string      `json:"room"`
	OpenIDToken  OpenIDToken `json:"openid_token"`
	DeviceID     string      `json:"device_id"`
	DelayID      string      `json:"delay_id,omitempty"`
	DelayTimeout int         `json:"delay_timeout,omitempty"`
	DelayCSAPI   string      `json:"delay_cs_api_url,omitempty"`
}

// Member names the MatrixRTC member in a /get_token request.
type Member struct {
	ID              string `json:"id"`
	ClaimedUserID   string `json:"claimed_user_id"`
	ClaimedDeviceID string `json:"claimed_device_id"`
}

// Request is the body of POST /get_token.
type Request struct {
	RoomID       string      `json:"room_id"`
	SlotID       string      `json:"slot_id"`
	OpenIDToken  OpenIDToken `json:"openid_token"`
	Member       Member      `json:"member"`
	DelayID      string      `json:"delay_id,omitempty"`
	DelayTimeout int         `json:"delay_timeout,omitempty"`
	DelayCSAPI   string      `json:"delay_cs_api_url,omitempty"`
}

// Response is the answer of both endpoints.
type Response struct {
	URL string `json:"url"`
	JWT string `json:"jwt"`
}

// matrixError is an error answer, {"errcode","error"}.
type matrixError struct {
	status  int
	ErrCode string `json:"errcode"`
	Err     string `json:"error"`
}

func (e *matrixError) Error() string { return e.ErrCode + ": " + e.Err }

func fail(status int, code, msg string) *matrixError {
	return &matrixError{status: status, ErrCode: code, Err: msg}
}

type service struct {
	opts Options
	http *http.Client
}

// New returns the service's handler: POST /sfu/get, POST /get_token and
// GET /healthz.
func New(opts Options) http.Handler {
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	opts.Homeserver = strings.TrimRight(opts.Homeserver, "/")
	s := &service{opts: opts, http: opts.HTTPClient}
	if s.http == nil {
		s.http = &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/sfu/get", cors(s.handleLegacy))
	if !opts.NoGetToken {
		mux.HandleFunc("/get_token", cors(s.handleGetToken))
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.WriteHeader(http.StatusMethodNotAllowed)
		}
	})
	return mux
}

// Start serves New(opts) on 127.0.0.1 for the test and returns its base URL
// (the livekit_service_url of a transport), closing it in t.Cleanup.
func Start(t testing.TB, opts Options) (url string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("lkjwt: %v", err)
	}
	srv := httptest.NewUnstartedServer(New(opts))
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// cors adds the CORS and JSON headers browsers need (the page and the
// service are different origins) and answers preflights.
func cors(next func(*http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "POST")
		h.Set("Access-Control-Allow-Headers", "Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token")
		switch r.Method {
		case http.MethodOptions:
			w.WriteHeader(http.StatusOK)
			return
		case http.MethodPost:
		default:
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		res, err := next(r)
		if err != nil {
			var me *matrixError
			if !errors.As(err, &me) {
				me = fail(http.StatusInternalServerError, "M_UNKNOWN", err.Error())
			}
			w.WriteHeader(me.status)
			_ = json.NewEncoder(w).Encode(me)
			return
		}
		_ = json.NewEncoder(w).Encode(res)
	}
}

// decode reads a JSON body strictly, as the real service does (unknown
// fields are refused).
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fail(http.StatusBadRequest, "M_NOT_JSON", "Error reading request: "+err.Error())
	}
	return nil
}

func checkDelay(id string, timeout int) error {
	if (id != "" || timeout > 0) && !(id != "" && timeout > 0) {
		return fail(http.StatusBadRequest, "M_BAD_JSON", "The request body is missing `delay_id` or `delay_timeout`")
	}
	if id != "" {
		// The real service delegates delayed leave events only for
		// full-access homeservers; this one has none.
		return fail(http.StatusBadRequest, "M_BAD_JSON", "Delegation of delayed events is not supported")
	}
	return nil
}

func (s *service) handleLegacy(r *http.Request) (any, error) {
	var req LegacyRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if req.Room == "" {
		return nil, fail(http.StatusBadRequest, "M_BAD_JSON", "Missing room parameter")
	}
	if req.OpenIDToken.AccessToken == "" || req.OpenIDToken.MatrixServerName == "" {
		return nil, fail(http.StatusBadRequest, "M_BAD_JSON", "Missing OpenID token parameters")
	}
	if err := checkDelay(req.DelayID, req.DelayTimeout); err != nil {
		return nil, err
	}
	userID, err := s.userInfo(r.Context(), req.OpenIDToken)
	if err != nil {
		return nil, err
	}
	return s.token(RoomAlias(req.Room, SlotRoom), userID+":"+req.DeviceID)
}

func (s *service) handleGetToken(r *http.Request) (any, error) {
	var req Request
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if req.RoomID == "" || req.SlotID == "" {
		return nil, fail(http.StatusBadRequest, "M_BAD_JSON", "The request body is missing `room_id` or `slot_id`")
	}
	if req.Member.ID == "" || req.Member.ClaimedUserID == "" || req.Member.ClaimedDeviceID == "" {
		return nil, fail(http.StatusBadRequest, "M_BAD_JSON", "The request body `member` is missing `id`, `claimed_user_id` or `claimed_device_id`")
	}
	if req.OpenIDToken.AccessToken == "" || req.OpenIDToken.MatrixServerName == "" {
		return nil, fail(http.StatusBadRequest, "M_BAD_JSON", "The request body `openid_token` is missing `access_token` or `matrix_server_name`")
	}
	if err := checkDelay(req.DelayID, req.DelayTimeout); err != nil {
		return nil, err
	}
	userID, err := s.userInfo(r.Context(), req.OpenIDToken)
	if err != nil {
		return nil, err
	}
	if req.Member.ClaimedUserID != userID {
		return nil, fail(http.StatusForbidden, "M_FORBIDDEN", fmt.Sprintf("claimed user %s is not the token's user", req.Member.ClaimedUserID))
	}
	return s.token(RoomAlias(req.RoomID, req.SlotID), Identity(userID, req.Member.ClaimedDeviceID, req.Member.ID))
}

// userInfo checks an OpenID token with the homeserver (Matrix spec,
// Server-Server API: GET /_matrix/federation/v1/openid/userinfo) and returns
// its user, which must belong to the token's matrix_server_name.
func (s *service) userInfo(ctx context.Context, tok OpenIDToken) (string, error) {
	unauthorized := func(why string) error {
		return fail(http.StatusUnauthorized, "M_UNAUTHORIZED", "The request could not be authorised: "+why)
	}
	u := s.opts.Homeserver + "/_matrix/federation/v1/openid/userinfo?" + url.Values{"access_token": {tok.AccessToken}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", unauthorized(err.Error())
	}
	res, err := s.http.Do(req)
	if err != nil {
		return "", unauthorized(err.Error())
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if res.StatusCode != http.StatusOK {
		return "", unauthorized(fmt.Sprintf("userinfo: %s: %s", res.Status, strings.TrimSpace(string(body))))
	}
	var info struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(body, &info); err != nil || info.Sub == "" {
		return "", unauthorized(fmt.Sprintf("userinfo: no sub in %q", body))
	}
	if _, server, ok := strings.Cut(info.Sub, ":"); !ok || server != tok.MatrixServerName {
		return "", unauthorized(fmt.Sprintf("user %s is not on %s", info.Sub, tok.MatrixServerName))
	}
	return info.Sub, nil
}

// token mints the LiveKit token: join this room only, publish, subscribe,
// send data and update one's own metadata.
func (s *service) token(room, identity string) (*Response, error) {
	yes := true
	at := auth.NewAccessToken(s.opts.APIKey, s.opts.APISecret).
		SetVideoGrant(&auth.VideoGrant{
			RoomJoin:             true,
			Room:                 room,
			CanPublish:           &yes,
			CanSubscribe:         &yes,
			CanPublishData:       &yes,
			CanUpdateOwnMetadata: &yes,
		}).
		SetIdentity(identity).
		SetValidFor(s.opts.TTL)
	jwt, err := at.ToJWT()
	if err != nil {
		return nil, fail(http.StatusInternalServerError, "M_UNKNOWN", "mint LiveKit token: "+err.Error())
	}
	return &Response{URL: s.opts.LiveKitURL, JWT: jwt}, nil
}
