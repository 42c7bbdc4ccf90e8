package atomicfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// names lists dir's entries.
func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestWriteFile(t *testing.T) {
	tests := []struct {
		name     string
		existing *fs.FileMode // a file already there, with this mode
		perm     fs.FileMode
	}{
		{name: "new file", perm: 0o600},
		{name: "new file, wider mode than the temporary's", perm: 0o644},
		{name: "replaces content and narrows the mode", existing: ptr(fs.FileMode(0o644)), perm: 0o600},
		{name: "replaces content and widens the mode", existing: ptr(fs.FileMode(0o600)), perm: 0o640},
	}
	old := syscall.Umask(0o077) // the umask must not change the mode asked for
	t.Cleanup(func() { syscall.Umask(old) })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state.json")
			if tt.existing != nil {
				if err := os.WriteFile(path, []byte("the old content, longer than the new"), *tt.existing); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, *tt.existing); err != nil {
					t.Fatal(err)
				}
			}
			if err := WriteFile(path, []byte(`{"new":1}`), tt.perm); err != nil {
				t.Fatalf("WriteFile: %v", err)
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != `{"new":1}` {
				t.Errorf("content %q, %v", got, err)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != tt.perm {
				t.Errorf("mode %v, want %v", fi.Mode().Perm(), tt.perm)
			}
			if n := names(t, dir); !slices.Equal(n, []string{"state.json"}) {
				t.Errorf("directory holds %v", n)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestWriteFileFailure(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dir string) string // returns the path to write
		wantErr error
	}{
		{
			name: "no such directory",
			prepare: func(t *testing.T, dir string) string {
				return filepath.Join(dir, "missing", "state.json")
			},
			wantErr: fs.ErrNotExist,
		},
		{
			name: "rename over a directory",
			prepare: func(t *testing.T, dir string) string {
				path := filepath.Join(dir, "state.json")
				if err := os.MkdirAll(filepath.Join(path, "inside"), 0o700); err != nil {
					t.Fatal(err)
				}
				return path
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := tt.prepare(t, dir)
			before := names(t, dir)
			err := WriteFile(path, []byte("data"), 0o600)
			if err == nil {
				t.Fatal("WriteFile succeeded")
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("err %q does not name %s", err, path)
			}
			if after := names(t, dir); !slices.Equal(before, after) {
				t.Errorf("directory held %v, now %v: a temporary file was left", before, after)
			}
		})
	}
}

// Readers racing with rewrites see one whole version or the other, never
// a mix or an empty file.
func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sync.json")
	versions := [][]byte{bytes.Repeat([]byte("a"), 10_000), bytes.Repeat([]byte("b"), 100)}
	if err := WriteFile(path, versions[0], 0o600); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				got, err := os.ReadFile(path)
				if err != nil {
					t.Errorf("read: %v", err)
					return
				}
				if !bytes.Equal(got, versions[0]) && !bytes.Equal(got, versions[1]) {
					t.Errorf("read a torn file of %d bytes", len(got))
					return
				}
			}
		})
	}
	for i := range 50 {
		if err := WriteFile(path, versions[i%2], 0o600); err != nil {
			t.Error(err)
			break
		}
	}
	stop.Store(true)
	wg.Wait()
}

func TestRemoveTemps(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{".sync.json.tmp-123", ".door.json.tmp-9", "sync.json", ".hidden", "notes.tmp-1"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := RemoveTemps(dir); err != nil {
		t.Fatal(err)
	}
	if got, want := names(t, dir), []string{".hidden", "notes.tmp-1", "sync.json"}; !slices.Equal(got, want) {
		t.Errorf("left %v, want %v", got, want)
	}
	if err := RemoveTemps(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("RemoveTemps of a missing directory = %v", err)
	}
}

func TestSyncDir(t *testing.T) {
	if err := SyncDir(t.TempDir()); err != nil {
		t.Errorf("SyncDir: %v", err)
	}
	if err := SyncDir(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("SyncDir of a missing directory = %v", err)
	}
}
