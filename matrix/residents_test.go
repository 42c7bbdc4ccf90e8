package matrix

import (
	"bytes"
	"image"
	"image/png"
	"slices"
	"strings"
	"testing"

	"github.com/doorbell/intercom/callengine"
)

// SetResidents on a running session: an invite from a new resident that
// was left alone before the reload is joined at the next sync, and a
// malformed list changes nothing.
func TestSetResidentsTakesUpEarlierInvite(t *testing.T) {
	f := newFakeHS(t)
	s, _ := loggedIn(t, f)
	f.scriptSync(okReply(syncBody("s1", nil, map[string][]string{
		"!fromeve:hs.test": inviteFrom("@eve:hs.test"),
	})))
	_, stop := startRun(t, s)
	waitIdle(t, f)
	if n := len(f.requests("POST join")); n != 0 {
		t.Fatalf("%d joins before eve is a resident", n)
	}

	before := s.Residents()
	if err := s.SetResidents([]callengine.UserID{"@alice:hs.test", "eve"}); err == nil {
		t.Fatal("a malformed resident was accepted")
	}
	if got := s.Residents(); !slices.Equal(got, before) {
		t.Fatalf("residents %v after a refused change, want %v", got, before)
	}
	waitIdle(t, f)
	if n := len(f.requests("POST join")); n != 0 {
		t.Fatalf("%d joins after a refused change", n)
	}

	if err := s.SetResidents([]callengine.UserID{"@alice:hs.test", "@eve:hs.test"}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, f)
	waitIdle(t, f)
	stop()
	joins := f.requests("POST join")
	if len(joins) != 1 || !strings.Contains(joins[0].path, "!fromeve:hs.test") {
		t.Fatalf("joins after the reload: %v", joins)
	}
}

// EnsureDirectRooms follows SetResidents.
func TestSetResidentsDirectRooms(t *testing.T) {
	f := newFakeHS(t)
	s, _ := loggedIn(t, f)
	if err := s.SetResidents([]callengine.UserID{"@bob:hs.test"}); err != nil {
		t.Fatal(err)
	}
	rooms, err := s.EnsureDirectRooms(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rooms["@bob:hs.test"]; !ok || len(rooms) != 1 {
		t.Fatalf("rooms %v, want bob's only", rooms)
	}
}

func TestCheckAvatar(t *testing.T) {
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, 48, 32))); err != nil {
		t.Fatal(err)
	}
	mime, w, h, err := CheckAvatar(buf.Bytes())
	if err != nil || mime != "image/png" || w != 48 || h != 32 {
		t.Fatalf("CheckAvatar(PNG) = %s %dx%d, %v", mime, w, h, err)
	}
	for name, data := range map[string][]byte{
		"empty":     nil,
		"text":      []byte("hello, this is not a picture"),
		"truncated": buf.Bytes()[:20],
		"too large": append(buf.Bytes(), make([]byte, maxAvatar)...),
	} {
		if _, _, _, err := CheckAvatar(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
