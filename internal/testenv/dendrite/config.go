package dendrite

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"gopkg.in/yaml.v3"
)

// Names inside a data directory.
const (
	configFile = "dendrite.yaml"
	keyFile    = "matrix_key.pem"
	logFile    = "dendrite.log"
)

// The config structs below hold only the keys the harness sets; Dendrite
// fills every other key with its own defaults when it loads the file
// (setup/config in v0.15.2: Defaults, then the YAML on top). Field names are
// Dendrite's YAML keys.
type config struct {
	Version       int             `yaml:"version"`
	Global        globalConfig    `yaml:"global"`
	ClientAPI     clientAPIConfig `yaml:"client_api"`
	FederationAPI dbSection       `yaml:"federation_api"`
	KeyServer     dbSection       `yaml:"key_server"`
	MediaAPI      mediaAPIConfig  `yaml:"media_api"`
	MSCs          dbSection       `yaml:"mscs"`
	RelayAPI      dbSection       `yaml:"relay_api"`
	RoomServer    dbSection       `yaml:"room_server"`
	SyncAPI       syncAPIConfig   `yaml:"sync_api"`
	UserAPI       userAPIConfig   `yaml:"user_api"`
	Logging       []logHook       `yaml:"logging"`
}

type globalConfig struct {
	ServerName        string          `yaml:"server_name"`
	PrivateKey        string          `yaml:"private_key"`
	DisableFederation bool            `yaml:"disable_federation"`
	TrustedIDServers  []string        `yaml:"trusted_third_party_id_servers"`
	JetStream         jetStreamConfig `yaml:"jetstream"`
	Cache             cacheConfig     `yaml:"cache"`
	ReportStats       enabled         `yaml:"report_stats"`
	Presence          presenceConfig  `yaml:"presence"`
}

type jetStreamConfig struct {
	StoragePath string `yaml:"storage_path"`
}

type cacheConfig struct {
	MaxSize string `yaml:"max_size_estimated"`
	MaxAge  string `yaml:"max_age"`
}

type enabled struct {
	Enabled bool `yaml:"enabled"`
}

type presenceConfig struct {
	Inbound  bool `yaml:"enable_inbound"`
	Outbound bool `yaml:"enable_outbound"`
}

type clientAPIConfig struct {
	RegistrationDisabled     bool       `yaml:"registration_disabled"`
	GuestsDisabled           bool       `yaml:"guests_disabled"`
	RegistrationSharedSecret string     `yaml:"registration_shared_secret"`
	RateLimiting             enabled    `yaml:"rate_limiting"`
	TURN                     turnConfig `yaml:"turn,omitempty"`
}

type turnConfig struct {
	UserLifetime string   `yaml:"turn_user_lifetime,omitempty"`
	URIs         []string `yaml:"turn_uris,omitempty"`
	SharedSecret string   `yaml:"turn_shared_secret,omitempty"`
}

type database struct {
	ConnectionString string `yaml:"connection_string"`
	// SQLite allows a single writer; Dendrite serialises writes itself, and
	// a few connections per database are plenty for tests.
	MaxOpenConns int `yaml:"max_open_conns"`
	MaxIdleConns int `yaml:"max_idle_conns"`
}

type dbSection struct {
	Database database `yaml:"database"`
}

type mediaAPIConfig struct {
	Database database `yaml:"database"`
	BasePath string   `yaml:"base_path"`
}

type syncAPIConfig struct {
	Database database `yaml:"database"`
	Search   struct {
		Enabled bool `yaml:"enabled"`
	} `yaml:"search"`
}

type userAPIConfig struct {
	AccountDatabase database `yaml:"account_database"`
	BCryptCost      int      `yaml:"bcrypt_cost"`
}

type logHook struct {
	Type  string `yaml:"type"`
	Level string `yaml:"level"`
}

// newConfig returns the configuration for a homeserver whose data lives in
// dir (an absolute path).
func newConfig(dir, serverName, sharedSecret string, turn *TURN) config {
	db := func(name string) database {
		u := url.URL{Scheme: "file", Path: filepath.Join(dir, "db", name+".db")}
		return database{ConnectionString: u.String(), MaxOpenConns: 10, MaxIdleConns: 2}
	}
	c := config{Version: 2}
	c.Global = globalConfig{
		ServerName:        serverName,
		PrivateKey:        filepath.Join(dir, keyFile),
		DisableFederation: true,
		TrustedIDServers:  []string{}, // the defaults name matrix.org and vector.im
		JetStream:         jetStreamConfig{StoragePath: filepath.Join(dir, "jetstream")},
		Cache:             cacheConfig{MaxSize: "64mb", MaxAge: "1h"},
	}
	c.ClientAPI = clientAPIConfig{
		// Shared-secret registration (/_synapse/admin/v1/register) works with
		// registration disabled; nobody else can sign up.
		RegistrationDisabled:     true,
		GuestsDisabled:           true,
		RegistrationSharedSecret: sharedSecret,
		RateLimiting:             enabled{Enabled: false},
	}
	if turn != nil {
		// Dendrite's /voip/turnServer answers {} unless all three are set.
		lifetime := turn.UserLifetime
		if lifetime <= 0 {
			lifetime = time.Hour
		}
		c.ClientAPI.TURN = turnConfig{
			UserLifetime: lifetime.String(),
			URIs:         turn.URIs,
			SharedSecret: turn.SharedSecret,
		}
	}
	c.FederationAPI.Database = db("federationapi")
	c.KeyServer.Database = db("keyserver")
	c.MediaAPI = mediaAPIConfig{Database: db("mediaapi"), BasePath: filepath.Join(dir, "media_store")}
	c.MSCs.Database = db("mscs")
	c.RelayAPI.Database = db("relayapi")
	c.RoomServer.Database = db("roomserver")
	c.SyncAPI.Database = db("syncapi")
	c.UserAPI = userAPIConfig{
		AccountDatabase: db("userapi_accounts"),
		// bcrypt's minimum: test passwords need no protection, and the
		// default cost adds tens of milliseconds to every register and login.
		BCryptCost: 4,
	}
	// Dendrite always logs to stdout/stderr, which Start sends to
	// dendrite.log; a hook of type "std" would print every line twice.
	c.Logging = []logHook{}
	return c
}

// writeConfig writes the YAML configuration into dir, creates the
// directories it names, and creates the signing key unless one exists
// (a restarted server keeps its key).
func writeConfig(c config, dir string) error {
	for _, sub := range []string{"db", "jetstream", "media_store"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return fmt.Errorf("create data directory: %w", err)
		}
	}
	if err := ensureKey(filepath.Join(dir, keyFile)); err != nil {
		return err
	}
	data, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, configFile), data, 0o600); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// ensureKey writes a server signing key in the PEM form Dendrite reads
// (block "MATRIX PRIVATE KEY", header Key-ID "ed25519:…", the 32-byte seed
// as body) unless path exists. Writing it here saves running generate-keys.
func ensureKey(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("stat signing key: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generate signing key: %w", err)
	}
	id := make([]byte, 3)
	if _, err := rand.Read(id); err != nil {
		return fmt.Errorf("generate key ID: %w", err)
	}
	block := &pem.Block{
		Type:    "MATRIX PRIVATE KEY",
		Headers: map[string]string{"Key-ID": "ed25519:" + hex.EncodeToString(id)},
		Bytes:   priv.Seed(),
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return fmt.Errorf("write signing key: %w", err)
	}
	return nil
}

// randomSecret returns 32 random bytes in hex.
func randomSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+).
	return hex.EncodeToString(b)
}
