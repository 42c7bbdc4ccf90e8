package provisioning

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// FuzzParse feeds Parse arbitrary bytes: the file is edited by hand and may
// be anything. Parse must not panic, and must return exactly one of a
// Config and Problems, every problem on one line and inside the file.
func FuzzParse(f *testing.F) {
	if data, err := os.ReadFile("example.yaml"); err == nil {
		f.Add(data)
	}
	for _, s := range []string{
		minimal,
		"",
		"---\n...\n",
		"matrix: &a {homeserver: *a}\n",
		"a: &a [*a, *a]\n",
		"residents: [&r \"@a:b\", *r]\n",
		"residents: [{user_id: \"@a:b\", paths: [matrixrtc]}, \"@c:d\", {user_id: \"@e:f\", paths: [classic, matrixrtc]}]\n",
		"residents:\n  - {user_id: &u \"@a:b\", paths: &p [classic]}\n  - {user_id: *u, paths: *p, x: 1}\n  - {paths: []}\n  - [[]]\n",
		"residents: [{? [a] : b, user_id: {}}]\n",
		"ring: {timeout: 1e309s}\n",
		"video: {width: 0x7fffffffffffffff}\n",
		"? [a]\n: b\n",
		"<<: {state_dir: x}\n",
		"\"\\x00\": 1\n",
		"matrix:\n  homeserver: http://[::1\n",
		"%YAML 1.1\n---\nlog: {level: !!binary aW5mbw==}\n",
		minimal + "api: {listen: \"0.0.0.0:8080\"}\n",
		minimal + "api: {listen: \"[::1]:8080\", hostnames: [\"a:b\", \"[::1]\", \"x..y\", \"-a\"]}\n",
		minimal + "api: {listen: \":0\", token_file: t, hostnames: [*h, &h \"intercom.local\"]}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("f.yaml", data, "/etc/intercom")
		if (c == nil) == (err == nil) {
			t.Fatalf("Parse = %v, %v: want exactly one of a config and an error", c, err)
		}
		if err != nil {
			var ps Problems
			if !errors.As(err, &ps) || len(ps) == 0 {
				t.Fatalf("Parse error %T %v is not a non-empty Problems", err, err)
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(ps) {
				t.Fatalf("%d problems printed on %d lines:\n%s", len(ps), n, err)
			}
			for _, p := range ps {
				if p.File != "f.yaml" || p.Line < 1 || p.Msg == "" {
					t.Fatalf("malformed problem %#v", p)
				}
			}
			return
		}
		// A config that parsed satisfies the schema's promises.
		if c.Matrix.Homeserver == "" || c.Matrix.UserID == "" || c.StateDir == "" || len(c.Residents) == 0 {
			t.Fatalf("required key empty in %v", c)
		}
		if c.Video.Width%2 != 0 || c.Video.Height%2 != 0 || c.Ring.Timeout <= 0 {
			t.Fatalf("invalid value in %v", c)
		}
		// Issue 19, finding 7: no API beyond loopback without a token.
		if !c.API.ListenLoopback() && c.API.TokenFile == "" {
			t.Fatalf("api.listen %q accepted without api.token_file", c.API.Listen)
		}
		for _, w := range c.Warnings {
			if w.File != "f.yaml" || w.Line < 1 || w.Msg == "" {
				t.Fatalf("malformed warning %#v", w)
			}
		}
	})
}
