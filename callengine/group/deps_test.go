package group

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoAdapterImports keeps the group call logic pure, like callengine.
func TestNoAdapterImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/pion/", "maunium.net/go/mautrix", "periph.io/"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("callengine/group depends on %s", dep)
			}
		}
	}
}
