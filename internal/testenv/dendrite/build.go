package dendrite

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/doorbell/intercom/internal/testenv/gobuild"
)

// Version is the Dendrite release the harness builds and runs.
const Version = "v0.15.2"

// BinDirEnv names an environment variable that, when set, points at a
// directory holding prebuilt `dendrite` and `generate-keys` binaries; Build
// then returns it without building (a CI cache, or a machine without cgo).
const BinDirEnv = "INTERCOM_DENDRITE_BIN_DIR"

// Module returns the pinned Dendrite as gobuild builds it. `go install
// …@v0.15.2` fails on this project's proxy (it refuses the version list
// that install consults), which gobuild's download-then-build avoids.
// Dendrite needs cgo (sqlite). dendrite comes last: its presence marks a
// complete build.
func Module() gobuild.Module {
	return gobuild.Module{
		Name:    "dendrite",
		Path:    "github.com/element-hq/dendrite",
		Version: Version,
		CGO:     true,
		Commands: []gobuild.Command{
			{Binary: "generate-keys", Package: "./cmd/generate-keys"},
			{Binary: "dendrite", Package: "./cmd/dendrite"},
		},
	}
}

// Build makes sure the pinned Dendrite is built and returns the directory
// holding its binaries. The first build on a machine takes minutes (cgo,
// sqlite); after that the binaries come from
// ${XDG_CACHE_HOME:-$HOME/.cache}/intercom/dendrite-v0.15.2 at once, and
// parallel test binaries build only once (see gobuild).
func Build(ctx context.Context) (string, error) {
	if dir := os.Getenv(BinDirEnv); dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "dendrite")); err != nil {
			return "", fmt.Errorf("use $%s: %w", BinDirEnv, err)
		}
		return dir, nil
	}
	return Module().Build(ctx, nil)
}
