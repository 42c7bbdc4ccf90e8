package livekit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/doorbell/intercom/internal/testenv/gobuild"
)

// Version is the livekit-server release the harness builds and runs.
const Version = "v1.13.5"

// BinEnv names an environment variable that, when set, is the path of a
// prebuilt livekit-server binary; Build then returns it without building
// (a CI cache, or a machine without the module proxy).
const BinEnv = "INTERCOM_LIVEKIT_BIN"

// Module returns the pinned livekit-server as gobuild builds it: pure Go
// (LiveKit's own images build it with cgo off), so no C toolchain.
func Module() gobuild.Module {
	return gobuild.Module{
		Name:     "livekit-server",
		Path:     "github.com/livekit/livekit-server",
		Version:  Version,
		Commands: []gobuild.Command{{Binary: "livekit-server", Package: "./cmd/server"}},
	}
}

// Build makes sure the pinned livekit-server is built and returns the path
// of the binary. The first build on a machine takes minutes; after that it
// comes from ${XDG_CACHE_HOME:-$HOME/.cache}/intercom/livekit-server-v1.13.5
// at once, and parallel test binaries build only once (see gobuild).
func Build(ctx context.Context) (string, error) {
	if bin := os.Getenv(BinEnv); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("use $%s: %w", BinEnv, err)
		}
		return bin, nil
	}
	dir, err := Module().Build(ctx, nil)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "livekit-server"), nil
}
