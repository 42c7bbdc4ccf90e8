// Command prebuild builds the servers the test harnesses run (Dendrite,
// livekit-server, go2rtc) into the user's cache before the tests start, so
// a cold machine's minutes of building are not charged to a test's
// timeout. scripts/deps.sh runs it; once cached it returns at once.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/doorbell/intercom/internal/testenv/dendrite"
	"github.com/doorbell/intercom/internal/testenv/go2rtc"
	"github.com/doorbell/intercom/internal/testenv/gobuild"
	"github.com/doorbell/intercom/internal/testenv/livekit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, m := range []gobuild.Module{dendrite.Module(), livekit.Module(), go2rtc.Module()} {
		if _, err := m.Build(ctx, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "prebuild:", err)
			stop()
			os.Exit(1)
		}
	}
}
