package provisioning

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeFile writes a file under dir with the given mode and returns its path.
func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // WriteFile's mode is subject to umask
		t.Fatal(err)
	}
	return p
}

// noEnv is an environment without the intercom's variables.
func noEnv(string) (string, bool) { return "", false }

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

const secretConfig = `matrix:
  homeserver: https://matrix.example.org
  user_id: "@intercom:example.org"
  SECRET
state_dir: state
residents: ["@alice:example.org"]
`

func TestLoadSecrets(t *testing.T) {
	tests := []struct {
		name      string
		secretKey string            // replaces SECRET in secretConfig
		files     map[string]string // name → content, written 0600
		mode      os.FileMode       // of the files, 0600 if zero
		env       map[string]string
		password  string
		token     string
		problems  []string // substrings, one per expected problem
		warnings  []string
	}{
		{name: "password file, final newline dropped", secretKey: "password_file: pw",
			files: map[string]string{"pw": "hunter2\n"}, password: "hunter2"},
		{name: "token file, CRLF dropped", secretKey: "access_token_file: tok",
			files: map[string]string{"tok": "syt_abc\r\n"}, token: "syt_abc"},
		{name: "readable by others", secretKey: "password_file: pw",
			files: map[string]string{"pw": "hunter2"}, mode: 0o644, password: "hunter2",
			warnings: []string{"f.yaml:4: matrix.password_file: ", "can be read by other users (mode 0644)"}},
		{name: "password from environment", secretKey: "device_name: x",
			env: map[string]string{EnvPassword: "envpw"}, password: "envpw"},
		{name: "token from environment", secretKey: "device_name: x",
			env: map[string]string{EnvAccessToken: "envtok"}, token: "envtok"},
		{name: "file wins over environment", secretKey: "password_file: pw",
			files: map[string]string{"pw": "filepw"}, env: map[string]string{EnvPassword: "envpw"}, password: "filepw",
			warnings: []string{"INTERCOM_MATRIX_PASSWORD is set in the environment but ignored"}},
		{name: "empty environment variable is unset", secretKey: "password_file: pw",
			files: map[string]string{"pw": "filepw"}, env: map[string]string{EnvPassword: ""}, password: "filepw"},
		{name: "missing file", secretKey: "password_file: pw",
			problems: []string{"f.yaml:4: matrix.password_file: ", "pw does not exist"}},
		{name: "empty file", secretKey: "access_token_file: tok",
			files: map[string]string{"tok": "\n"}, problems: []string{"f.yaml:4: matrix.access_token_file: ", "tok is empty"}},
		{name: "two lines", secretKey: "password_file: pw",
			files: map[string]string{"pw": "a\nb\n"}, problems: []string{"must hold the secret on a single line"}},
		{name: "directory", secretKey: "password_file: .",
			problems: []string{"is not a regular file"}},
		{name: "no credentials", secretKey: "device_name: x",
			problems: []string{"f.yaml:1: matrix: no credentials: set password_file or access_token_file, or INTERCOM_MATRIX_PASSWORD or INTERCOM_MATRIX_ACCESS_TOKEN in the environment"}},
		{name: "password file and token in environment", secretKey: "password_file: pw",
			files: map[string]string{"pw": "pw"}, env: map[string]string{EnvAccessToken: "tok"},
			problems: []string{"f.yaml:1: matrix: both a password (", ") and an access token (INTERCOM_MATRIX_ACCESS_TOKEN) are configured; use only one"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			mode := tt.mode
			if mode == 0 {
				mode = 0o600
			}
			for name, content := range tt.files {
				writeFile(t, dir, name, content, mode)
			}
			c, err := Parse("f.yaml", []byte(strings.Replace(secretConfig, "SECRET", tt.secretKey, 1)), dir)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			err = c.loadSecrets(env(tt.env))
			if len(tt.problems) > 0 {
				var ps Problems
				if !errors.As(err, &ps) || len(ps) != 1 {
					t.Fatalf("loadSecrets = %v, want one problem", err)
				}
				for _, s := range tt.problems {
					if !strings.Contains(ps[0].String(), s) {
						t.Errorf("problem %q does not contain %q", ps[0], s)
					}
				}
				if c.Matrix.Password != "" || c.Matrix.AccessToken != "" {
					t.Errorf("secrets set despite problems")
				}
				return
			}
			if err != nil {
				t.Fatalf("loadSecrets: %v", err)
			}
			if c.Matrix.Password != tt.password || c.Matrix.AccessToken != tt.token {
				t.Errorf("password, token = %q, %q; want %q, %q", c.Matrix.Password, c.Matrix.AccessToken, tt.password, tt.token)
			}
			if len(tt.warnings) == 0 && len(c.Warnings) > 0 {
				t.Errorf("unexpected warnings %v", c.Warnings)
			}
			if len(tt.warnings) > 0 {
				if len(c.Warnings) != 1 {
					t.Fatalf("warnings = %v, want one", c.Warnings)
				}
				for _, s := range tt.warnings {
					if !strings.Contains(c.Warnings[0].String(), s) {
						t.Errorf("warning %q does not contain %q", c.Warnings[0], s)
					}
				}
				// Loading again does not repeat the warning.
				if err := c.loadSecrets(env(tt.env)); err != nil || len(c.Warnings) != 1 {
					t.Errorf("second loadSecrets: %v, warnings %v", err, c.Warnings)
				}
			}
		})
	}
}

func TestLoad(t *testing.T) {
	t.Setenv(EnvPassword, "")
	t.Setenv(EnvAccessToken, "")
	dir := t.TempDir()
	writeFile(t, dir, "secrets/password", "hunter2\n", 0o600)
	path := writeFile(t, dir, "intercom.yaml", minimal, 0o644)
	c, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Matrix.Password != "hunter2" {
		t.Errorf("Password = %q", c.Matrix.Password)
	}
	if c.StateDir != filepath.Join(dir, "state") || c.Path != path {
		t.Errorf("StateDir = %q, Path = %q", c.StateDir, c.Path)
	}
}

func TestLoadFromEnvironment(t *testing.T) {
	t.Setenv(EnvPassword, "")
	t.Setenv(EnvAccessToken, "syt_token")
	dir := t.TempDir()
	src := strings.Replace(minimal, "  password_file: secrets/password\n", "", 1)
	c, err := Load(writeFile(t, dir, "intercom.yaml", src, 0o644))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Matrix.AccessToken != "syt_token" {
		t.Errorf("AccessToken = %q", c.Matrix.AccessToken)
	}
}

func TestLoadProblems(t *testing.T) {
	t.Setenv(EnvPassword, "")
	t.Setenv(EnvAccessToken, "")
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"content and secret problems together", minimal + "log: {level: loud}\n", []string{
			"intercom.yaml:4: matrix.password_file: ",
			`intercom.yaml:7: log.level: "loud" is not one of debug, info, warn, error`,
		}},
		{"a conflict found twice is reported once",
			strings.Replace(minimal, "password_file: secrets/password", "password_file: secrets/password\n  access_token_file: secrets/password", 1), []string{
				"intercom.yaml:5: matrix.access_token_file: set only one of matrix.password_file and matrix.access_token_file",
			}},
		{"syntax error alone", minimal + "ring: [\n", []string{
			"intercom.yaml:7: invalid YAML: ",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if !strings.Contains(tt.name, "content") {
				writeFile(t, dir, "secrets/password", "hunter2\n", 0o600)
			}
			_, err := Load(writeFile(t, dir, "intercom.yaml", tt.src, 0o644))
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("Load = %v, want Problems", err)
			}
			if len(ps) != len(tt.want) {
				t.Fatalf("Load problems:\n%v\nwant %d", err, len(tt.want))
			}
			for i, p := range ps {
				got := strings.TrimPrefix(p.String(), dir+string(filepath.Separator))
				if !strings.HasPrefix(got, tt.want[i]) {
					t.Errorf("problem %d = %q, want prefix %q", i, got, tt.want[i])
				}
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Load of a missing file = %v, want a not-exist I/O error", err)
	}
}

func TestPasswordFileMayGoAfterFirstLogin(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "intercom.yaml")
	cfg := "matrix:\n  homeserver: http://127.0.0.1:8008\n  user_id: \"@door:example.org\"\n  password_file: ./password\nstate_dir: ./state\nresidents: [\"@alice:example.org\"]\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(cfgPath); err == nil || !strings.Contains(err.Error(), "password does not exist") {
		t.Fatalf("before the first login a missing password file must be an error, got %v", err)
	}
	st, err := OpenState(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SaveCredentials(Credentials{Homeserver: "http://127.0.0.1:8008", UserID: "@door:example.org", DeviceID: "D", AccessToken: "t"}); err != nil {
		t.Fatal(err)
	}
	c, err := Load(cfgPath)
	if err != nil {
		t.Fatalf("with a stored session: %v", err)
	}
	if c.Matrix.Password != "" || len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0].Msg, "using the session kept in") {
		t.Fatalf("password %q warnings %v", c.Matrix.Password, c.Warnings)
	}
}

// TestEverySecretFileModeIsChecked: every file that holds a secret, not
// only the Matrix password, is checked for other users' access (issue 19,
// finding 8).
func TestEverySecretFileModeIsChecked(t *testing.T) {
	const src = minimal + `turn:
  uris: ["turn:turn.example.org:3478"]
  username: door
  password_file: turn
matrixrtc:
  enabled: true
  livekit:
    url: wss://lk.example.org
    api_key_file: lk-key
    api_secret_file: lk-secret
`
	lines := map[string]string{ // key → where the warning must point
		"turn.password_file":                "f.yaml:10: turn.password_file: ",
		"matrixrtc.livekit.api_key_file":    "f.yaml:15: matrixrtc.livekit.api_key_file: ",
		"matrixrtc.livekit.api_secret_file": "f.yaml:16: matrixrtc.livekit.api_secret_file: ",
	}
	for _, tt := range []struct {
		name     string
		modes    map[string]os.FileMode // file → mode
		warnings []string               // keys warned about
	}{
		{"all private", map[string]os.FileMode{"turn": 0o600, "lk-key": 0o600, "lk-secret": 0o400}, nil},
		{"TURN password readable by the group", map[string]os.FileMode{"turn": 0o640, "lk-key": 0o600, "lk-secret": 0o600},
			[]string{"turn.password_file"}},
		{"LiveKit pair readable by all", map[string]os.FileMode{"turn": 0o600, "lk-key": 0o644, "lk-secret": 0o604},
			[]string{"matrixrtc.livekit.api_key_file", "matrixrtc.livekit.api_secret_file"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, "secrets/password", "hunter2\n", 0o600)
			for name, mode := range tt.modes {
				writeFile(t, dir, name, "s3cret\n", mode)
			}
			c, err := Parse("f.yaml", []byte(src), dir)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			for range 2 { // loading again does not repeat a warning
				if err := c.loadSecrets(noEnv); err != nil {
					t.Fatalf("loadSecrets: %v", err)
				}
				if len(c.Warnings) != len(tt.warnings) {
					t.Fatalf("warnings %v, want %d", c.Warnings, len(tt.warnings))
				}
				for i, key := range tt.warnings {
					w := c.Warnings[i].String()
					if !strings.HasPrefix(w, lines[key]) || !strings.Contains(w, "can be read by other users") || !strings.Contains(w, "chmod 600") {
						t.Errorf("warning %d = %q, want %q… can be read by other users … chmod 600", i, w, lines[key])
					}
				}
			}
		})
	}
}
