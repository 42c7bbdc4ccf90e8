package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/dendrite"
)

// writePNG writes a small square PNG of one colour.
func writePNG(t *testing.T, path string, c color.Color) {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 64, 64))
	for y := range 64 {
		for x := range 64 {
			img.Set(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestProvisionRoomLook: provision names every direct room after the
// device and gives it matrix.room_avatar; a second run changes nothing
// and uploads nothing; a name or avatar changed by someone else is
// repaired; a new image replaces the avatar everywhere; a file that is not
// an image fails provision with the key's name.
func TestProvisionRoomLook(t *testing.T) {
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
	dir := filepath.Dir(path)
	writePNG(t, filepath.Join(dir, "avatar.png"), color.RGBA{R: 200, A: 255})
	cfg, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	withAvatar := strings.Replace(string(cfg), "  device_name: Front door\n", "  device_name: Front door\n  room_avatar: ./avatar.png\n", 1)
	if err := os.WriteFile(path, []byte(withAvatar), 0o600); err != nil {
		t.Fatal(err)
	}

	provisionOnce := func(name string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if code := runIntercom(t, []string{"provision", "--config", path}, &out, &errOut); code != 0 {
			t.Fatalf("%s provision: exit %d\n%s%s", name, code, out.String(), errOut.String())
		}
		t.Logf("%s provision:\n%s%s", name, out.String(), errOut.String())
		return out.String()
	}
	type avatar struct {
		URL  string `json:"url"`
		Info struct {
			Mimetype string `json:"mimetype"`
			W        int    `json:"w"`
		} `json:"info"`
	}
	token := func() string {
		t.Helper()
		tok, _ := readCreds(t, filepath.Join(dir, "state"))
		return tok
	}
	state := func(room, typ string, out any) {
		t.Helper()
		matrixCall(ctx, t, hs.BaseURL, http.MethodGet, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state/"+typ+"/", token(), out)
	}
	look := func(room string) (string, avatar) {
		t.Helper()
		var name struct {
			Name string `json:"name"`
		}
		var av avatar
		state(room, "m.room.name", &name)
		state(room, "m.room.avatar", &av)
		return name.Name, av
	}

	first := provisionOnce("first")
	if k := strings.Count(first, "set avatar"); k != 2 {
		t.Errorf("first run set %d avatars, want 2", k)
	}
	aliceRoom := roomOfOutput(t, first, alice.UserID)
	name, av := look(aliceRoom)
	if name != "Front door" || !strings.HasPrefix(av.URL, "mxc://") || av.Info.Mimetype != "image/png" || av.Info.W != 64 {
		t.Fatalf("alice's room looks like %q %+v", name, av)
	}
	_, bobAv := look(roomOfOutput(t, first, bob.UserID))
	if bobAv.URL != av.URL {
		t.Errorf("the avatar was uploaded twice: %s, %s", av.URL, bobAv.URL)
	}

	second := provisionOnce("second")
	if !strings.Contains(second, "nothing changed") || strings.Count(second, "unchanged") != 2 {
		t.Fatalf("second run changed something:\n%s", second)
	}
	if _, again := look(aliceRoom); again.URL != av.URL {
		t.Fatalf("second run replaced the avatar %s → %s", av.URL, again.URL)
	}

	// Someone renames alice's room and clears its avatar.
	put := func(typ, body string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut,
			hs.BaseURL+"/_matrix/client/v3/rooms/"+url.PathEscape(aliceRoom)+"/state/"+typ+"/", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("PUT %s: HTTP %d", typ, resp.StatusCode)
		}
	}
	put("m.room.name", `{"name":"Garage"}`)
	put("m.room.avatar", `{}`)
	third := provisionOnce("third (repair)")
	if !strings.Contains(third, "repaired; set name and avatar") || !strings.Contains(third, "1 change(s)") {
		t.Fatalf("repair not reported:\n%s", third)
	}
	if name, av := look(aliceRoom); name != "Front door" || av.URL == "" {
		t.Fatalf("after repair alice's room looks like %q %+v", name, av)
	}
	if fourth := provisionOnce("fourth"); !strings.Contains(fourth, "nothing changed") {
		t.Fatalf("run after the repair changed something:\n%s", fourth)
	}

	// A new picture replaces the avatar in every room.
	writePNG(t, filepath.Join(dir, "avatar.png"), color.RGBA{B: 200, A: 255})
	fifth := provisionOnce("fifth (new picture)")
	if strings.Count(fifth, "set avatar") != 2 || !strings.Contains(fifth, "2 change(s)") {
		t.Fatalf("new picture not set everywhere:\n%s", fifth)
	}

	// Not an image: provision fails and names the key.
	if err := os.WriteFile(filepath.Join(dir, "avatar.png"), []byte("not a picture at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := runIntercom(t, []string{"provision", "--config", path}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "matrix.room_avatar") {
		t.Fatalf("broken avatar: exit %d\n%s%s", code, out.String(), errOut.String())
	}
}

// roomOfOutput finds a resident's room in provision's summary.
func roomOfOutput(t *testing.T, out, user string) string {
	t.Helper()
	m := regexp.MustCompile(`resident ` + regexp.QuoteMeta(user) + `\s+room (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no room for %s in:\n%s", user, out)
	}
	return m[1]
}

// readCreds reads the access token and device ID provision kept.
func readCreds(t *testing.T, stateDir string) (token, device string) {
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
