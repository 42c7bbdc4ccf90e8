package matrix

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// The pickle key: made 0600 for a new store, read back as it was, and
// never made anew beside a store that exists (that store could not be
// read with a new key: refused, not replaced).
func TestLoadPickleKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, pickleKeyName)
	key, err := loadPickleKey(path, false)
	if err != nil || len(key) != pickleKeyLength {
		t.Fatalf("new key: %x, %v", key, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	again, err := loadPickleKey(path, true)
	if err != nil || string(again) != string(key) {
		t.Fatalf("read back: %x, %v; want %x", again, err, key)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := loadPickleKey(path, true); !errors.Is(err, ErrCryptoStore) {
		t.Errorf("missing key beside a store: %v, want ErrCryptoStore", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Error("a new key was made beside an existing store")
	}
	if err := os.WriteFile(path, []byte("not hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadPickleKey(path, true); !errors.Is(err, ErrCryptoStore) {
		t.Errorf("malformed key: %v, want ErrCryptoStore", err)
	}
}
