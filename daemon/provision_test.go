package daemon

import (
	"bytes"
	"encoding/json"
	"errors"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/doorbell/intercom/matrix/matrixtest"
	"github.com/doorbell/intercom/provisioning/provisioningtest"
)

// provisionRun runs Provision once and returns its exit status and
// output.
func provisionRun(t *testing.T, path string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errs bytes.Buffer
	code = Provision(t.Context(), path, false, &out, &errs)
	return code, out.String(), errs.String()
}

// writePNG writes a small PNG beside the config and returns its path.
func writePNG(t *testing.T, dir string) string {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, image.NewGray(image.Rect(0, 0, 8, 8))); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "avatar.png")
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// addMatrixKey adds a key to the matrix section of the config at path.
func addMatrixKey(t *testing.T, path, line string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte("matrix:\n"), []byte("matrix:\n  "+line+"\n"), 1)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestProvision: the first run logs in, creates alice's room with the
// configured avatar and the household room; a second run changes
// nothing; after alice left her room and the household room, a third
// replaces her room and invites her again.
func TestProvision(t *testing.T) {
	hs := newHS(t)
	path := writeConfigWith(t, hs, true, "household:\n  room: \"#household:hs.test\"\n")
	addMatrixKey(t, path, "room_avatar: "+writePNG(t, filepath.Dir(path)))

	code, out, errs := provisionRun(t, path)
	if code != 0 {
		t.Fatalf("first run: %d\n%s%s", code, out, errs)
	}
	for _, want := range []string{
		"logged in now; access token and device ID kept in",
		"resident @alice:hs.test", "created; @alice:hs.test is invited; set avatar",
		"household", "created; every resident is invited",
		"identity", "new identity; device cross-signed; recovery key saved in",
		"4 change(s)", // the login, alice's room, the identity, the household room
		"password is no longer needed and may be removed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("first run's output lacks %q:\n%s", want, out)
		}
	}
	if fi, err := os.Stat(filepath.Join(filepath.Dir(path), "state", "recovery-key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("recovery key file: %v, %v", fi, err)
	}
	home, ok := hs.Alias("#household:hs.test")
	if !ok {
		t.Fatal("household room not created")
	}
	ups := hs.Uploads()
	if len(ups) != 1 || ups[0].ContentType != "image/png" {
		t.Fatalf("uploads %+v", ups)
	}
	var direct map[string][]string
	raw, _ := hs.AccountData("m.direct")
	if err := json.Unmarshal(raw, &direct); err != nil || len(direct["@alice:hs.test"]) != 1 {
		t.Fatalf("m.direct %s", raw)
	}
	alice := direct["@alice:hs.test"][0]
	if av, _ := hs.StateOf(alice, "m.room.avatar", ""); !strings.Contains(string(av), ups[0].URI) {
		t.Errorf("alice's room avatar %s", av)
	}

	code, out, errs = provisionRun(t, path)
	if line, _ := findLine(out, "resident @alice:hs.test"); code != 0 || !strings.Contains(out, "kept session (no new login)") ||
		!strings.Contains(out, "nothing changed") || !strings.Contains(line, alice) || !strings.HasSuffix(line, "unchanged") {
		t.Errorf("second run: %d\n%s%s", code, out, errs)
	}
	if n := len(hs.Uploads()); n != 1 {
		t.Errorf("second run uploaded the avatar again (%d uploads)", n)
	}

	hs.SetMembership(alice, "@alice:hs.test", "leave")
	hs.SetMembership(home, "@alice:hs.test", "leave")
	code, out, errs = provisionRun(t, path)
	if code != 0 || !strings.Contains(out, "replaced ("+alice+" was no longer a usable direct room); @alice:hs.test is invited") ||
		!strings.Contains(out, "invited 1 resident(s)") || !strings.Contains(out, "2 change(s)") {
		t.Errorf("third run: %d\n%s%s", code, out, errs)
	}
	if hs.Membership(home, "@alice:hs.test") != "invite" {
		t.Errorf("alice is %q in the household room", hs.Membership(home, "@alice:hs.test"))
	}
}

// TestProvisionFails: every failure is one line on stderr and exit
// status 1.
func TestProvisionFails(t *testing.T) {
	hs := newHS(t)
	badAvatar := writeConfigWith(t, hs, true, "")
	notImage := filepath.Join(filepath.Dir(badAvatar), "avatar.txt")
	if err := os.WriteFile(notImage, []byte("not an image"), 0o600); err != nil {
		t.Fatal(err)
	}
	addMatrixKey(t, badAvatar, "room_avatar: "+notImage)

	wrong := matrixtest.NewServer(t, matrixtest.Options{Password: "another password"})
	for name, tc := range map[string]struct {
		path string
		want string
	}{
		"no file":         {filepath.Join(t.TempDir(), "missing.yaml"), "intercom: "},
		"config problems": {provisioningtest.WriteConfig(t, provisioningtest.Minimal+"ring:\n  timeout: forever\n", 0o600), "problem(s)"},
		"wrong password":  {writeConfig(t, wrong, ""), "intercom provision: log in: "},
		"avatar":          {badAvatar, "matrix.room_avatar " + notImage + ": avatar: text/plain"},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errs := provisionRun(t, tc.path)
			if code != 1 || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d, stdout %q, stderr:\n%s\nwant %q", code, out, errs, tc.want)
			}
		})
	}
}

// TestProvisionPrintsRecoveryKey: --print-recovery-key shows a new
// identity's recovery key once and keeps it nowhere.
func TestProvisionPrintsRecoveryKey(t *testing.T) {
	hs := newHS(t)
	path := writeConfigWith(t, hs, true, "")
	var out, errs strings.Builder
	if code := Provision(t.Context(), path, true, &out, &errs); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errs.String())
	}
	line, ok := findLine(out.String(), "recovery key (shown once")
	if !ok || len(strings.Fields(line)) < 10 {
		t.Errorf("no recovery key printed:\n%s", out.String())
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(path), "state", "recovery-key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("recovery key kept in state_dir: %v", err)
	}
}
