package provisioning

import (
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// schema is every key the configuration file knows, in the order
// example.yaml documents them. Sections ("matrix", "ring", …) are not listed:
// every proper prefix of a key is a section and must be a mapping.
//
// To add a key: add a field to Config, a line here, and a commented entry in
// example.yaml (TestExampleDocumentsEveryKey fails until you do).
var schema = []field{
	required("matrix.homeserver", func(c *Config) *string { return &c.Matrix.Homeserver },
		str, homeserverURL),
	required("matrix.user_id", func(c *Config) *string { return &c.Matrix.UserID },
		str, matrixUserID),
	optional("matrix.password_file", "", func(c *Config) *string { return &c.Matrix.PasswordFile },
		path),
	optional("matrix.access_token_file", "", func(c *Config) *string { return &c.Matrix.AccessTokenFile },
		path),
	optional("matrix.device_name", "Intercom", func(c *Config) *string { return &c.Matrix.DeviceName },
		str, nonEmpty, maxLen(100)),

	required("state_dir", func(c *Config) *string { return &c.StateDir },
		path),
	required("residents", func(c *Config) *[]string { return &c.Residents },
		userIDList),

	// The ring timeout is also the lifetime of the m.call.invite (Matrix
	// spec, VoIP: "lifetime" in milliseconds). Clients ignore an invite once
	// less than about 3 s of it remain, so very short values never ring;
	// long ones leave a visitor waiting at a door nobody will open.
	optional("ring.timeout", 60*time.Second, func(c *Config) *time.Duration { return &c.Ring.Timeout },
		duration, between(10*time.Second, 90*time.Second), wholeMillis),

	optional("hardware.gpio", "sim", func(c *Config) *string { return &c.Hardware.GPIO },
		oneOf("sim", "periph")),
	optional("hardware.camera", "testpattern", func(c *Config) *string { return &c.Hardware.Camera },
		oneOf("testpattern", "v4l2")),
	optional("hardware.audio", "tone", func(c *Config) *string { return &c.Hardware.Audio },
		oneOf("tone", "alsa")),

	optional("api.listen", "127.0.0.1:8080", func(c *Config) *string { return &c.API.Listen },
		str, hostPort),

	// Even dimensions because the encoders work on 4:2:0 frames, whose
	// chroma planes are half the size in each direction.
	optional("video.width", 640, func(c *Config) *int { return &c.Video.Width },
		integer, between(160, 1920), even),
	optional("video.height", 480, func(c *Config) *int { return &c.Video.Height },
		integer, between(120, 1080), even),
	optional("video.fps", 15, func(c *Config) *int { return &c.Video.FPS },
		integer, between(1, 30)),

	optional("log.level", "info", func(c *Config) *string { return &c.Log.Level },
		oneOf("debug", "info", "warn", "error")),
}

// crossChecks are rules that involve more than one key. They run after every
// key has been decoded, on keys that decoded without problems.
var crossChecks = []func(c *Config, at lineOf) []Problem{
	checkOneSecretFile,
	checkResidentsExcludeSelf,
}

// field is one entry of the schema.
type field struct {
	key      string
	required bool
	// decode stores the value of n in c. An error becomes a Problem at n's
	// line, unless it is (or joins) *nodeError values that carry their own.
	decode func(c *Config, n *yaml.Node, dir string) error
	// setDefault stores the default; nil for required keys.
	setDefault func(c *Config)
	// defaultText shows the default in hints.
	defaultText string
}

// decoder turns a YAML node into a Go value; dir is the directory relative
// paths are resolved against.
type decoder[T any] func(n *yaml.Node, dir string) (T, error)

// check validates a decoded value.
type check[T any] func(v T) error

func required[T any](key string, at func(*Config) *T, dec decoder[T], checks ...check[T]) field {
	return field{key: key, required: true, decode: decodeInto(at, dec, checks)}
}

func optional[T any](key string, dflt T, at func(*Config) *T, dec decoder[T], checks ...check[T]) field {
	f := field{key: key, decode: decodeInto(at, dec, checks)}
	f.setDefault = func(c *Config) { *at(c) = dflt }
	switch d := any(dflt).(type) {
	case string:
		if d == "" {
			f.defaultText = "unset"
		} else {
			f.defaultText = d
		}
	default:
		f.defaultText = fmt.Sprint(d)
	}
	return f
}

func decodeInto[T any](at func(*Config) *T, dec decoder[T], checks []check[T]) func(*Config, *yaml.Node, string) error {
	return func(c *Config, n *yaml.Node, dir string) error {
		v, err := dec(n, dir)
		if err != nil {
			return err
		}
		for _, chk := range checks {
			if err := chk(v); err != nil {
				return err
			}
		}
		*at(c) = v
		return nil
	}
}

// nodeError is a problem located at a node other than the key's value, such
// as one element of a list.
type nodeError struct {
	line   int
	suffix string // appended to the key, e.g. "[2]"
	msg    string
}

func (e *nodeError) Error() string { return e.msg }

// lineOf returns the line a key was set on, or 0 if it was not set.
type lineOf func(key string) int

// sections returns every section of the schema: each proper prefix of a key.
func sections() map[string]bool {
	s := map[string]bool{}
	for _, f := range schema {
		parts := strings.Split(f.key, ".")
		for i := 1; i < len(parts); i++ {
			s[strings.Join(parts[:i], ".")] = true
		}
	}
	return s
}

// Keys returns every key the configuration file knows, as dotted paths in
// the order example.yaml documents them. It is for tooling (check-config, a
// web form) and for tests that keep documentation in step with the schema.
func Keys() []string {
	keys := make([]string, len(schema))
	for i, f := range schema {
		keys[i] = f.key
	}
	return keys
}
