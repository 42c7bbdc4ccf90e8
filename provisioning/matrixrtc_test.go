package provisioning

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMatrixRTCKeys(t *testing.T) {
	for _, c := range []struct {
		yaml, problem string
		selfMinted    bool
	}{
		{"", "", false},
		{"matrixrtc:\n  enabled: true\n  livekit_service_url: https://rtc.example.org/livekit/jwt\n", "", false},
		{"matrixrtc:\n  enabled: true\n  livekit:\n    url: wss://lk.example.org\n    api_key_file: /k\n    api_secret_file: /s\n", "", true},
		{"matrixrtc:\n  enabled: true\n", "", false}, // the homeserver's transport, discovered
		{"matrixrtc:\n  enabled: true\n  livekit:\n    url: wss://lk.example.org\n", "needs api_key_file and api_secret_file", false},
		{"matrixrtc:\n  enabled: true\n  livekit_service_url: ftp://x\n", "http:// or https://", false},
		{"matrixrtc:\n  enabled: true\n  livekit:\n    url: \"wss://key:secret@lk.example.org\"\n    api_key_file: /k\n    api_secret_file: /s\n", "user name or password", false},
		{"matrixrtc:\n  enabled: true\n  household: true\n  livekit_service_url: https://rtc.example.org/\n", "needs household.room", false},
	} {
		cfg, err := Parse("intercom.yaml", []byte(minimal+c.yaml), "/etc/intercom")
		if c.problem != "" {
			if err == nil || !strings.Contains(err.Error(), c.problem) {
				t.Errorf("%q: err %v, want %q", c.yaml, err, c.problem)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.yaml, err)
			continue
		}
		if cfg.MatrixRTC.SelfMinted() != c.selfMinted {
			t.Errorf("%q: self-minted %v", c.yaml, cfg.MatrixRTC.SelfMinted())
		}
		if want := cfg.MatrixRTC.Enabled && !strings.Contains(c.yaml, "livekit_service_url"); cfg.MatrixRTC.Discovers() != want {
			t.Errorf("%q: discovers %v, want %v", c.yaml, cfg.MatrixRTC.Discovers(), want)
		}
	}
}

func TestReadLiveKitKeys(t *testing.T) {
	dir := t.TempDir()
	key, secret := filepath.Join(dir, "key"), filepath.Join(dir, "secret")
	os.WriteFile(key, []byte("APIkey\n"), 0o600)
	os.WriteFile(secret, []byte("two\nlines\n"), 0o600)
	m := MatrixRTC{LiveKit: LiveKit{URL: "ws://127.0.0.1:7880", APIKeyFile: key, APISecretFile: secret}}
	if err := m.ReadLiveKitKeys(); err == nil || !strings.Contains(err.Error(), "single line") {
		t.Fatalf("two-line secret accepted: %v", err)
	}
	os.WriteFile(secret, []byte("s3cret-of-enough-length\n"), 0o600)
	if err := m.ReadLiveKitKeys(); err != nil || m.LiveKit.APIKey != "APIkey" || m.LiveKit.Secret != "s3cret-of-enough-length" {
		t.Fatalf("keys %q %q, err %v", m.LiveKit.APIKey, m.LiveKit.Secret, err)
	}
	m.LiveKit.APIKeyFile = filepath.Join(dir, "missing")
	if err := m.ReadLiveKitKeys(); err == nil || !strings.Contains(err.Error(), "api_key_file") {
		t.Fatalf("missing key file: %v", err)
	}
}
