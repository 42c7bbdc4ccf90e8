package dendrite

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// User is an account on the homeserver with one logged-in device.
type User struct {
	UserID      string // "@alice:localhost"
	AccessToken string
	DeviceID    string
	Password    string
}

// UserID returns the full user ID for localpart on this server. Dendrite
// lowercases localparts at registration.
func (s *Server) UserID(localpart string) string {
	return "@" + strings.ToLower(localpart) + ":" + s.ServerName
}

// Register creates a user with shared-secret registration, which works while
// public registration is disabled. It is Synapse's admin API, which Dendrite
// implements: GET /_synapse/admin/v1/register for a nonce, then POST the
// user with an HMAC-SHA1, keyed with the shared secret, over
// nonce NUL user NUL password NUL "notadmin". The returned device is
// "shared_secret_registration". Errors match ErrUserInUse and
// ErrWeakPassword (Dendrite wants at least 8 characters).
func (s *Server) Register(ctx context.Context, localpart, password string) (User, error) {
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := s.do(ctx, http.MethodGet, "/_synapse/admin/v1/register", "", nil, &nonce); err != nil {
		return User{}, fmt.Errorf("register %q: get nonce: %w", localpart, err)
	}
	mac := hmac.New(sha1.New, []byte(s.secret))
	mac.Write([]byte(nonce.Nonce + "\x00" + localpart + "\x00" + password + "\x00notadmin"))
	req := map[string]any{
		"nonce":    nonce.Nonce,
		"username": localpart,
		"password": password,
		"admin":    false,
		"mac":      hex.EncodeToString(mac.Sum(nil)),
	}
	var resp struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	if err := s.do(ctx, http.MethodPost, "/_synapse/admin/v1/register", "", req, &resp); err != nil {
		return User{}, fmt.Errorf("register %q: %w", localpart, err)
	}
	return User{UserID: resp.UserID, AccessToken: resp.AccessToken, DeviceID: resp.DeviceID, Password: password}, nil
}

// Login logs an existing user in with a password (Matrix spec, Client-Server
// API, POST /_matrix/client/v3/login, m.login.password), creating a new
// device. A wrong password matches ErrForbidden.
func (s *Server) Login(ctx context.Context, localpart, password string) (User, error) {
	req := map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]string{"type": "m.id.user", "user": localpart},
		"password":   password,
	}
	var resp struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	if err := s.do(ctx, http.MethodPost, "/_matrix/client/v3/login", "", req, &resp); err != nil {
		return User{}, fmt.Errorf("log in %q: %w", localpart, err)
	}
	return User{UserID: resp.UserID, AccessToken: resp.AccessToken, DeviceID: resp.DeviceID, Password: password}, nil
}

// EnsureUser registers the user, or logs in if the user already exists (a
// data directory reused across runs). A user that exists with another
// password is an error matching ErrForbidden.
func (s *Server) EnsureUser(ctx context.Context, localpart, password string) (User, error) {
	u, err := s.Register(ctx, localpart, password)
	if errors.Is(err, ErrUserInUse) {
		return s.Login(ctx, localpart, password)
	}
	return u, err
}

// do sends a JSON request to the homeserver and decodes a 2xx answer into
// out; any other answer becomes a *MatrixError.
func (s *Server) do(ctx context.Context, method, path, token string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.BaseURL+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		merr := &MatrixError{StatusCode: resp.StatusCode}
		if json.Unmarshal(data, merr) != nil || merr.ErrCode == "" {
			merr.Message = strings.TrimSpace(string(data))
		}
		return merr
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode %s %s: %w", method, path, err)
	}
	return nil
}
