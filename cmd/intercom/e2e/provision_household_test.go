package e2e

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/dendrite"
)

// TestProvisionHouseholdRoom: household.room names an alias that does not
// exist yet; provision creates the room with that alias, invites every
// resident and lets members post group-call memberships; a second run
// changes nothing.
func TestProvisionHouseholdRoom(t *testing.T) {
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
	alias := "#household:" + hs.ServerName
	path := provisionSetupExtra(t, ctx, hs, "household:\n  room: \""+alias+"\"\n  group_call: mesh\n", alice)
	provision := func() string {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := runIntercom(t, []string{"provision", "--config", path}, &out, &errOut); code != 0 {
			t.Fatalf("provision: exit %d\n%s%s", code, out.String(), errOut.String())
		}
		t.Logf("provision:\n%s", out.String())
		return out.String()
	}
	household := regexp.MustCompile(`household\s+room (\S+)\s+(.*)`)
	out := provision()
	m := household.FindStringSubmatch(out)
	if m == nil || m[2] != "created; every resident is invited" {
		t.Fatalf("household line: %q", m)
	}
	room := m[1]
	var resolved struct {
		RoomID string `json:"room_id"`
	}
	matrixCall(ctx, t, hs.BaseURL, http.MethodGet, "/_matrix/client/v3/directory/room/"+url.PathEscape(alias), alice.AccessToken, &resolved)
	if resolved.RoomID != room {
		t.Fatalf("alias resolves to %q, provision said %q", resolved.RoomID, room)
	}
	// Alice is invited: she can join, and then post a membership.
	matrixCall(ctx, t, hs.BaseURL, http.MethodPost, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/join", alice.AccessToken, nil)
	var pl struct {
		Events map[string]int `json:"events"`
	}
	matrixCall(ctx, t, hs.BaseURL, http.MethodGet, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/m.room.power_levels/", alice.AccessToken, &pl)
	for _, typ := range []string{"com.famedly.call.member", "org.matrix.msc3401.call.member"} {
		if lvl, ok := pl.Events[typ]; !ok || lvl != 0 {
			t.Errorf("power level for %s = %d (set %v), want 0", typ, lvl, ok)
		}
	}

	out = provision()
	if m := household.FindStringSubmatch(out); m == nil || m[1] != room || m[2] != "unchanged" {
		t.Fatalf("second run, household line: %q\n%s", m, out)
	}
	if !regexp.MustCompile(`nothing changed`).MatchString(out) {
		t.Fatalf("second run changed something:\n%s", out)
	}
}
