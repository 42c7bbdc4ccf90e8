package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoTestHarnessInBinary keeps test code out of the release binary:
// nothing it links may come from internal/testenv (the harnesses, some of
// which start servers or browsers) or from a fake package (`...test`, as
// matrixtest or provisioningtest). A stand-in the daemon itself switches
// on for benchmarks, such as the noisy test pattern, lives in the package
// it stands in for.
func TestNoTestHarnessInBinary(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("no go command: %v", err)
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const module = "github.com/doorbell/intercom/"
	n := 0
	for _, p := range strings.Fields(string(out)) {
		rel, ok := strings.CutPrefix(p, module)
		if !ok {
			continue
		}
		n++
		if strings.HasPrefix(rel, "internal/testenv/") || strings.HasSuffix(rel, "test") {
			t.Errorf("the binary depends on %s", p)
		}
	}
	if n < 5 {
		t.Fatalf("go list found only %d of the module's packages: the test checks nothing", n)
	}
}
