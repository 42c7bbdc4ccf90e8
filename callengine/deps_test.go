package callengine

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoAdapterImports keeps the call logic free of the libraries it is
// adapted to, so that it stays testable without network or hardware.
func TestNoAdapterImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/pion/", "maunium.net/go/mautrix", "periph.io/"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("callengine depends on %s", dep)
			}
		}
	}
}
