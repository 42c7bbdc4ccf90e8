package dendrite_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/dendrite"
)

// TestMain builds Dendrite once, before any test starts a server, so the
// build's minutes are not charged to one test's start time.
func TestMain(m *testing.M) {
	flag.Parse() // testing.Short needs parsed flags
	if !testing.Short() {
		t0 := time.Now()
		dir, err := dendrite.Build(context.Background())
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		buildTook = time.Since(t0)
		fmt.Fprintf(os.Stderr, "dendrite binaries in %s (build step took %s)\n", dir, buildTook.Round(time.Millisecond))
	}
	os.Exit(m.Run())
}

var buildTook time.Duration

// TestHomeserver walks through what the integration tests rely on: users,
// password login, a message between them, and a restart that keeps it all.
func TestHomeserver(t *testing.T) {
	t0 := time.Now()
	s := dendrite.StartT(t)
	t.Logf("cold start (binary cached): %s; build step: %s", time.Since(t0).Round(time.Millisecond), buildTook.Round(time.Millisecond))
	ctx := t.Context()

	alice, err := s.Register(ctx, "alice", "alice-password")
	if err != nil {
		t.Fatal(err)
	}
	if want := "@alice:" + s.ServerName; alice.UserID != want || alice.UserID != s.UserID("alice") {
		t.Errorf("user ID %q, want %q", alice.UserID, want)
	}
	if alice.AccessToken == "" || alice.DeviceID == "" {
		t.Errorf("registration gave no token or device: %+v", alice)
	}
	bob, err := s.Register(ctx, "bob", "bob-password")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("register refusals", func(t *testing.T) {
		if _, err := s.Register(ctx, "alice", "another-password"); !errors.Is(err, dendrite.ErrUserInUse) {
			t.Errorf("registering alice again: %v, want ErrUserInUse", err)
		}
		if _, err := s.Register(ctx, "carol", "short"); !errors.Is(err, dendrite.ErrWeakPassword) {
			t.Errorf("short password: %v, want ErrWeakPassword", err)
		}
		if _, err := s.Login(ctx, "alice", "wrong-password"); !errors.Is(err, dendrite.ErrForbidden) {
			t.Errorf("wrong password: %v, want ErrForbidden", err)
		}
	})

	// Open registration stays closed: only the shared secret makes users.
	t.Run("open registration disabled", func(t *testing.T) {
		code, body := call(t, s, http.MethodPost, "/_matrix/client/v3/register", "",
			map[string]any{"username": "mallory", "password": "mallory-password", "auth": map[string]string{"type": "m.login.dummy"}}, nil)
		if code != http.StatusForbidden {
			t.Errorf("open registration: HTTP %d %s, want 403", code, body)
		}
	})

	// Log in with the password through plain HTTP, as a client would.
	var login struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	mustCall(t, s, http.MethodPost, "/_matrix/client/v3/login", "", map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]string{"type": "m.id.user", "user": "bob"},
		"password":   "bob-password",
	}, &login)
	if login.UserID != bob.UserID || login.AccessToken == "" || login.DeviceID == bob.DeviceID {
		t.Fatalf("login as bob: %+v (registered %+v)", login, bob)
	}
	bobToken := login.AccessToken

	var room struct {
		RoomID string `json:"room_id"`
	}
	mustCall(t, s, http.MethodPost, "/_matrix/client/v3/createRoom", alice.AccessToken,
		map[string]any{"preset": "private_chat", "invite": []string{bob.UserID}}, &room)
	roomPath := "/_matrix/client/v3/rooms/" + url.PathEscape(room.RoomID)
	mustCall(t, s, http.MethodPost, roomPath+"/join", bobToken, map[string]any{}, nil)
	var sent struct {
		EventID string `json:"event_id"`
	}
	mustCall(t, s, http.MethodPut, roomPath+"/send/m.room.message/txn1", alice.AccessToken,
		map[string]any{"msgtype": "m.text", "body": "ding dong"}, &sent)

	// The sync API files events asynchronously (roomserver → JetStream →
	// sync API), so a message sent is not at once in /messages: poll.
	seesMessage := func(t *testing.T, token string) {
		t.Helper()
		var msgs struct {
			Chunk []struct {
				EventID string `json:"event_id"`
				Sender  string `json:"sender"`
				Content struct {
					Body string `json:"body"`
				} `json:"content"`
			} `json:"chunk"`
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			mustCall(t, s, http.MethodGet, roomPath+"/messages?dir=b&limit=20", token, nil, &msgs)
			for _, ev := range msgs.Chunk {
				if ev.EventID == sent.EventID && ev.Sender == alice.UserID && ev.Content.Body == "ding dong" {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("message %s not in bob's view of the room after 10 s: %+v", sent.EventID, msgs.Chunk)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	seesMessage(t, bobToken)

	t0 = time.Now()
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart (stop + start): %s", time.Since(t0).Round(time.Millisecond))

	// The same tokens, user and room survive the restart.
	var who struct {
		UserID string `json:"user_id"`
	}
	mustCall(t, s, http.MethodGet, "/_matrix/client/v3/account/whoami", bobToken, nil, &who)
	if who.UserID != bob.UserID {
		t.Errorf("whoami after restart: %q, want %q", who.UserID, bob.UserID)
	}
	seesMessage(t, bobToken)
	if u, err := s.EnsureUser(ctx, "alice", "alice-password"); err != nil || u.UserID != alice.UserID {
		t.Errorf("EnsureUser(alice) after restart: %+v, %v", u, err)
	}
}

// TestStopAndComeBack covers a homeserver that is away for a while: Stop,
// the port refuses connections, Restart brings it back on the same port.
func TestStopAndComeBack(t *testing.T) {
	t.Parallel()
	s := dendrite.StartT(t)
	ctx := t.Context()
	u, err := s.Register(ctx, "door", "door-password")
	if err != nil {
		t.Fatal(err)
	}
	exited := s.Exited()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	default:
		t.Fatal("Exited not closed after Stop")
	}
	if _, err := http.Get(s.BaseURL + "/_matrix/client/versions"); err == nil {
		t.Fatal("homeserver still answers after Stop")
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	port := s.Port
	// Clients keep calling while the server comes back (run with -race).
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = s.Login(ctx, "door", "door-password")
			time.Sleep(5 * time.Millisecond)
		}
	}()
	err = s.Restart(ctx)
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if s.Port != port {
		t.Errorf("port %d after restart, want %d", s.Port, port)
	}
	if _, err := s.Login(ctx, "door", "door-password"); err != nil {
		t.Errorf("login after coming back: %v", err)
	}
	var who struct {
		UserID string `json:"user_id"`
	}
	mustCall(t, s, http.MethodGet, "/_matrix/client/v3/account/whoami", u.AccessToken, nil, &who)
}

// TestOwnDataDir: without Options.Dir, Start makes a temporary directory and
// Stop removes it, after which the server cannot come back.
func TestOwnDataDir(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("needs a real homeserver")
	}
	s, err := dendrite.Start(t.Context(), dendrite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop() })
	if _, err := os.Stat(filepath.Join(s.Dir, "dendrite.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data directory left behind: %v", err)
	}
	if err := s.Restart(t.Context()); !errors.Is(err, dendrite.ErrStopped) {
		t.Errorf("Restart after Stop: %v, want ErrStopped", err)
	}
}

// TestTURN: with TURN options the homeserver hands out relay credentials.
func TestTURN(t *testing.T) {
	t.Parallel()
	s := dendrite.StartTWith(t, dendrite.Options{TURN: &dendrite.TURN{
		URIs:         []string{"turn:127.0.0.1:3478?transport=udp"},
		SharedSecret: "turn-secret",
	}})
	u, err := s.Register(t.Context(), "resident", "resident-password")
	if err != nil {
		t.Fatal(err)
	}
	var turn struct {
		URIs     []string `json:"uris"`
		Username string   `json:"username"`
		Password string   `json:"password"`
		TTL      int      `json:"ttl"`
	}
	mustCall(t, s, http.MethodGet, "/_matrix/client/v3/voip/turnServer", u.AccessToken, nil, &turn)
	if len(turn.URIs) != 1 || turn.Username == "" || turn.Password == "" || turn.TTL <= 0 {
		t.Errorf("turnServer: %+v", turn)
	}
}

// call sends a JSON request and returns the status and body; out receives
// the decoded body of a 2xx answer.
func call(t *testing.T, s *dendrite.Server, method, path, token string, in, out any) (int, []byte) {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, s.BaseURL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, data, err)
		}
	}
	return resp.StatusCode, data
}

// mustCall is call that fails the test on a non-2xx answer.
func mustCall(t *testing.T, s *dendrite.Server, method, path, token string, in, out any) {
	t.Helper()
	if code, body := call(t, s, method, path, token, in, out); code/100 != 2 {
		t.Fatalf("%s %s: HTTP %d %s", method, path, code, body)
	}
}
