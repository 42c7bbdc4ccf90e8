package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/dendrite"
)

// matrixCall makes one client-server API request and decodes the answer.
func matrixCall(ctx context.Context, t *testing.T, base, method, path, token string, out any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewBufferString("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: HTTP %d", method, path, resp.StatusCode)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
}

// provisionSetup registers the intercom and residents on a real Dendrite
// and writes a config for them; it returns the config's path.
func provisionSetup(t *testing.T, ctx context.Context, hs *dendrite.Server, residents ...dendrite.User) string {
	t.Helper()
	return provisionSetupExtra(t, ctx, hs, "", residents...)
}

// provisionSetupExtra is provisionSetup with more configuration appended.
func provisionSetupExtra(t *testing.T, ctx context.Context, hs *dendrite.Server, extra string, residents ...dendrite.User) string {
	t.Helper()
	const password = "intercom-password"
	bot, err := hs.Register(ctx, "intercom", password)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "password"), []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range residents {
		ids = append(ids, fmt.Sprintf("%q", r.UserID))
	}
	cfg := fmt.Sprintf("matrix:\n  homeserver: %s\n  user_id: %q\n  password_file: ./password\n  device_name: Front door\nstate_dir: ./state\nresidents: [%s]\n",
		hs.BaseURL, bot.UserID, strings.Join(ids, ", ")) + extra
	path := filepath.Join(dir, "intercom.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestProvisionIdempotent: the first run logs in and creates a named room
// per resident with the resident invited; the second changes nothing (no
// new device, no new room); a room the resident left is replaced, and only
// that one.
func TestProvisionIdempotent(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Dendrite")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	hs := dendrite.StartT(t)
	alice, err := hs.Register(ctx, "alice", "alice-password")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := hs.Register(ctx, "bob", "bob-password")
	if err != nil {
		t.Fatal(err)
	}
	path := provisionSetup(t, ctx, hs, alice, bob)
	stateDir := filepath.Join(filepath.Dir(path), "state")

	provisionOnce := func(name string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := runIntercom(t, []string{"provision", "--config", path}, &out, &errOut); code != 0 {
			t.Fatalf("%s provision: exit %d\n%s%s", name, code, out.String(), errOut.String())
		}
		t.Logf("%s provision:\n%s%s", name, out.String(), errOut.String())
		if strings.Contains(out.String()+errOut.String(), "intercom-password") {
			t.Fatal("provision printed the password")
		}
		return out.String()
	}
	roomOf := func(out, user string) string {
		t.Helper()
		m := regexp.MustCompile(`resident ` + regexp.QuoteMeta(user) + `\s+room (\S+)\s+(\S+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no room for %s in:\n%s", user, out)
		}
		return m[1]
	}
	creds := func() (token, device string) {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(stateDir, "credentials.json"))
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			AccessToken string `json:"access_token"`
			DeviceID    string `json:"device_id"`
		}
		if err := json.Unmarshal(data, &c); err != nil {
			t.Fatal(err)
		}
		return c.AccessToken, c.DeviceID
	}
	joined := func() []string {
		t.Helper()
		token, _ := creds()
		var r struct {
			JoinedRooms []string `json:"joined_rooms"`
		}
		matrixCall(ctx, t, hs.BaseURL, http.MethodGet, "/_matrix/client/v3/joined_rooms", token, &r)
		slices.Sort(r.JoinedRooms)
		return r.JoinedRooms
	}

	first := provisionOnce("first")
	// The login, two rooms and the intercom's cross-signing identity.
	for _, want := range []string{"logged in now", "4 change(s)", "may be removed", "new identity; device cross-signed"} {
		if !strings.Contains(first, want) {
			t.Errorf("first run does not say %q", want)
		}
	}
	if k := strings.Count(first, " created; "); k != 2 {
		t.Errorf("first run created %d rooms, want 2", k)
	}
	aliceRoom, bobRoom := roomOf(first, alice.UserID), roomOf(first, bob.UserID)
	token1, device1 := creds()
	rooms1 := joined()
	if len(rooms1) != 2 {
		t.Fatalf("intercom is in %d rooms after provisioning, want 2: %v", len(rooms1), rooms1)
	}
	// The room is named, and the resident invited.
	var name struct {
		Name string `json:"name"`
	}
	matrixCall(ctx, t, hs.BaseURL, http.MethodGet, "/_matrix/client/v3/rooms/"+url.PathEscape(aliceRoom)+"/state/m.room.name/", token1, &name)
	if name.Name != "Front door" {
		t.Errorf("room name %q, want the device name", name.Name)
	}
	var members struct {
		Chunk []struct {
			StateKey string `json:"state_key"`
			Content  struct {
				Membership string `json:"membership"`
			} `json:"content"`
		} `json:"chunk"`
	}
	matrixCall(ctx, t, hs.BaseURL, http.MethodGet, "/_matrix/client/v3/rooms/"+url.PathEscape(aliceRoom)+"/members", token1, &members)
	invited := false
	for _, m := range members.Chunk {
		invited = invited || m.StateKey == alice.UserID && m.Content.Membership == "invite"
	}
	if !invited {
		t.Errorf("alice is not invited to %s: %+v", aliceRoom, members.Chunk)
	}

	second := provisionOnce("second")
	if !strings.Contains(second, "nothing changed") || !strings.Contains(second, "kept session") {
		t.Errorf("second run changed something:\n%s", second)
	}
	if k := strings.Count(second, "unchanged"); k != 2 {
		t.Errorf("second run: %d rooms unchanged, want 2", k)
	}
	if token2, device2 := creds(); token2 != token1 || device2 != device1 {
		t.Errorf("second run logged in again: device %s → %s", device1, device2)
	}
	if rooms2 := joined(); !slices.Equal(rooms1, rooms2) {
		t.Errorf("second run changed the intercom's rooms: %v → %v", rooms1, rooms2)
	}

	// Alice declines the invite: her room is no longer usable and is
	// replaced; Bob's stays.
	matrixCall(ctx, t, hs.BaseURL, http.MethodPost, "/_matrix/client/v3/rooms/"+url.PathEscape(aliceRoom)+"/leave", alice.AccessToken, nil)
	third := provisionOnce("third (repair)")
	if got := roomOf(third, alice.UserID); got == aliceRoom || !strings.Contains(third, "replaced ("+aliceRoom) {
		t.Errorf("alice's room was not replaced:\n%s", third)
	}
	if got := roomOf(third, bob.UserID); got != bobRoom {
		t.Errorf("bob's room changed %s → %s", bobRoom, got)
	}
	if !strings.Contains(third, "1 change(s)") {
		t.Errorf("repair run should count one change:\n%s", third)
	}
	if fourth := provisionOnce("fourth"); !strings.Contains(fourth, "nothing changed") {
		t.Errorf("run after the repair changed something:\n%s", fourth)
	}
}

// A homeserver that refuses the password fails provision with exit 1 and
// a message, not a hang.
func TestProvisionWrongPassword(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Dendrite")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	hs := dendrite.StartT(t)
	alice, err := hs.Register(ctx, "alice", "alice-password")
	if err != nil {
		t.Fatal(err)
	}
	path := provisionSetup(t, ctx, hs, alice)
	if err := os.WriteFile(filepath.Join(filepath.Dir(path), "password"), []byte("wrong-password"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Built first, so that the clock times provision alone.
	if _, err := buildIntercom(); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	start := time.Now()
	code := runIntercom(t, []string{"provision", "--config", path}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "log in") {
		t.Fatalf("exit %d, stderr:\n%s", code, errOut.String())
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("wrong password took %v to report", d)
	}
}
