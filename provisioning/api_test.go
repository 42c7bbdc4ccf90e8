package provisioning

import (
	"os"
	"strings"
	"testing"
)

// TestAPIKeys: a local API reachable from other machines needs a token
// (issue 19, finding 7); api.hostnames are bare host names.
func TestAPIKeys(t *testing.T) {
	for _, tt := range []struct {
		name, api string
		problem   string // "" for none; else a prefix of the only problem
	}{
		{"default: loopback, no token", "", ""},
		{"localhost", "api: {listen: \"localhost:8080\"}\n", ""},
		{"IPv6 loopback", "api: {listen: \"[::1]:8080\"}\n", ""},
		{"other loopback address", "api: {listen: \"127.0.0.2:9000\"}\n", ""},
		{"loopback with a token", "api: {listen: \"127.0.0.1:8080\", token_file: /etc/intercom/api-token}\n", ""},
		{"all interfaces with a token", "api: {listen: \"0.0.0.0:8080\", token_file: /etc/intercom/api-token}\n", ""},
		{"all interfaces", "api: {listen: \"0.0.0.0:8080\"}\n",
			`f.yaml:7: api.listen: "0.0.0.0:8080" is reachable from other machines; set api.token_file`},
		{"empty host", "api:\n  listen: \":8080\"\n",
			`f.yaml:8: api.listen: ":8080" is reachable from other machines; set api.token_file`},
		{"IPv6 any", "api: {listen: \"[::]:8080\"}\n", `f.yaml:7: api.listen: "[::]:8080" is reachable`},
		{"LAN address", "api: {listen: \"192.168.1.20:8080\"}\n", `f.yaml:7: api.listen: "192.168.1.20:8080" is reachable`},
		{"a name is not known to be loopback", "api: {listen: \"intercom.local:8080\"}\n", `f.yaml:7: api.listen: "intercom.local:8080" is reachable`},
		{"hostnames", "api: {listen: \"0.0.0.0:8080\", token_file: t, hostnames: [intercom.local, Door.Example.org., 192.168.1.20, \"::1\"]}\n", ""},
		{"hostname with a port", "api:\n  hostnames:\n    - intercom.local:8080\n",
			`f.yaml:9: api.hostnames[0]: "intercom.local:8080" must be a host name or address without a port`},
		{"hostname with a scheme", "api: {hostnames: [\"http://intercom.local\"]}\n",
			`f.yaml:7: api.hostnames[0]: "http://intercom.local" must be a host name or address without a port`},
		{"hostname with a space", "api: {hostnames: [\"intercom local\"]}\n", `f.yaml:7: api.hostnames[0]: "intercom local" is not a host name`},
		{"hostnames not a list", "api: {hostnames: intercom.local}\n", `f.yaml:7: api.hostnames: must be a list`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("f.yaml", []byte(minimal+tt.api), "/etc/intercom")
			if tt.problem == "" {
				if err != nil {
					t.Fatalf("Parse:\n%v", err)
				}
				if c.API.Listen == "" {
					t.Fatalf("no listen address")
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse accepted it: %v", c.API)
			}
			if got := err.Error(); strings.Contains(got, "\n") || !strings.HasPrefix(got, tt.problem) {
				t.Errorf("problems:\n%s\nwant the one problem %q…", got, tt.problem)
			}
		})
	}
}

// TestAPIToken: api.token_file is read like the other secrets, and what it
// holds must be fit to be a bearer token.
func TestAPIToken(t *testing.T) {
	const goodToken = "Zm9vYmFyYmF6cXV4cXV1eA=="
	for _, tt := range []struct {
		name    string
		content string // "" for no file
		mode    os.FileMode
		token   string // the token loaded
		problem string // prefix of the only problem
		warning string // prefix of the only warning
	}{
		{"token", goodToken + "\n", 0o600, goodToken, "", ""},
		{"readable by others", goodToken, 0o644, goodToken, "",
			"f.yaml:9: api.token_file: DIR/api-token can be read by other users (mode 0644); run chmod 600"},
		{"missing", "", 0, "", "f.yaml:9: api.token_file: DIR/api-token does not exist", ""},
		{"empty", "\n", 0o600, "", "f.yaml:9: api.token_file: DIR/api-token is empty", ""},
		{"too short", "letmein\n", 0o600, "", "f.yaml:9: api.token_file: the token in DIR/api-token is 7 characters long; use at least 16", ""},
		{"not a header value", "correct horse battery staple\n", 0o600, "",
			"f.yaml:9: api.token_file: the token in DIR/api-token must be printable ASCII without spaces", ""},
		{"two lines", goodToken + "\n" + goodToken + "\n", 0o600, "", "f.yaml:9: api.token_file: DIR/api-token must hold the secret on a single line", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, "secrets/password", "hunter2\n", 0o600)
			if tt.content != "" {
				writeFile(t, dir, "api-token", tt.content, tt.mode)
			}
			src := minimal + "api:\n  listen: \"0.0.0.0:8080\"\n  token_file: api-token\n"
			c, err := Parse("f.yaml", []byte(src), dir)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			err = c.loadSecrets(noEnv)
			if tt.problem != "" {
				want := strings.ReplaceAll(tt.problem, "DIR", dir)
				if err == nil || strings.Contains(err.Error(), "\n") || !strings.HasPrefix(err.Error(), want) {
					t.Fatalf("loadSecrets = %v, want the one problem %q…", err, want)
				}
				if c.API.Token != "" {
					t.Errorf("token %q kept despite the problem", c.API.Token)
				}
				return
			}
			if err != nil {
				t.Fatalf("loadSecrets: %v", err)
			}
			if c.API.Token != tt.token {
				t.Errorf("token %q, want %q", c.API.Token, tt.token)
			}
			switch {
			case tt.warning == "" && len(c.Warnings) > 0:
				t.Errorf("warnings %v", c.Warnings)
			case tt.warning != "" && (len(c.Warnings) != 1 || !strings.HasPrefix(c.Warnings[0].String(), strings.ReplaceAll(tt.warning, "DIR", dir))):
				t.Errorf("warnings %v, want one %q…", c.Warnings, tt.warning)
			}
		})
	}
}
