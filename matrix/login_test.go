package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/internal/runloop"
)

func TestLoginWithPasswordStoresCredentials(t *testing.T) {
	f := newFakeHS(t)
	store := &memStore{}
	s, _ := newTestSession(t, f, store, nil)
	if err := s.Login(t.Context()); err != nil {
		t.Fatal(err)
	}
	logins := f.requests("POST login")
	if len(logins) != 1 {
		t.Fatalf("got %d logins, want 1", len(logins))
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(logins[0].body), &body); err != nil {
		t.Fatal(err)
	}
	if body["initial_device_display_name"] != "Front door" {
		t.Errorf("device display name = %v", body["initial_device_display_name"])
	}
	if _, ok := body["device_id"]; ok {
		t.Errorf("first login sent a device_id: %v", body["device_id"])
	}
	c := store.get().creds
	if c == nil || c.AccessToken == "" || c.DeviceID == "" || c.UserID != "@door:hs.test" || c.Homeserver != f.srv.URL {
		t.Fatalf("stored credentials = %+v", c)
	}
	if s.DeviceID() != c.DeviceID || s.UserID() != "@door:hs.test" {
		t.Errorf("session ids = %s %s", s.UserID(), s.DeviceID())
	}
	if strings.Contains(store.get().creds.AccessToken, f.password) {
		t.Error("password leaked into the store")
	}
}

func TestLoginResumesStoredCredentials(t *testing.T) {
	f := newFakeHS(t)
	f.addToken("stored", "OLDDEV")
	store := &memStore{creds: &Credentials{Homeserver: f.srv.URL, UserID: "@door:hs.test", DeviceID: "OLDDEV", AccessToken: "stored"}}
	s, _ := newTestSession(t, f, store, nil)
	if err := s.Login(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(f.requests("POST login")); n != 0 {
		t.Errorf("logged in %d times, want resume only", n)
	}
	if len(f.requests("GET whoami")) != 1 {
		t.Error("stored token not checked with whoami")
	}
	if s.DeviceID() != "OLDDEV" {
		t.Errorf("device = %s", s.DeviceID())
	}
}

func TestLoginRejectedTokenLogsInAgainOnSameDevice(t *testing.T) {
	f := newFakeHS(t)
	store := &memStore{creds: &Credentials{Homeserver: f.srv.URL, UserID: "@door:hs.test", DeviceID: "OLDDEV", AccessToken: "revoked"}}
	s, _ := newTestSession(t, f, store, nil)
	if err := s.Login(t.Context()); err != nil {
		t.Fatal(err)
	}
	logins := f.requests("POST login")
	if len(logins) != 1 || !strings.Contains(logins[0].body, `"device_id":"OLDDEV"`) {
		t.Fatalf("logins = %+v, want one reusing OLDDEV", logins)
	}
	c := store.get().creds
	if c.AccessToken == "revoked" || c.DeviceID != "OLDDEV" {
		t.Errorf("stored credentials = %+v", c)
	}
}

func TestLoginRejectedTokenWithoutPassword(t *testing.T) {
	f := newFakeHS(t)
	store := &memStore{creds: &Credentials{Homeserver: f.srv.URL, UserID: "@door:hs.test", DeviceID: "OLDDEV", AccessToken: "revoked"}}
	s, _ := newTestSession(t, f, store, func(o *Options) { o.Password = "" })
	if err := s.Login(t.Context()); !errors.Is(err, ErrTokenRejected) {
		t.Fatalf("err = %v, want ErrTokenRejected", err)
	}
	if _, err := s.client(); err == nil {
		t.Error("session usable after failed login")
	}
}

func TestLoginWrongPasswordIsNotRetried(t *testing.T) {
	f := newFakeHS(t)
	s, sl := newTestSession(t, f, &memStore{}, func(o *Options) { o.Password = "wrong password" })
	if err := s.Login(t.Context()); err == nil || !strings.Contains(err.Error(), "M_FORBIDDEN") {
		t.Fatalf("err = %v", err)
	}
	if len(sl.get()) != 0 || len(f.requests("POST login")) != 1 {
		t.Error("a rejected password was retried")
	}
}

func TestLoginWithAccessToken(t *testing.T) {
	f := newFakeHS(t)
	f.addToken("given", "TOKDEV")
	store := &memStore{}
	s, _ := newTestSession(t, f, store, func(o *Options) { o.Password, o.AccessToken = "", "given" })
	if err := s.Login(t.Context()); err != nil {
		t.Fatal(err)
	}
	if c := store.get().creds; c == nil || c.DeviceID != "TOKDEV" || c.AccessToken != "given" {
		t.Fatalf("stored = %+v", c)
	}
}

func TestLoginAccessTokenOfOtherUser(t *testing.T) {
	f := newFakeHS(t)
	f.addToken("given", "TOKDEV")
	s, _ := newTestSession(t, f, &memStore{}, func(o *Options) {
		o.Password, o.AccessToken, o.UserID = "", "given", "@someone:hs.test"
	})
	if err := s.Login(t.Context()); !errors.Is(err, ErrWrongAccount) {
		t.Fatalf("err = %v, want ErrWrongAccount", err)
	}
}

func TestLoginNoCredentials(t *testing.T) {
	f := newFakeHS(t)
	s, _ := newTestSession(t, f, &memStore{}, func(o *Options) { o.Password = "" })
	if err := s.Login(t.Context()); !errors.Is(err, ErrNoCredentials) {
		t.Fatalf("err = %v", err)
	}
}

func TestLoginWaitsForHomeserver(t *testing.T) {
	f := newFakeHS(t)
	f.addToken("stored", "OLDDEV")
	f.script("GET whoami", errReply(502, ""), reply{status: 503, body: "<html>"}, errReply(429, "M_LIMIT_EXCEEDED"))
	store := &memStore{creds: &Credentials{UserID: "@door:hs.test", DeviceID: "OLDDEV", AccessToken: "stored"}}
	s, sl := newTestSession(t, f, store, nil)
	if err := s.Login(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second}
	if got := sl.get(); !equalDurations(got, want) {
		t.Errorf("waits = %v, want %v", got, want)
	}
	if n := len(f.requests("POST login")); n != 0 {
		t.Errorf("transient whoami failures caused %d logins", n)
	}
}

func TestLoginGivesUpWhenContextEnds(t *testing.T) {
	f := newFakeHS(t)
	f.srv.Close() // connection refused from now on
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	s, _ := newTestSession(t, f, &memStore{}, nil)
	s.sleep = runloop.Sleep
	if err := s.Login(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestNewValidatesOptions(t *testing.T) {
	store := &memStore{}
	for _, tt := range []struct {
		name string
		opts Options
	}{
		{"no store", Options{Homeserver: "http://hs.test"}},
		{"no homeserver", Options{Store: store}},
		{"bad homeserver", Options{Store: store, Homeserver: "://"}},
		{"bad user", Options{Store: store, Homeserver: "http://hs.test", UserID: "door"}},
		{"password without user", Options{Store: store, Homeserver: "http://hs.test", Password: "pw"}},
		{"bad resident", Options{Store: store, Homeserver: "http://hs.test", Residents: []callengine.UserID{"alice"}}},
	} {
		if _, err := New(tt.opts); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
	s, err := New(Options{Store: store, Homeserver: "http://hs.test"})
	if err != nil || s.opts.DeviceName != "Intercom" || s.UserID() != "" || s.DeviceID() != "" || s.Healthy() {
		t.Errorf("defaults: %v %+v", err, s)
	}
}
