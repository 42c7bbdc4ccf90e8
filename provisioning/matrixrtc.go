package provisioning

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
)

// MatrixRTC rings residents through MatrixRTC calls with media through a
// LiveKit SFU (callengine/rtc, media/livekit): how Element X and Element
// Call take calls.
type MatrixRTC struct {
	Enabled bool
	// ServiceURL is the LiveKit JWT service (Element's lk-jwt-service):
	// the intercom exchanges a Matrix OpenID token there for its own
	// LiveKit token unless LiveKit is set, and it is always what the
	// intercom advertises to residents' clients in its membership. Empty:
	// the one the homeserver advertises (Discovers).
	ServiceURL string
	// LiveKit, when URL is set, is the SFU the intercom mints its own
	// tokens for (self-hosters without the JWT service).
	LiveKit LiveKit
	// Household also rings the household room's call (household.room).
	Household bool
}

// LiveKit is a LiveKit server with its API key pair.
type LiveKit struct {
	URL            string
	APIKeyFile     string
	APISecretFile  string
	APIKey, Secret string `yaml:"-" json:"-"` // read from the files by Secrets
}

// SelfMinted reports whether the intercom mints its own LiveKit tokens.
func (m MatrixRTC) SelfMinted() bool { return m.LiveKit.URL != "" }

// Discovers reports whether the JWT service comes from the homeserver
// (matrix.DiscoverRTCTransport: /rtc/transports, then the .well-known's
// rtc_foci) rather than from the configuration: MatrixRTC is on and
// livekit_service_url is not set. The intercom then asks at start, and
// again until the homeserver advertises one; MatrixRTC rings nobody
// before that. With self-minted tokens only the advertised URL comes
// from there.
func (m MatrixRTC) Discovers() bool { return m.Enabled && m.ServiceURL == "" }

// ReadLiveKitKeys reads the API key pair of self-minted mode. It is
// called at start-up, not by Parse, which must not read files.
func (m *MatrixRTC) ReadLiveKitKeys() error {
	if !m.SelfMinted() {
		return nil
	}
	read := func(key, file string) (string, error) {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("matrixrtc.livekit.%s: %w", key, err)
		}
		s := strings.TrimSpace(string(b))
		if s == "" || strings.ContainsAny(s, "\r\n") {
			return "", fmt.Errorf("matrixrtc.livekit.%s: %s must hold the secret on a single line", key, file)
		}
		return s, nil
	}
	k, err := read("api_key_file", m.LiveKit.APIKeyFile)
	if err != nil {
		return err
	}
	sec, err := read("api_secret_file", m.LiveKit.APISecretFile)
	if err != nil {
		return err
	}
	m.LiveKit.APIKey, m.LiveKit.Secret = k, sec
	return nil
}

// webURL accepts an http(s) URL without credentials, query or fragment.
func webURL(s string) error {
	if s == "" {
		return nil
	}
	return homeserverURL(s)
}

// liveKitURL accepts the ws(s):// (or http(s)://) signalling URL of a
// LiveKit server.
func liveKitURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q must be a URL such as \"wss://livekit.example.org\"", s)
	}
	switch u.Scheme {
	case "ws", "wss", "http", "https":
	default:
		return fmt.Errorf("%q must be a ws://, wss://, http:// or https:// URL", s)
	}
	if u.User != nil {
		return errors.New("must not contain a user name or password; use api_key_file and api_secret_file")
	}
	return nil
}

func init() {
	crossChecks = append(crossChecks, checkMatrixRTC)
}

// checkMatrixRTC: self-minted tokens need both key files. An enabled
// MatrixRTC without livekit_service_url is valid: the homeserver may
// advertise its transport (Discovers); whether it does is for
// check-config and provision to say, which may ask it.
func checkMatrixRTC(c *Config, at lineOf) []Problem {
	m := c.MatrixRTC
	var probs []Problem
	bad := func(key, msg string) {
		probs = append(probs, Problem{File: c.Path, Line: max(at(key), at("matrixrtc"), 1), Key: key, Msg: msg})
	}
	if m.SelfMinted() && (m.LiveKit.APIKeyFile == "" || m.LiveKit.APISecretFile == "") {
		bad("matrixrtc.livekit", "matrixrtc.livekit.url needs api_key_file and api_secret_file")
	}
	if m.Enabled && m.Household && c.Household.Room == "" {
		bad("matrixrtc.household", "matrixrtc.household needs household.room")
	}
	return probs
}
