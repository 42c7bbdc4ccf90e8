package provisioning

import (
	"fmt"
	"log/slog"
	"strings"
)

// Secrets must not reach logs, crash reports or a check-config printout, so
// every type holding one formats itself with the secret replaced. Value
// receivers make this hold for values, pointers and fields of other structs
// alike, for fmt (%v, %+v, %s, %#v) and for slog.

const redacted = "[REDACTED]"

// redact shows whether a secret is set without showing it.
func redact(s string) string {
	if s == "" {
		return ""
	}
	return redacted
}

// plainConfig has Config's fields without its methods, for formatting;
// the Matrix field still formats itself with its secrets redacted.
type plainConfig Config

// String formats c with its secrets redacted. Every section appears
// without listing them here, so a new section cannot be forgotten.
func (c Config) String() string {
	c.Warnings, c.lines = nil, nil
	s := fmt.Sprintf("%+v", plainConfig(c))
	return strings.Replace(strings.Replace(s, " Warnings:[]", "", 1), " lines:map[]", "", 1)
}

// GoString is String, so that %#v does not print the secrets either.
func (c Config) GoString() string { return "provisioning.Config" + c.String() }

// LogValue implements slog.LogValuer.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("path", c.Path),
		slog.Attr{Key: "matrix", Value: c.Matrix.LogValue()},
		slog.String("state_dir", c.StateDir),
		slog.Any("residents", c.Residents),
		slog.Any("resident_paths", c.ResidentPaths), // only those that say; the others ring every way
		slog.Group("ring", slog.Duration("timeout", c.Ring.Timeout)),
		slog.Group("hardware", slog.String("gpio", c.Hardware.GPIO), slog.String("camera", c.Hardware.Camera), slog.String("audio", c.Hardware.Audio)),
		slog.Attr{Key: "api", Value: c.API.LogValue()},
		slog.Attr{Key: "mqtt", Value: c.MQTT.LogValue()},
		slog.Group("video", slog.Int("width", c.Video.Width), slog.Int("height", c.Video.Height), slog.Int("fps", c.Video.FPS)),
		slog.Group("log", slog.String("level", c.Log.Level)),
	)
}

// plainMatrix has Matrix's fields without its methods, for formatting.
type plainMatrix Matrix

// String formats m with its secrets redacted.
func (m Matrix) String() string {
	m.Password, m.AccessToken = redact(m.Password), redact(m.AccessToken)
	return fmt.Sprintf("%+v", plainMatrix(m))
}

// GoString is String, so that %#v does not print the secrets either.
func (m Matrix) GoString() string { return "provisioning.Matrix" + m.String() }

// LogValue implements slog.LogValuer.
func (m Matrix) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("homeserver", m.Homeserver),
		slog.String("user_id", m.UserID),
		slog.String("device_name", m.DeviceName),
		slog.String("room_avatar", m.RoomAvatar),
		slog.String("password_file", m.PasswordFile),
		slog.String("access_token_file", m.AccessTokenFile),
		slog.String("password", redact(m.Password)),
		slog.String("access_token", redact(m.AccessToken)),
	)
}

// plainCredentials has Credentials' fields without its methods.
type plainCredentials Credentials

// String formats c with the access token redacted.
func (c Credentials) String() string {
	c.AccessToken = redact(c.AccessToken)
	return fmt.Sprintf("%+v", plainCredentials(c))
}

// GoString is String, so that %#v does not print the token either.
func (c Credentials) GoString() string { return "provisioning.Credentials" + c.String() }

// LogValue implements slog.LogValuer.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("homeserver", c.Homeserver),
		slog.String("user_id", c.UserID),
		slog.String("device_id", c.DeviceID),
		slog.String("access_token", redact(c.AccessToken)),
	)
}

// plainLiveKit has LiveKit's fields without its methods, for formatting.
type plainLiveKit LiveKit

// String formats l with the API key and secret redacted: the key names
// the secret, and together they sign tokens for any room of the SFU.
func (l LiveKit) String() string {
	l.APIKey, l.Secret = redact(l.APIKey), redact(l.Secret)
	return fmt.Sprintf("%+v", plainLiveKit(l))
}

// GoString is String, so that %#v does not print the keys either.
func (l LiveKit) GoString() string { return "provisioning.LiveKit" + l.String() }

// LogValue implements slog.LogValuer.
func (l LiveKit) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("url", l.URL),
		slog.String("api_key_file", l.APIKeyFile),
		slog.String("api_secret_file", l.APISecretFile),
		slog.String("api_key", redact(l.APIKey)),
		slog.String("api_secret", redact(l.Secret)),
	)
}
