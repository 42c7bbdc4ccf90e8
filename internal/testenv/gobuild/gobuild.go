// Package gobuild builds the servers the test harnesses run (Dendrite,
// livekit-server, go2rtc) from the Go module proxy, outside this module,
// and caches the binaries in the user's cache directory. Each harness
// keeps its own specifics (module, version, cgo, which commands) in a
// Module value; the fetching, building, locking and caching live here once.
//
// The cache directory of a module is
// ${XDG_CACHE_HOME:-$HOME/.cache}/intercom/NAME-VERSION: the version is the
// whole cache key, because a pinned release from the proxy never changes
// (the go.sum database checks that it does not). Delete the directory to
// force a rebuild.
package gobuild

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Module is one pinned Go module whose commands a harness runs.
type Module struct {
	// Name names the cache directory (with the version) and prefixes
	// progress messages, e.g. "dendrite".
	Name string
	// Path and Version are the module's, as `go mod download` takes them.
	Path, Version string
	// CGO builds with cgo on (Dendrite's sqlite needs it); pure Go
	// servers build with it off, so no C toolchain is needed.
	CGO bool
	// Commands are built in this order. The last one's presence in the
	// cache marks a complete build, because binaries are renamed into the
	// cache in this order only after all of them have built.
	Commands []Command
}

// Command is one main package of the module.
type Command struct {
	Binary  string // file name in the cache directory
	Package string // package path relative to the module root, "./cmd/server" or "."
}

// lockPoll is how often a caller waiting for another's build retries the
// lock, and so how soon it notices its context ending.
const lockPoll = 200 * time.Millisecond

// Dir is the module's cache directory under cacheRoot (see the package
// comment; cacheRoot is os.UserCacheDir's answer).
func (m Module) Dir(cacheRoot string) string {
	return filepath.Join(cacheRoot, "intercom", m.Name+"-"+m.Version)
}

// Complete reports whether dir holds every command as an executable file.
func (m Module) Complete(dir string) bool {
	for _, c := range m.Commands {
		fi, err := os.Stat(filepath.Join(dir, c.Binary))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return len(m.Commands) > 0
}

// Build makes sure the module's commands are built and returns the cache
// directory holding them. Once they are cached this is a few stat calls.
// A cold build takes minutes; parallel callers, in this process or in
// other test binaries, serialise on a file lock in the cache directory so
// the build runs once (flock(2) on DIR/.lock, as the shell scripts before
// it took, so older checkouts sharing the cache wait on the same lock).
// Binaries are built under a
// temporary directory and renamed into place, so a killed build leaves no
// half-written binary behind. progress, if not nil, gets a line as each
// step starts (deps.sh shows them; tests pass nil).
func (m Module) Build(ctx context.Context, progress io.Writer) (string, error) {
	if progress == nil {
		progress = io.Discard
	}
	root, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("build %s %s: %w", m.Name, m.Version, err)
	}
	dir := m.Dir(root)
	if m.Complete(dir) {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("build %s %s: %w", m.Name, m.Version, err)
	}
	unlock, err := lock(ctx, filepath.Join(dir, ".lock"))
	if err != nil {
		return "", fmt.Errorf("build %s %s: %w", m.Name, m.Version, err)
	}
	defer unlock()
	// Another caller may have finished the build while we waited.
	if m.Complete(dir) {
		return dir, nil
	}
	if err := m.build(ctx, dir, progress); err != nil {
		return "", fmt.Errorf("build %s %s: %w", m.Name, m.Version, err)
	}
	return dir, nil
}

// build fetches and builds into dir; the caller holds dir's lock.
func (m Module) build(ctx context.Context, dir string, progress io.Writer) error {
	// Leftovers of builds that were killed; we hold the lock, so none is
	// live.
	old, _ := filepath.Glob(filepath.Join(dir, ".tmp-*"))
	for _, o := range old {
		os.RemoveAll(o)
	}
	work, err := os.MkdirTemp(dir, ".tmp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	fmt.Fprintf(progress, "%s: fetching %s@%s\n", m.Name, m.Path, m.Version)
	// Outside any module (the empty work directory), so our go.mod and its
	// replace directives never leak into the server's build.
	out, err := m.goCmd(ctx, work, "mod", "download", "-json", m.Path+"@"+m.Version)
	var dl struct{ Dir, Error string }
	if err != nil {
		// The JSON, if any, carries the reason (an unknown version, the
		// proxy refusing).
		_ = json.Unmarshal(out, &dl)
		return fmt.Errorf("go mod download: %w %s", err, dl.Error)
	}
	if err := json.Unmarshal(out, &dl); err != nil {
		return fmt.Errorf("go mod download: %w: %s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dl.Dir, "go.mod")); err != nil {
		return fmt.Errorf("go mod download gave no module directory: %w", err)
	}
	start := time.Now()
	for _, c := range m.Commands {
		fmt.Fprintf(progress, "%s: building %s (cold builds take minutes)\n", m.Name, c.Binary)
		if _, err := m.goCmd(ctx, dl.Dir, "build", "-trimpath", "-o", filepath.Join(work, c.Binary), c.Package); err != nil {
			return fmt.Errorf("go build %s: %w", c.Package, err)
		}
	}
	for _, c := range m.Commands {
		if err := os.Rename(filepath.Join(work, c.Binary), filepath.Join(dir, c.Binary)); err != nil {
			return err
		}
	}
	fmt.Fprintf(progress, "%s: built in %s into %s\n", m.Name, time.Since(start).Round(time.Second), dir)
	return nil
}

// goCmd runs the go command in dir and returns its standard output; a
// failure's error carries its standard error.
func (m Module) goCmd(ctx context.Context, dir string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cgo := "0"
	if m.CGO {
		cgo = "1"
	}
	// Later entries win. GOFLAGS replaces the caller's (our -tags=goolm
	// means nothing to these modules); -modcacherw keeps what this
	// extracts removable by `go clean -modcache`.
	cmd.Env = append(os.Environ(), "GOWORK=off", "GO111MODULE=on", "CGO_ENABLED="+cgo,
		"GOFLAGS=-modcacherw -buildvcs=false -mod=readonly")
	// The go command and the compilers under it form one process group,
	// all stopped when ctx ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%w\n%s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// lock takes an exclusive flock on path, retrying until ctx ends (flock
// itself cannot be interrupted by a context). The lock dies with the
// process, so a killed build never leaves it held.
func lock(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for lock %s: %w", path, context.Cause(ctx))
		case <-time.After(lockPoll):
		}
	}
}
