package livekit

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Version is the livekit-server release the harness builds and runs.
const Version = "v1.13.5"

// BinEnv names an environment variable that, when set, is the path of a
// prebuilt livekit-server binary; Build then returns it without building
// (a CI cache, or a machine without the module proxy).
const BinEnv = "INTERCOM_LIVEKIT_BIN"

// buildScript is build.sh, embedded so that callers in any package and any
// working directory can run it.
//
//go:embed build.sh
var buildScript string

// Build makes sure the pinned livekit-server is built and returns the path
// of the binary. The first build on a machine takes minutes; after that it
// comes from ${XDG_CACHE_HOME:-$HOME/.cache}/intercom/livekit-server-v1.13.5
// at once. build.sh takes a file lock, so parallel test binaries build only
// once. There is no in-process cache: the script's fast path is one bash
// start (a few milliseconds), which keeps the package free of global state.
func Build(ctx context.Context) (string, error) {
	if bin := os.Getenv(BinEnv); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("use $%s: %w", BinEnv, err)
		}
		return bin, nil
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
		return "", fmt.Errorf("build livekit-server %s: %w\n%s", Version, err, stderr.Bytes())
	}
	bin := strings.TrimSpace(stdout.String())
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("build livekit-server %s: no binary at %q: %w", Version, bin, err)
	}
	return bin, nil
}
