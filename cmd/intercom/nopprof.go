//go:build !pprof

package main

import (
	"context"
	"io"
)

// serveProfiles does nothing: the board's binary serves no profiles (see
// pprof.go, built only with the pprof tag).
func serveProfiles(context.Context, io.Writer) {}
