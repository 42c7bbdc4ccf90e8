package nodeproc

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// Setup finds a harness's directory (driver.mjs, setup.sh,
// package-lock.json) and runs its setup.sh, once per process: the script
// is cheap when nothing changed, but not free (it hashes the page
// sources). A harness keeps one Setup as its package state.
type Setup struct {
	// Name is the harness's directory under internal/testenv, a sibling of
	// this package's ("resident").
	Name string
	// DirEnv names an environment variable that, when set, points at the
	// directory instead, e.g. for a binary built with -trimpath and run
	// elsewhere.
	DirEnv string
	// NoSource is the error, wrapped, when the directory is not found.
	NoSource error

	mu  sync.Mutex
	dir string // set once setup.sh succeeded in this process
}

// Run runs setup.sh once and returns the directory. It takes a file lock
// in the script, so parallel test binaries do not race; a failed run is
// retried on the next call.
func (s *Setup) Run(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dir != "" {
		return s.dir, nil
	}
	dir, err := s.packageDir()
	if err != nil {
		return "", err
	}
	script := filepath.Join(dir, "setup.sh")
	cmd := exec.CommandContext(ctx, "sh", script)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("run %s: %w\n%s", script, err, tail(out.String(), 4000))
	}
	s.dir = dir
	return dir, nil
}

// packageDir finds the harness's directory: $DirEnv, else the sibling of
// this source file's directory, else internal/testenv/<Name> under the
// module root above the working directory (or the working directory
// itself, or one above it, when it is the harness's).
func (s *Setup) packageDir() (string, error) {
	if dir := os.Getenv(s.DirEnv); dir != "" {
		if isPackageDir(dir) {
			return filepath.Abs(dir)
		}
		return "", fmt.Errorf("use $%s=%q: %w", s.DirEnv, dir, s.NoSource)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		if c := filepath.Join(filepath.Dir(filepath.Dir(file)), s.Name); isPackageDir(c) {
			return c, nil
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find package directory: %w", err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if c := filepath.Join(d, "internal", "testenv", s.Name); isPackageDir(c) {
			return c, nil
		}
		if filepath.Base(d) == s.Name && isPackageDir(d) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", s.NoSource
		}
	}
}

func isPackageDir(dir string) bool {
	for _, name := range []string{"driver.mjs", "setup.sh", "package-lock.json"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return false
		}
	}
	return true
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
