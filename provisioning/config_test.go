package provisioning

import (
	"errors"
	"log/slog"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

// minimal is the smallest valid configuration; cases below append to it or
// replace lines of it.
const minimal = `matrix:
  homeserver: https://matrix.example.org
  user_id: "@intercom:example.org"
  password_file: secrets/password
state_dir: state
residents: ["@alice:example.org"]
`

func TestParseMinimalAppliesDefaults(t *testing.T) {
	c, err := Parse("intercom.yaml", []byte(minimal), "/etc/intercom")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := Config{
		Path: "intercom.yaml",
		Matrix: Matrix{
			Homeserver:   "https://matrix.example.org",
			UserID:       "@intercom:example.org",
			PasswordFile: "/etc/intercom/secrets/password",
			DeviceName:   "Intercom",
			Encryption:   true,
			ShareKeys:    "all",
		},
		StateDir:  "/etc/intercom/state",
		Residents: []string{"@alice:example.org"},
		Ring:      Ring{Timeout: 60 * time.Second},
		Door:      Door{Commands: []string{"!open"}, Reaction: "🔑", Pulse: 3 * time.Second, Window: 3 * time.Minute, ReplyUnauthorized: true},
		Notices:   Notices{Ring: true, Missed: true, Snapshot: true},
		History:   History{Keep: 50, MaxBytes: 16 << 20},
		TURN:      TURN{FromHomeserver: true},
		Household: Household{GroupCall: "off", MaxDevicesPerUser: 4, MaxCalls: 16},
		Hardware:  Hardware{GPIO: "sim", Camera: "testpattern", Audio: "tone"},
		GPIO:      GPIOPins{ButtonActive: "low", Debounce: 50 * time.Millisecond, RingerActive: "high", RelayActive: "high"},
		Camera:    Camera{Device: "/dev/video0", Format: "auto"},
		Audio: Audio{Capture: "default", Playback: "default", Mute: "none",
			Processing: "all", EchoCancellation: true, NoiseSuppression: true, GainControl: true, HighPass: true},
		API:   API{Listen: "127.0.0.1:8080", WHEPMaxViewers: 3},
		MQTT:  MQTT{Discovery: true, DiscoveryPrefix: "homeassistant"},
		Video: Video{Width: 640, Height: 480, FPS: 15, Bitrate: 600_000, MinBitrate: 150_000, MaxBitrate: 1_500_000},
		Log:   Log{Level: "info"},
	}
	c.lines = nil // bookkeeping, not part of the result
	if !reflect.DeepEqual(*c, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", *c, want)
	}
}

func TestParseValues(t *testing.T) {
	tests := []struct {
		name  string
		extra string
		check func(*Config) bool
	}{
		{"absolute path kept", "  access_token_file: /run/creds/token\n",
			func(c *Config) bool { return c.Matrix.AccessTokenFile == "/run/creds/token" }},
		{"duration with minutes", "ring: {timeout: 1m30s}\n",
			func(c *Config) bool { return c.Ring.Timeout == 90*time.Second }},
		{"fractional seconds", "ring: {timeout: 12.5s}\n",
			func(c *Config) bool { return c.Ring.Timeout == 12500*time.Millisecond }},
		{"hex integer", "video: {fps: 0x0a}\n",
			func(c *Config) bool { return c.Video.FPS == 10 }},
		{"block list", "residents:\n  - \"@alice:example.org\"\n  - \"@bob:example.org\"\n",
			func(c *Config) bool { return len(c.Residents) == 2 && c.Residents[1] == "@bob:example.org" }},
		{"empty section", "hardware:\n",
			func(c *Config) bool { return c.Hardware.GPIO == "sim" }},
		{"listen on all interfaces", "api: {listen: \":8080\", token_file: /etc/intercom/api-token}\n",
			func(c *Config) bool { return c.API.Listen == ":8080" }},
		{"IPv6 listen", "api: {listen: \"[::1]:9000\"}\n",
			func(c *Config) bool { return c.API.Listen == "[::1]:9000" }},
		{"alias", "log: &l {level: debug}\n",
			func(c *Config) bool { return c.Log.Level == "debug" && c.Log.SlogLevel() == slog.LevelDebug }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := minimal
			if strings.HasPrefix(tt.extra, "  ") {
				// An indented extra belongs in the matrix section.
				src = strings.Replace(src, "  password_file: secrets/password\n", tt.extra, 1)
			} else if strings.HasPrefix(tt.extra, "residents:") {
				src = strings.Replace(src, "residents: [\"@alice:example.org\"]\n", tt.extra, 1)
			} else {
				src += tt.extra
			}
			c, err := Parse("intercom.yaml", []byte(src), "/etc/intercom")
			if err != nil {
				t.Fatalf("Parse:\n%v", err)
			}
			if !tt.check(c) {
				t.Errorf("unexpected config %v", c)
			}
		})
	}
}

func TestParseProblems(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string // Problems.Error(), one line each
	}{
		{"empty file", "", []string{
			"f.yaml:1: matrix.homeserver: is required",
			"f.yaml:1: matrix.user_id: is required",
			"f.yaml:1: residents: is required",
			"f.yaml:1: state_dir: is required",
		}},
		{"missing key in present section", "state_dir: s\nresidents: [\"@a:b\"]\n\nmatrix:\n  homeserver: http://h\n", []string{
			"f.yaml:4: matrix.user_id: is required",
		}},
		{"unknown key with close spelling", minimal + "residnets: []\n", []string{
			`f.yaml:7: residnets: unknown key "residnets"; did you mean "residents"?`,
		}},
		{"unknown key in section", minimal + "ring:\n  tmeout: 30s\n", []string{
			`f.yaml:8: ring.tmeout: unknown key "tmeout"; did you mean "timeout"?`,
		}},
		{"key in the wrong section", minimal + "timeout: 30s\n", []string{
			`f.yaml:7: timeout: unknown key "timeout" here; did you mean "ring.timeout"?`,
		}},
		{"unknown key without a close one", minimal + "hardware: {strike: relay}\n", []string{
			`f.yaml:7: hardware.strike: unknown key "strike"; known keys in hardware: audio, camera, gpio`,
		}},
		{"bad duration", minimal + "ring:\n  timeout: \"6o s\"\n", []string{
			`f.yaml:8: ring.timeout: "6o s" is not a duration (write e.g. "60s" or "1m30s")`,
		}},
		{"duration without unit", minimal + "ring: {timeout: 60}\n", []string{
			`f.yaml:7: ring.timeout: 60 is not a duration; add a unit, e.g. "60s"`,
		}},
		{"duration too short", minimal + "ring: {timeout: 3s}\n", []string{
			`f.yaml:7: ring.timeout: 3s is out of range; must be between 10s and 1m30s`,
		}},
		{"duration below a millisecond", minimal + "ring: {timeout: 20.0001s}\n", []string{
			`f.yaml:7: ring.timeout: 20.0001s must be a whole number of milliseconds`,
		}},
		{"enum typo", minimal + "hardware: {gpio: pereph}\n", []string{
			`f.yaml:7: hardware.gpio: "pereph" is not one of sim, periph; did you mean "periph"?`,
		}},
		{"enum wrong type", minimal + "log: {level: 3}\n", []string{
			`f.yaml:7: log.level: must be one of debug, info, warn, error; got the number 3`,
		}},
		{"string given a number", strings.Replace(minimal, "password_file: secrets/password", "password_file: secrets/password\n  device_name: 42", 1), []string{
			`f.yaml:5: matrix.device_name: must be a string; got the number 42 (write "42" to use it as text)`,
		}},
		{"no value", minimal + "api:\n  listen:\n", []string{
			`f.yaml:8: api.listen: has no value; remove the key to use the default (127.0.0.1:8080)`,
		}},
		{"section not a mapping hides its required keys", "matrix: true\nstate_dir: s\nresidents: [\"@a:b\"]\n", []string{
			`f.yaml:1: matrix: must be a mapping of keys to values; got the boolean true`,
		}},
		{"duplicate key", minimal + "log: {level: info}\nlog: {level: debug}\n", []string{
			`f.yaml:8: log: is set twice (first on line 7)`,
		}},
		{"merge key", minimal + "base: &b {level: info}\nlog:\n  <<: *b\n", []string{
			`f.yaml:7: base: unknown key "base"; known keys at the top level: ` + topLevelKeys(),
			`f.yaml:9: log.<<: merge keys (<<) are not supported; write the keys out`,
		}},
		{"empty residents", strings.Replace(minimal, `["@alice:example.org"]`, "[]", 1), []string{
			`f.yaml:6: residents: must list at least one Matrix user ID`,
		}},
		{"residents as a string", strings.Replace(minimal, `["@alice:example.org"]`, `"@alice:example.org"`, 1), []string{
			`f.yaml:6: residents: must be a list of Matrix user IDs; got the string "@alice:example.org" (write ["@alice:example.org"])`,
		}},
		{"each bad resident", strings.Replace(minimal, `residents: ["@alice:example.org"]`,
			"residents:\n  - \"@alice:example.org\"\n  - alice\n  - \"@alice:example.org\"\n  - 7", 1), []string{
			`f.yaml:8: residents[1]: "alice" is not a Matrix user ID (@localpart:server): must start with @`,
			`f.yaml:9: residents[2]: "@alice:example.org" is listed twice (also at [0])`,
			`f.yaml:10: residents[3]: must be a string; got the number 7 (write "7" to use it as text)`,
		}},
		{"intercom among residents", strings.Replace(minimal, `"@alice:example.org"`, `"@intercom:example.org"`, 1), []string{
			`f.yaml:6: residents: lists @intercom:example.org, the intercom's own user ID`,
		}},
		{"both secret files", strings.Replace(minimal, "password_file: secrets/password", "password_file: p\n  access_token_file: t", 1), []string{
			`f.yaml:5: matrix.access_token_file: set only one of matrix.password_file and matrix.access_token_file`,
		}},
		{"homeserver not http", strings.Replace(minimal, "https://matrix.example.org", "matrix.example.org", 1), []string{
			`f.yaml:2: matrix.homeserver: "matrix.example.org" must be an http:// or https:// URL such as "https://matrix.example.org"`,
		}},
		{"homeserver with password", strings.Replace(minimal, "https://matrix.example.org", "https://u:p@matrix.example.org", 1), []string{
			`f.yaml:2: matrix.homeserver: must not contain a user name or password; use matrix.password_file`,
		}},
		{"video", minimal + "video: {width: 641, height: \"480\", fps: 1.5}\n", []string{
			`f.yaml:7: video.fps: must be a whole number; got the number 1.5`,
			`f.yaml:7: video.height: must be a number, not the string "480" (remove the quotes)`,
			`f.yaml:7: video.width: 641 must be even`,
		}},
		{"audio processing", minimal + "audio: {processing: off, echo_cancellation: maybe}\n", []string{
			`f.yaml:7: audio.echo_cancellation: must be true or false; got the string "maybe"`,
			`f.yaml:7: audio.processing: "off" is not one of all, none`,
		}},
		{"audio processing none with a stage on", minimal + "audio:\n  processing: none\n  noise_suppression: false\n  echo_cancellation: true\n", []string{
			`f.yaml:10: audio.echo_cancellation: is on, but audio.processing: none switches every stage off; remove one of the two`,
		}},
		{"video out of range", minimal + "video: {width: 99999999999}\n", []string{
			`f.yaml:7: video.width: 99999999999 is out of range`,
		}},
		{"video bitrate bounds crossed", minimal + "video: {min_bitrate: 900000, max_bitrate: 800000}\n", []string{
			`f.yaml:7: video.min_bitrate: 900000 is above video.max_bitrate (800000)`,
		}},
		{"video bitrate outside its bounds", minimal + "video: {bitrate: 100000}\n", []string{
			`f.yaml:7: video.bitrate: 100000 is outside video.min_bitrate..video.max_bitrate (150000..1500000)`,
		}},
		{"listen without port", minimal + "api: {listen: localhost}\n", []string{
			`f.yaml:7: api.listen: "localhost" must be host:port, such as "127.0.0.1:8080"`,
		}},
		{"listen port zero", minimal + "api: {listen: \"127.0.0.1:0\"}\n", []string{
			`f.yaml:7: api.listen: "127.0.0.1:0": port must be a number from 1 to 65535`,
		}},
		{"empty path", strings.Replace(minimal, "state_dir: state", `state_dir: ""`, 1), []string{
			`f.yaml:5: state_dir: must not be empty`,
		}},
		{"syntax error", minimal + "ring:\n timeout: 1s\n  x: [\n", []string{
			`f.yaml:9: invalid YAML: mapping values are not allowed in this context`,
		}},
		{"two documents", minimal + "---\nlog: {level: info}\n", []string{
			`f.yaml:7: only one YAML document is allowed (remove the ---)`,
		}},
		{"top level a list", "- a\n- b\n", []string{
			`f.yaml:1: the file must be a mapping of keys to values; got a list`,
		}},
		{"control characters in a key stay on one line", minimal + "\"a\\nb\": 1\n", []string{
			`f.yaml:7: a\nb: unknown key "a\nb"; known keys at the top level: ` + topLevelKeys(),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("f.yaml", []byte(tt.src), "/etc/intercom")
			if c != nil {
				t.Errorf("Parse returned a config along with an error")
			}
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("Parse error %v (%T) is not Problems", err, err)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("errors.Is(err, ErrInvalidConfig) = false")
			}
			if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// TestParseCollectsEveryProblem checks that one pass reports every mistake
// in a file, not just the first.
func TestParseCollectsEveryProblem(t *testing.T) {
	src := `matrix:
  homeserver: ftp://x
  userid: "@a:b"
state_dir: 5
residents: [bob]
ring: {timeout: 1h}
hardware: {camera: usb}
log: {level: loud}
`
	_, err := Parse("f.yaml", []byte(src), "")
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("Parse = %v, want Problems", err)
	}
	keys := map[string]bool{}
	for _, p := range ps {
		keys[p.Key] = true
	}
	for _, k := range []string{"matrix.homeserver", "matrix.userid", "matrix.user_id", "state_dir", "residents[0]", "ring.timeout", "hardware.camera", "log.level"} {
		if !keys[k] {
			t.Errorf("no problem reported for %s; got:\n%v", k, err)
		}
	}
}

func TestMatrixUserID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"@alice:example.org", true},
		{"@alice:example.org:8448", true},
		{"@alice:1.2.3.4", true},
		{"@alice:[::1]", true},
		{"@alice:[::1]:8448", true},
		{"@Old.Style!user:example.org", true}, // historical localpart
		{"@a=b_c-d/e+f:matrix.org", true},
		{"alice:example.org", false},
		{"@alice", false},
		{"@:example.org", false},
		{"@alice:", false},
		{"@alice:example.org:", false},
		{"@alice:example.org:port", false},
		{"@alice:example.org:123456", false},
		{"@al ice:example.org", false},
		{"@alicé:example.org", false},
		{"@alice:exa_mple.org", false},
		{"@alice:[::1", false},
		{"@alice:[1.2.3.4]", false},
		{"@alice:[::1]8448", false},
		{"@" + strings.Repeat("a", 250) + ":example.org", false},
	}
	for _, tt := range tests {
		if err := matrixUserID(tt.id); (err == nil) != tt.ok {
			t.Errorf("matrixUserID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
	}
}

func TestClosest(t *testing.T) {
	keys := []string{"matrix", "state_dir", "residents", "ring", "hardware", "api", "video", "log"}
	tests := []struct{ in, want string }{
		{"residnets", "residents"},
		{"Residents", "residents"},
		{"state-dir", "state_dir"},
		{"lg", "log"},
		{"fps", ""},
		{"door", ""},
	}
	for _, tt := range tests {
		if got := closest(tt.in, keys); got != tt.want {
			t.Errorf("closest(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseResolvesPathsAgainstDir(t *testing.T) {
	dir := t.TempDir()
	c, err := Parse("intercom.yaml", []byte(minimal), dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "state"); c.StateDir != want {
		t.Errorf("StateDir = %q, want %q", c.StateDir, want)
	}
	if want := filepath.Join(dir, "secrets", "password"); c.Matrix.PasswordFile != want {
		t.Errorf("PasswordFile = %q, want %q", c.Matrix.PasswordFile, want)
	}
}

func TestParseTooLarge(t *testing.T) {
	data := []byte(minimal + "#" + strings.Repeat("x", maxConfigSize) + "\n")
	_, err := Parse("f.yaml", data, "")
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Parse of a huge file = %v, want a size problem", err)
	}
}

func TestSlogLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError, "": slog.LevelInfo} {
		if got := (Log{Level: in}).SlogLevel(); got != want {
			t.Errorf("SlogLevel(%q) = %v, want %v", in, got, want)
		}
	}
}

// The microphone's processing: each stage on by default and off one by
// one, or all at once with processing: none.
func TestAudioProcessing(t *testing.T) {
	for _, tc := range []struct {
		audio                   string
		echo, noise, gain, high bool
	}{
		{"", true, true, true, true},
		{"audio: {echo_cancellation: false}\n", false, true, true, true},
		{"audio: {noise_suppression: false, gain_control: false, high_pass: false}\n", true, false, false, false},
		{"audio: {processing: none}\n", false, false, false, false},
		{"audio: {processing: none, high_pass: false}\n", false, false, false, false},
	} {
		c, err := Parse("f.yaml", []byte(minimal+tc.audio), "/etc/intercom")
		if err != nil {
			t.Fatalf("%q: %v", tc.audio, err)
		}
		e, n, g, h := c.Audio.Stages()
		if e != tc.echo || n != tc.noise || g != tc.gain || h != tc.high {
			t.Errorf("%q: stages echo=%v noise=%v gain=%v high-pass=%v, want %v %v %v %v", tc.audio, e, n, g, h, tc.echo, tc.noise, tc.gain, tc.high)
		}
	}
}

func TestHardwareKeys(t *testing.T) {
	cfg := minimal + `hardware: {gpio: periph, camera: v4l2, audio: alsa}
gpio: {button: GPIO17, button_active: high, debounce: 20ms, relay: GPIO22, relay_active: low}
camera: {device: /dev/video2, format: mjpeg}
audio: {capture: "hw:1,0", playback: plughw:1, capture_gain_db: 6, playback_gain_db: -3, mute: speaker}
`
	c, err := Parse("f.yaml", []byte(cfg), "/etc/intercom")
	if err != nil {
		t.Fatal(err)
	}
	want := GPIOPins{Button: "GPIO17", ButtonActive: "high", Debounce: 20 * time.Millisecond, RingerActive: "high", Relay: "GPIO22", RelayActive: "low"}
	if c.GPIO != want {
		t.Errorf("gpio = %+v, want %+v", c.GPIO, want)
	}
	if c.Camera != (Camera{Device: "/dev/video2", Format: "mjpeg"}) {
		t.Errorf("camera = %+v", c.Camera)
	}
	if c.Audio != (Audio{Capture: "hw:1,0", Playback: "plughw:1", CaptureGainDB: 6, PlaybackGainDB: -3, Mute: "speaker",
		Processing: "all", EchoCancellation: true, NoiseSuppression: true, GainControl: true, HighPass: true}) {
		t.Errorf("audio = %+v", c.Audio)
	}

	for _, bad := range []string{
		minimal + "hardware: {gpio: periph}\n",
		minimal + "hardware: {gpio: periph}\ngpio: {button: GPIO17, relay: GPIO17}\n",
	} {
		if _, err := Parse("f.yaml", []byte(bad), "/etc/intercom"); err == nil {
			t.Errorf("accepted:\n%s", bad)
		}
	}
}

// topLevelKeys lists the schema's top-level names as the unknown-key
// message does, so new sections do not break these expectations.
func topLevelKeys() string {
	seen := map[string]bool{}
	var out []string
	for _, k := range Keys() {
		top, _, _ := strings.Cut(k, ".")
		if !seen[top] {
			seen[top] = true
			out = append(out, top)
		}
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// TestPlainHTTPHomeserverWarns: the password and the access token must not
// cross a network unencrypted; plain HTTP is fine only on this machine
// (issue 19, finding 8).
func TestPlainHTTPHomeserverWarns(t *testing.T) {
	for _, tt := range []struct {
		url  string
		warn bool
	}{
		{"https://matrix.example.org", false},
		{"http://127.0.0.1:8008", false},
		{"http://127.8.9.10:8008", false},
		{"http://localhost:8008", false},
		{"http://LOCALHOST.:8008", false},
		{"http://[::1]:8008", false},
		{"http://matrix.example.org", true},
		{"http://192.168.1.10:8008", true},
		{"http://[fe80::1]:8008", true},
		{"HTTP://matrix.example.org", true},
		{"http://localhost.example.org", true},
	} {
		t.Run(tt.url, func(t *testing.T) {
			src := strings.Replace(minimal, "https://matrix.example.org", tt.url, 1)
			c, err := Parse("f.yaml", []byte(src), "/etc/intercom")
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !tt.warn {
				if len(c.Warnings) != 0 {
					t.Fatalf("warnings %v", c.Warnings)
				}
				return
			}
			if len(c.Warnings) != 1 {
				t.Fatalf("warnings %v, want one", c.Warnings)
			}
			if w := c.Warnings[0].String(); !strings.HasPrefix(w, "f.yaml:2: matrix.homeserver: ") || !strings.Contains(w, "https://") {
				t.Errorf("warning %q", w)
			}
		})
	}
}
