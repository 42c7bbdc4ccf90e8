package systemd

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoProjectImports keeps the supervisor generic: what it supervises
// (the Matrix sync, the device loops) is handed in as functions by the
// daemon, never imported, so the package stays beside the unit and
// testable on its own.
func TestNoProjectImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{join .Deps "\n"}}`, ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/doorbell/intercom/") || dep == "github.com/doorbell/intercom" {
			t.Errorf("systemd depends on %s", dep)
		}
	}
}
