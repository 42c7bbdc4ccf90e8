package dendrite

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestWriteConfig checks the keys Dendrite v0.15.2 requires (every component
// its own SQLite database, no global connection string) and that a restart
// keeps the signing key.
func TestWriteConfig(t *testing.T) {
	dir := t.TempDir()
	if err := writeConfig(newConfig(dir, "localhost", "s3cret", nil), dir); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, configFile))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	global := got["global"].(map[string]any)
	if _, ok := global["database"]; ok {
		t.Error("global database set; each component must have its own")
	}
	for _, key := range []string{"federation_api", "key_server", "media_api", "mscs", "relay_api", "room_server", "sync_api"} {
		db := got[key].(map[string]any)["database"].(map[string]any)
		cs, _ := db["connection_string"].(string)
		if !strings.HasPrefix(cs, "file://"+dir) {
			t.Errorf("%s.database.connection_string = %q, want a file under %s", key, cs, dir)
		}
	}
	if _, ok := got["client_api"].(map[string]any)["turn"]; ok {
		t.Error("turn section written without TURN options")
	}

	key1, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(key1)
	if block == nil || block.Type != "MATRIX PRIVATE KEY" || len(block.Bytes) != 32 ||
		!strings.HasPrefix(block.Headers["Key-ID"], "ed25519:") {
		t.Fatalf("signing key: %q", key1)
	}
	if err := writeConfig(newConfig(dir, "localhost", "other", nil), dir); err != nil {
		t.Fatal(err)
	}
	key2, _ := os.ReadFile(filepath.Join(dir, keyFile))
	if string(key1) != string(key2) {
		t.Error("signing key replaced by a second writeConfig")
	}
}
