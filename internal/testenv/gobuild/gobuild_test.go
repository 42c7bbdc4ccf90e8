package gobuild

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// hello is a module served by the test's own file proxy: two commands, one
// at the module root and one below it.
var hello = Module{
	Name:    "hello",
	Path:    "example.com/hello",
	Version: "v1.0.0",
	Commands: []Command{
		{Binary: "bye", Package: "./cmd/bye"},
		{Binary: "hello", Package: "."},
	},
}

// fileProxy writes a GOPROXY=file:// tree serving hello and points the go
// command, the module cache and the user's cache into temporary
// directories, so the test needs no network and leaves nothing behind.
// It returns the proxy's directory and the cache root.
func fileProxy(t *testing.T) (proxy, cache string) {
	t.Helper()
	proxy, cache = t.TempDir(), t.TempDir()
	files := map[string]string{
		"go.mod":         "module example.com/hello\n\ngo 1.22\n",
		"main.go":        "package main\n\nfunc main() { println(\"hello\") }\n",
		"cmd/bye/bye.go": "package main\n\nfunc main() { println(\"bye\") }\n",
	}
	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	for name, body := range files {
		w, err := zw.Create("example.com/hello@v1.0.0/" + name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	v := filepath.Join(proxy, "example.com", "hello", "@v")
	if err := os.MkdirAll(v, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string][]byte{
		"list":        []byte("v1.0.0\n"),
		"v1.0.0.info": []byte(`{"Version":"v1.0.0","Time":"2026-01-01T00:00:00Z"}`),
		"v1.0.0.mod":  []byte(files["go.mod"]),
		"v1.0.0.zip":  zbuf.Bytes(),
	} {
		if err := os.WriteFile(filepath.Join(v, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The go command's build cache defaults to one under the user's cache
	// directory, which moves below: keep the real one, or every test
	// compiles the runtime again.
	if os.Getenv("GOCACHE") == "" {
		out, err := exec.Command("go", "env", "GOCACHE").Output()
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv("GOCACHE", strings.TrimSpace(string(out)))
	}
	t.Setenv("GOPROXY", "file://"+proxy)
	t.Setenv("GOSUMDB", "off")
	t.Setenv("GOTOOLCHAIN", "local")
	t.Setenv("GOMODCACHE", filepath.Join(cache, "mod"))
	t.Setenv("XDG_CACHE_HOME", cache)
	return proxy, cache
}

// run runs a cached binary and returns what it printed.
func run(t *testing.T, bin string) string {
	t.Helper()
	out, err := exec.Command(bin).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", bin, err, out)
	}
	return strings.TrimSpace(string(out))
}

// The cache key is the name and the version, under the cache root.
func TestDir(t *testing.T) {
	if got, want := hello.Dir("/c"), "/c/intercom/hello-v1.0.0"; got != want {
		t.Errorf("Dir = %q, want %q", got, want)
	}
	next := hello
	next.Version = "v1.0.1"
	if hello.Dir("/c") == next.Dir("/c") {
		t.Error("two versions share a cache directory")
	}
}

// A build is complete only when every command is there as an executable
// file: a build killed between its renames is not.
func TestComplete(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]os.FileMode // binary → mode; 0: a directory
		want  bool
	}{
		{"empty", nil, false},
		{"first only", map[string]os.FileMode{"bye": 0o755}, false},
		{"last only", map[string]os.FileMode{"hello": 0o755}, false},
		{"not executable", map[string]os.FileMode{"bye": 0o755, "hello": 0o644}, false},
		{"a directory", map[string]os.FileMode{"bye": 0o755, "hello": 0}, false},
		{"all", map[string]os.FileMode{"bye": 0o755, "hello": 0o755}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, mode := range tc.files {
				p := filepath.Join(dir, name)
				var err error
				if mode == 0 {
					err = os.Mkdir(p, 0o755)
				} else {
					err = os.WriteFile(p, []byte("#!/bin/true\n"), mode)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if got := hello.Complete(dir); got != tc.want {
				t.Errorf("Complete = %v, want %v", got, tc.want)
			}
		})
	}
	if (Module{}).Complete(t.TempDir()) {
		t.Error("a module without commands counts as built")
	}
}

// Parallel callers build once; later calls come from the cache without
// the proxy; a cache missing a binary is built again; leftovers of a
// killed build are removed.
func TestBuildCaches(t *testing.T) {
	proxy, cache := fileProxy(t)
	dir := hello.Dir(cache)
	stale := filepath.Join(dir, ".tmp-killed")
	if err := os.MkdirAll(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	// Each caller its own log: the count over all of them says how many
	// built.
	var wg sync.WaitGroup
	dirs := make([]string, 3)
	errs := make([]error, 3)
	logs := make([]strings.Builder, 3)
	for i := range dirs {
		wg.Go(func() { dirs[i], errs[i] = hello.Build(ctx, &logs[i]) })
	}
	wg.Wait()
	var log strings.Builder
	for i := range dirs {
		log.WriteString(logs[i].String())
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if dirs[i] != dir {
			t.Fatalf("Build returned %q, want %q", dirs[i], dir)
		}
	}
	if n := strings.Count(log.String(), "building"); n != len(hello.Commands) {
		t.Fatalf("three parallel callers built %d commands, want %d once:\n%s", n, len(hello.Commands), log.String())
	}
	if got := run(t, filepath.Join(dir, "hello")); got != "hello" {
		t.Errorf("hello printed %q", got)
	}
	if got := run(t, filepath.Join(dir, "bye")); got != "bye" {
		t.Errorf("bye printed %q", got)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a killed build's leftovers are still there: %v", err)
	}
	if tmp, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(tmp) > 0 {
		t.Errorf("work directories left behind: %v", tmp)
	}

	// Cached: no proxy needed, nothing built.
	if err := os.RemoveAll(proxy); err != nil {
		t.Fatal(err)
	}
	var again strings.Builder
	if _, err := hello.Build(ctx, &again); err != nil {
		t.Fatal(err)
	}
	if again.Len() != 0 {
		t.Errorf("a cached build ran again:\n%s", again.String())
	}

	// A binary gone: built again (from the module cache, the proxy being
	// gone).
	if err := os.Remove(filepath.Join(dir, "bye")); err != nil {
		t.Fatal(err)
	}
	var rebuilt strings.Builder
	if _, err := hello.Build(ctx, &rebuilt); err != nil {
		t.Fatal(err)
	}
	if strings.Count(rebuilt.String(), "building") != len(hello.Commands) {
		t.Errorf("an incomplete cache was not rebuilt:\n%s", rebuilt.String())
	}
	if got := run(t, filepath.Join(dir, "bye")); got != "bye" {
		t.Errorf("bye printed %q", got)
	}
}

// A caller waiting for another's build gives up when its context ends,
// and builds once the lock is free.
func TestBuildWaitsForTheLock(t *testing.T) {
	_, cache := fileProxy(t)
	dir := hello.Dir(cache)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	unlock, err := lock(t.Context(), filepath.Join(dir, ".lock"))
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(t.Context(), 3*lockPoll)
	defer cancel()
	if _, err := hello.Build(short, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Build with the lock held elsewhere: %v, want a deadline error", err)
	}
	unlock()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	if _, err := hello.Build(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if !hello.Complete(dir) {
		t.Fatal("not built after the lock was released")
	}
}

// A version the proxy does not have fails with the go command's reason and
// caches nothing.
func TestBuildUnknownVersion(t *testing.T) {
	_, cache := fileProxy(t)
	missing := hello
	missing.Version = "v9.9.9"
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	_, err := missing.Build(ctx, nil)
	if err == nil || !strings.Contains(err.Error(), "v9.9.9") {
		t.Fatalf("Build of a missing version: %v", err)
	}
	if missing.Complete(missing.Dir(cache)) {
		t.Fatal("a failed build counts as complete")
	}
}
