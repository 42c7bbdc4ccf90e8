package dendrite

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Version is the Dendrite release the harness builds and runs.
const Version = "v0.15.2"

// BinDirEnv names an environment variable that, when set, points at a
// directory holding prebuilt `dendrite` and `generate-keys` binaries; Build
// then returns it without building (a CI cache, or a machine without cgo).
const BinDirEnv = "INTERCOM_DENDRITE_BIN_DIR"

// buildScript is build.sh, embedded so that callers in any package and any
// working directory (tests, cmd/devserver) can run it.
//
//go:embed build.sh
var buildScript string

var (
	buildMu  sync.Mutex
	builtDir string // set once a build succeeded in this process
)

// Build makes sure the pinned Dendrite is built and returns the directory
// holding its binaries. The first build on a machine takes minutes (cgo,
// sqlite); after that the binaries come from
// ${XDG_CACHE_HOME:-$HOME/.cache}/intercom/dendrite-v0.15.2 at once. build.sh
// takes a file lock, so parallel test binaries build only once.
func Build(ctx context.Context) (string, error) {
	if dir := os.Getenv(BinDirEnv); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "dendrite")); err != nil {
			return "", fmt.Errorf("use $%s: %w", BinDirEnv, err)
		}
		return dir, nil
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if builtDir != "" {
		return builtDir, nil
	}
	// Run the script with `bash -c` so it need not exist on disk; "build.sh"
	// becomes $0 for its messages.
	cmd := exec.CommandContext(ctx, "bash", "-c", buildScript, "build.sh")
	// The script and the go commands under it form one process group; on
	// cancellation the whole group gets SIGTERM (the script's trap removes
	// its temporary directory), and the flock dies with the last of them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build dendrite %s: %w\n%s", Version, err, stderr.Bytes())
	}
	dir := strings.TrimSpace(stdout.String())
	if _, err := os.Stat(filepath.Join(dir, "dendrite")); err != nil {
		return "", fmt.Errorf("build dendrite %s: no binary in %q: %w", Version, dir, err)
	}
	builtDir = dir
	return dir, nil
}
