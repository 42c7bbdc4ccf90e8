package callengine

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoAdapterImports keeps the call logic (the 1:1 machine, the
// household mesh, MatrixRTC ringing, the ring coordinator and their
// runners) free of the libraries it is adapted to, so that it stays
// testable without network or hardware.
func TestNoAdapterImports(t *testing.T) {
	for _, pkg := range []string{".", "./group", "./rtc", "./ring"} {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Skipf("go list: %v", err)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, banned := range []string{"github.com/pion/", "maunium.net/go/mautrix", "periph.io/", "github.com/livekit/"} {
				if strings.HasPrefix(dep, banned) {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}
