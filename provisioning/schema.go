package provisioning

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
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
	// The image itself is checked where it is used (provision, start-up),
	// not here: Parse must not read files (hwtest uses it without secrets).
	optional("matrix.room_avatar", "", func(c *Config) *string { return &c.Matrix.RoomAvatar },
		path),
	// End-to-end encryption (matrix/e2ee.go): the crypto store lives in
	// state_dir; rooms the intercom creates are encrypted.
	optional("matrix.encryption", true, func(c *Config) *bool { return &c.Matrix.Encryption },
		boolean),
	optional("matrix.share_keys", "all", func(c *Config) *string { return &c.Matrix.ShareKeys },
		oneOf("all", "cross_signed")),

	required("state_dir", func(c *Config) *string { return &c.StateDir },
		path),
	// Each resident is a user ID, or {user_id, paths} to ring them on
	// only some paths (residents.go).
	residentsField(),

	// The ring timeout is also the lifetime of the m.call.invite (Matrix
	// spec, VoIP: "lifetime" in milliseconds). Clients ignore an invite once
	// less than about 3 s of it remain, so very short values never ring;
	// long ones leave a visitor waiting at a door nobody will open.
	optional("ring.timeout", 60*time.Second, func(c *Config) *time.Duration { return &c.Ring.Timeout },
		duration, between(10*time.Second, 90*time.Second), wholeMillis),

	// Door control (device/doorpolicy.go). The pulse is capped again at
	// gpio.MaxPulse (30 s) whatever this says.
	optional("door.commands", []string{"!open"}, func(c *Config) *[]string { return &c.Door.Commands },
		stringList(1, 16, 64)),
	optional("door.reaction", "🔑", func(c *Config) *string { return &c.Door.Reaction },
		str, nonEmpty, maxLen(32)),
	optional("door.pulse", 3*time.Second, func(c *Config) *time.Duration { return &c.Door.Pulse },
		duration, between(100*time.Millisecond, 30*time.Second)),
	optional("door.authorized", []string(nil), func(c *Config) *[]string { return &c.Door.Authorized },
		userIDList),
	// Commands count only during a call or within door.window after a
	// ring (issue 19): the homeserver stamps a queued command when it
	// arrives, so only the window tells a late "!open" from a fresh one.
	// 0s closes the ring window (as only_during_call does); an installer
	// may widen it up to an hour, knowing a command queued on an offline
	// phone can open the door that long after the ring.
	optional("door.window", 3*time.Minute, func(c *Config) *time.Duration { return &c.Door.Window },
		duration, between(0, time.Hour)),
	optional("door.only_during_call", false, func(c *Config) *bool { return &c.Door.OnlyDuringCall },
		boolean),
	optional("door.reply_unauthorized", true, func(c *Config) *bool { return &c.Door.ReplyUnauthorized },
		boolean),
	optional("door.require_cross_signed", false, func(c *Config) *bool { return &c.Door.RequireCrossSigned },
		boolean),

	optional("notices.ring", true, func(c *Config) *bool { return &c.Notices.Ring },
		boolean),
	optional("notices.missed", true, func(c *Config) *bool { return &c.Notices.Missed },
		boolean),
	optional("notices.snapshot", true, func(c *Config) *bool { return &c.Notices.Snapshot },
		boolean),

	// The visitor history (device/history.go): the last history.keep
	// visitors with their snapshots in state_dir/history, at most
	// history.max_bytes on disk; keep 0 turns it off.
	optional("history.keep", 50, func(c *Config) *int { return &c.History.Keep },
		integer, between(0, 1000)),
	optional("history.max_bytes", 16<<20, func(c *Config) *int { return &c.History.MaxBytes },
		integer, between(64<<10, 1<<30)),

	// TURN: by default the homeserver's (GET /voip/turnServer, refreshed
	// before expiry); turn.uris replaces them.
	optional("turn.from_homeserver", true, func(c *Config) *bool { return &c.TURN.FromHomeserver },
		boolean),
	optional("turn.uris", []string(nil), func(c *Config) *[]string { return &c.TURN.URIs },
		stringList(1, 8, 256)),
	optional("turn.username", "", func(c *Config) *string { return &c.TURN.Username },
		str, maxLen(256)),
	optional("turn.password_file", "", func(c *Config) *string { return &c.TURN.PasswordFile },
		path),
	optional("turn.relay_only", false, func(c *Config) *bool { return &c.TURN.RelayOnly },
		boolean),

	// Who may call the intercom to watch the door (it answers by itself);
	// empty means every resident.
	optional("live_view.allowed", []string(nil), func(c *Config) *[]string { return &c.LiveView.Allowed },
		userIDList),

	// The household room's group call (household.go); off by default.
	optional("household.room", "", func(c *Config) *string { return &c.Household.Room },
		str, roomIDOrAlias),
	optional("household.group_call", "off", func(c *Config) *string { return &c.Household.GroupCall },
		oneOf("off", "mesh")),
	// Limits of the mesh, as callengine/group's DefaultMaxDevicesPerUser
	// and DefaultMaxCalls: each call is a PeerConnection and one more
	// copy of the stream on the uplink, and a member's membership state
	// keys are otherwise unbounded (issue 19, finding 5).
	optional("household.max_devices_per_user", 4, func(c *Config) *int { return &c.Household.MaxDevicesPerUser },
		integer, between(1, 16)),
	optional("household.max_calls", 16, func(c *Config) *int { return &c.Household.MaxCalls },
		integer, between(1, 64)),

	// MatrixRTC calls for Element X and Element Call (matrixrtc.go); off
	// by default.
	optional("matrixrtc.enabled", false, func(c *Config) *bool { return &c.MatrixRTC.Enabled },
		boolean),
	// Empty: the transport the homeserver advertises (Discovers).
	optional("matrixrtc.livekit_service_url", "", func(c *Config) *string { return &c.MatrixRTC.ServiceURL },
		str, webURL),
	optional("matrixrtc.livekit.url", "", func(c *Config) *string { return &c.MatrixRTC.LiveKit.URL },
		str, liveKitURL),
	optional("matrixrtc.livekit.api_key_file", "", func(c *Config) *string { return &c.MatrixRTC.LiveKit.APIKeyFile },
		path),
	optional("matrixrtc.livekit.api_secret_file", "", func(c *Config) *string { return &c.MatrixRTC.LiveKit.APISecretFile },
		path),
	optional("matrixrtc.household", false, func(c *Config) *bool { return &c.MatrixRTC.Household },
		boolean),

	optional("hardware.gpio", "sim", func(c *Config) *string { return &c.Hardware.GPIO },
		oneOf("sim", "periph")),
	optional("hardware.camera", "testpattern", func(c *Config) *string { return &c.Hardware.Camera },
		oneOf("testpattern", "v4l2")),
	optional("hardware.audio", "tone", func(c *Config) *string { return &c.Hardware.Audio },
		oneOf("tone", "alsa")),

	// Pins of hardware.gpio: periph, by the names the Linux GPIO character
	// device gives its lines (GPIO17 on a Raspberry Pi). An empty name
	// means not fitted; the button is required by a cross-check.
	optional("gpio.button", "", func(c *Config) *string { return &c.GPIO.Button },
		str, maxLen(64)),
	optional("gpio.button_active", "low", func(c *Config) *string { return &c.GPIO.ButtonActive },
		oneOf("low", "high")),
	optional("gpio.debounce", 50*time.Millisecond, func(c *Config) *time.Duration { return &c.GPIO.Debounce },
		duration, between(time.Millisecond, time.Second)),
	optional("gpio.ringer", "", func(c *Config) *string { return &c.GPIO.Ringer },
		str, maxLen(64)),
	optional("gpio.ringer_active", "high", func(c *Config) *string { return &c.GPIO.RingerActive },
		oneOf("high", "low")),
	optional("gpio.relay", "", func(c *Config) *string { return &c.GPIO.Relay },
		str, maxLen(64)),
	optional("gpio.relay_active", "high", func(c *Config) *string { return &c.GPIO.RelayActive },
		oneOf("high", "low")),

	optional("camera.device", "/dev/video0", func(c *Config) *string { return &c.Camera.Device },
		path),
	optional("camera.format", "auto", func(c *Config) *string { return &c.Camera.Format },
		oneOf("auto", "h264", "mjpeg", "yuyv")),

	optional("audio.capture", "default", func(c *Config) *string { return &c.Audio.Capture },
		str, nonEmpty, maxLen(256)),
	optional("audio.playback", "default", func(c *Config) *string { return &c.Audio.Playback },
		str, nonEmpty, maxLen(256)),
	optional("audio.capture_gain_db", 0, func(c *Config) *int { return &c.Audio.CaptureGainDB },
		integer, between(-40, 30)),
	optional("audio.playback_gain_db", 0, func(c *Config) *int { return &c.Audio.PlaybackGainDB },
		integer, between(-40, 30)),
	optional("audio.mute", "none", func(c *Config) *string { return &c.Audio.Mute },
		oneOf("none", "microphone", "speaker", "both")),
	// The microphone's processing (media/aec, issue 16): each stage on by
	// default; installers whose door module cancels echo or suppresses
	// noise itself switch that stage off, or all of them at once.
	optional("audio.processing", "all", func(c *Config) *string { return &c.Audio.Processing },
		oneOf("all", "none")),
	optional("audio.echo_cancellation", true, func(c *Config) *bool { return &c.Audio.EchoCancellation },
		boolean),
	optional("audio.noise_suppression", true, func(c *Config) *bool { return &c.Audio.NoiseSuppression },
		boolean),
	optional("audio.gain_control", true, func(c *Config) *bool { return &c.Audio.GainControl },
		boolean),
	optional("audio.high_pass", true, func(c *Config) *bool { return &c.Audio.HighPass },
		boolean),

	optional("api.listen", "127.0.0.1:8080", func(c *Config) *string { return &c.API.Listen },
		str, hostPort),
	// The API's guard (api.go, device/apiguard.go): a token, required
	// beyond loopback, and the names besides the listen address that
	// requests may be addressed to.
	optional("api.token_file", "", func(c *Config) *string { return &c.API.TokenFile },
		path),
	optional("api.hostnames", []string(nil), func(c *Config) *[]string { return &c.API.Hostnames },
		hostNameList),
	// WHEP viewers at once (device/whep): each costs the door's uplink
	// and a little CPU, never an encode.
	optional("api.whep_max_viewers", 3, func(c *Config) *int { return &c.API.WHEPMaxViewers },
		integer, between(1, 16)),

	// Even dimensions because the encoders work on 4:2:0 frames, whose
	// chroma planes are half the size in each direction.
	optional("video.width", 640, func(c *Config) *int { return &c.Video.Width },
		integer, between(160, 1920), even),
	optional("video.height", 480, func(c *Config) *int { return &c.Video.Height },
		integer, between(120, 1080), even),
	optional("video.fps", 15, func(c *Config) *int { return &c.Video.FPS },
		integer, between(1, 30)),
	// Bits per second. The encoder starts at video.bitrate and follows the
	// viewers' bandwidth estimates (REMB) between the bounds; with H.264
	// passthrough the camera's own rate control decides instead.
	optional("video.bitrate", 600_000, func(c *Config) *int { return &c.Video.Bitrate },
		integer, between(50_000, 8_000_000)),
	optional("video.min_bitrate", 150_000, func(c *Config) *int { return &c.Video.MinBitrate },
		integer, between(50_000, 8_000_000)),
	optional("video.max_bitrate", 1_500_000, func(c *Config) *int { return &c.Video.MaxBitrate },
		integer, between(50_000, 8_000_000)),

	optional("log.level", "info", func(c *Config) *string { return &c.Log.Level },
		oneOf("debug", "info", "warn", "error")),
}

// crossChecks are rules that involve more than one key. They run after every
// key has been decoded, on keys that decoded without problems.
var crossChecks = []func(c *Config, at lineOf) []Problem{
	checkOneSecretFile,
	checkResidentsExcludeSelf,
	checkResidentPaths,
	checkGPIOPins,
	checkVideoBitrates,
	checkAudioProcessing,
}

// checkAudioProcessing refuses a stage switched on beside processing:
// none, which switches every stage off: the file would say both.
func checkAudioProcessing(c *Config, at lineOf) []Problem {
	if c.Audio.Processing != "none" {
		return nil
	}
	var ps []Problem
	for _, k := range []struct {
		key string
		on  bool
	}{
		{"audio.echo_cancellation", c.Audio.EchoCancellation},
		{"audio.noise_suppression", c.Audio.NoiseSuppression},
		{"audio.gain_control", c.Audio.GainControl},
		{"audio.high_pass", c.Audio.HighPass},
	} {
		if l := at(k.key); l > 0 && k.on {
			ps = append(ps, Problem{File: c.Path, Line: l, Key: k.key,
				Msg: "is on, but audio.processing: none switches every stage off; remove one of the two"})
		}
	}
	return ps
}

// warnChecks find what is allowed but unwise. They run after the cross
// checks; what they return goes to Config.Warnings.
var warnChecks = []func(c *Config, at lineOf) []Problem{
	warnPlainHTTPHomeserver,
}

// warnPlainHTTPHomeserver: over plain HTTP the password, the access token
// and every call's SDP cross the network readable and alterable by anyone
// on the path. On this machine (the development set-up, a homeserver on
// the board itself) nothing crosses a network.
func warnPlainHTTPHomeserver(c *Config, at lineOf) []Problem {
	u, err := url.Parse(c.Matrix.Homeserver)
	if err != nil || u.Scheme != "http" || loopbackHost(u.Hostname()) {
		return nil
	}
	return []Problem{{File: c.Path, Line: max(at("matrix.homeserver"), 1), Key: "matrix.homeserver",
		Msg: fmt.Sprintf("%s is plain HTTP to another machine: the password and access token cross the network unencrypted; use https://", c.Matrix.Homeserver)}}
}

// checkVideoBitrates asks for video.min_bitrate <= video.bitrate <=
// video.max_bitrate.
func checkVideoBitrates(c *Config, at lineOf) []Problem {
	v := c.Video
	switch {
	case v.MinBitrate > v.MaxBitrate:
		return []Problem{{File: c.Path, Line: max(at("video.min_bitrate"), 1), Key: "video.min_bitrate",
			Msg: fmt.Sprintf("%d is above video.max_bitrate (%d)", v.MinBitrate, v.MaxBitrate)}}
	case v.Bitrate < v.MinBitrate || v.Bitrate > v.MaxBitrate:
		return []Problem{{File: c.Path, Line: max(at("video.bitrate"), 1), Key: "video.bitrate",
			Msg: fmt.Sprintf("%d is outside video.min_bitrate..video.max_bitrate (%d..%d)", v.Bitrate, v.MinBitrate, v.MaxBitrate)}}
	}
	return nil
}

// checkGPIOPins asks for the button's pin when the periph backend is chosen
// (an intercom without a button never rings), and for distinct pins.
func checkGPIOPins(c *Config, at lineOf) []Problem {
	if c.Hardware.GPIO != "periph" {
		return nil
	}
	if c.GPIO.Button == "" {
		return []Problem{{File: c.Path, Line: max(at("hardware.gpio"), 1), Key: "gpio.button",
			Msg: "must name the button's pin (e.g. GPIO17) when hardware.gpio is periph"}}
	}
	seen := map[string]string{}
	var ps []Problem
	for _, k := range []struct{ key, name string }{
		{"gpio.button", c.GPIO.Button}, {"gpio.ringer", c.GPIO.Ringer}, {"gpio.relay", c.GPIO.Relay},
	} {
		if k.name == "" {
			continue
		}
		if other, dup := seen[k.name]; dup {
			ps = append(ps, Problem{File: c.Path, Line: max(at(k.key), 1), Key: k.key,
				Msg: fmt.Sprintf("%q is already %s", k.name, other)})
		}
		seen[k.name] = k.key
	}
	return ps
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

// boolean decodes a YAML true or false, nothing else ("yes" and "on" are
// strings in YAML 1.2 and would be a surprise either way).
func boolean(n *yaml.Node, _ string) (bool, error) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		return false, errors.New("must be true or false; got " + describe(n))
	}
	var b bool
	if err := n.Decode(&b); err != nil {
		return false, errors.New("must be true or false; got " + describe(n))
	}
	return b, nil
}

// stringList returns a decoder for a list of lo to hi distinct non-empty
// strings of at most maxBytes each.
func stringList(lo, hi, maxBytes int) decoder[[]string] {
	return func(n *yaml.Node, dir string) ([]string, error) {
		if n.Kind != yaml.SequenceNode {
			msg := "must be a list; got " + describe(n)
			if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
				msg += fmt.Sprintf(" (write [%q])", n.Value)
			}
			return nil, errors.New(msg)
		}
		if len(n.Content) < lo || len(n.Content) > hi {
			return nil, fmt.Errorf("must list from %d to %d items; got %d", lo, hi, len(n.Content))
		}
		var (
			out  []string
			errs []error
		)
		for i, e := range n.Content {
			e = deref(e)
			s, err := str(e, dir)
			if err == nil {
				err = nonEmpty(s)
			}
			if err == nil {
				err = maxLen(maxBytes)(s)
			}
			if err == nil && slices.Contains(out, s) {
				err = fmt.Errorf("%q is listed twice", s)
			}
			if err != nil {
				errs = append(errs, &nodeError{line: e.Line, suffix: fmt.Sprintf("[%d]", i), msg: err.Error()})
				continue
			}
			out = append(out, s)
		}
		return out, errors.Join(errs...)
	}
}
