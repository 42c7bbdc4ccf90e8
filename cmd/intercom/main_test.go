package main

import (
	"github.com/doorbell/intercom/provisioning/provisioningtest"

	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "intercom ") {
		t.Fatalf("code %d out %q", code, out.String())
	}
}

// A broken config lists every problem with FILE:LINE and exits 1, for
// check-config and for run alike: the daemon never starts half-way.
func TestBrokenConfigStopsEverything(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "intercom.yaml")
	cfg := `matrix:
  homeserver: ftp://nowhere
  user_id: intercom
state_dir: ./state
residnets: ["@alice:example.org"]
ring:
  timeout: soon
`
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"check-config", "run"} {
		t.Run(cmd, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run([]string{cmd, "--config", path}, &out, &errOut)
			if code != 1 {
				t.Fatalf("exit %d, want 1; stderr:\n%s", code, errOut.String())
			}
			msg := errOut.String()
			for _, want := range []string{
				"intercom.yaml:2: matrix.homeserver",
				"intercom.yaml:3: matrix.user_id",
				"intercom.yaml:5: residnets",
				`did you mean "residents"`,
				"intercom.yaml:7: ring.timeout",
			} {
				if !strings.Contains(msg, want) {
					t.Errorf("missing %q in:\n%s", want, msg)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "state")); err == nil {
				t.Error("state directory created for a broken config")
			}
		})
	}
}

func TestCheckConfigOKHidesSecrets(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "password"), []byte("hunter2-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mqtt-password"), []byte("mqtt-secret-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "intercom.yaml")
	cfg := "matrix:\n  homeserver: http://127.0.0.1:8008\n  user_id: \"@door:example.org\"\n  password_file: ./password\nstate_dir: ./state\nresidents: [\"@alice:example.org\"]\n" +
		"mqtt:\n  broker: mqtt://127.0.0.1:1883\n  username: door\n  password_file: ./mqtt-password\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"check-config", "--config", path}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if strings.Contains(out.String()+errOut.String(), "hunter2") || strings.Contains(out.String()+errOut.String(), "mqtt-secret") {
		t.Fatal("check-config printed a password")
	}
	if !strings.Contains(out.String(), `mqtt: publishing to mqtt://127.0.0.1:1883 as client "intercom-door", user "door" with a password; topics intercom/door/…`) {
		t.Errorf("check-config does not say what MQTT does:\n%s", out.String())
	}
}

// check-config warns about a secret other users can read, and still passes.
func TestCheckConfigWarnsWorldReadableSecret(t *testing.T) {
	path := provisioningtest.WriteConfig(t, provisioningtest.Minimal, 0o644)
	var out, errOut bytes.Buffer
	if code := run([]string{"check-config", "--config", path}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), "warning: ") || !strings.Contains(errOut.String(), "can be read by other users (mode 0644); run chmod 600") {
		t.Fatalf("no warning about the readable password file:\n%s", errOut.String())
	}
	if strings.Contains(out.String()+errOut.String(), "hunter2") {
		t.Fatal("check-config printed the password")
	}
}

// check-config says where MatrixRTC's transport comes from: the
// homeserver's advertisement (asked with the kept login), nothing, or a
// homeserver it cannot reach (offline), without creating state_dir.
func TestCheckConfigMatrixRTCTransport(t *testing.T) {
	advertise := ""
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports" && advertise != "" {
			fmt.Fprintf(w, `{"rtc_transports":[{"type":"livekit","livekit_service_url":%q}]}`, advertise)
			return
		}
		http.Error(w, `{"errcode":"M_UNRECOGNIZED"}`, http.StatusNotFound)
	}))
	defer hs.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	for _, tc := range []struct {
		name, homeserver, advertise, extra, want string
	}{
		{"discovered", hs.URL, "https://rtc.example.org/livekit/jwt", "",
			"matrixrtc: transport discovered from the homeserver: https://rtc.example.org/livekit/jwt (via " + hs.URL + "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports)"},
		{"none advertised", hs.URL, "", "", "matrixrtc: none advertised: MatrixRTC ringing stays off until"},
		{"offline", closed.URL, "", "", "matrixrtc: the homeserver " + closed.URL + " could not be reached (offline?)"},
		{"configured", closed.URL, "", "  livekit_service_url: https://jwt.example.org\n",
			"matrixrtc: transport from the configuration: https://jwt.example.org (tokens from its /sfu/get)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			advertise = tc.advertise
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "password"), []byte("door-password\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "intercom.yaml")
			cfg := "matrix:\n  homeserver: " + tc.homeserver + "\n  user_id: \"@door:example.org\"\n  password_file: ./password\n" +
				"state_dir: ./state\nresidents: [\"@alice:example.org\"]\nmatrixrtc:\n  enabled: true\n" + tc.extra
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errOut bytes.Buffer
			if code := run([]string{"check-config", "--config", path}, &out, &errOut); code != 0 {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			if !strings.Contains(out.String(), tc.want) {
				t.Fatalf("output:\n%s\nwant a line with %q", out.String(), tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "state")); err == nil {
				t.Error("check-config created the state directory")
			}
		})
	}
}
