package callengine

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// module is the project's module path.
const module = "github.com/doorbell/intercom"

// pureImport reports whether a package of the call logic may depend on
// path: the standard library, the call logic itself and internal/runloop
// (the event-loop kit, itself standard library only), nothing else.
// Everything else is an adapter (matrix, media, gpio, device, daemon ...)
// or a library one wraps (mautrix, pion, periph, livekit).
func pureImport(path string, standard bool) bool {
	return standard ||
		path == module+"/callengine" ||
		strings.HasPrefix(path, module+"/callengine/") ||
		path == module+"/internal/runloop"
}

// TestNoAdapterImports keeps every package under callengine (the 1:1
// machine, the household mesh, MatrixRTC ringing, the ring coordinator and
// whatever is added next) free of the libraries and adapters around it,
// so that it stays testable without network or hardware. It walks the
// whole dependency graph of ./... from here, tests included, so a package
// reached through an allowed one counts too.
func TestNoAdapterImports(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("no go command: %v", err)
	}
	cmd := exec.Command("go", "list", "-deps", "-test", "-json=ImportPath,Standard,Imports,CgoFiles", "./...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	type pkg struct {
		ImportPath string
		Standard   bool
		Imports    []string
		CgoFiles   []string
	}
	var pkgs []pkg
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}

	// Test variants are listed as "path [path.test]", test mains as
	// "path.test" and external tests as "path_test": all are judged as
	// the package they test.
	base := func(path string) string {
		path, _, _ = strings.Cut(path, " ")
		path = strings.TrimSuffix(path, ".test")
		return strings.TrimSuffix(path, "_test")
	}
	bad := map[string]bool{}
	for _, p := range pkgs {
		if !pureImport(base(p.ImportPath), p.Standard) {
			bad[base(p.ImportPath)] = true
		}
		if !p.Standard && len(p.CgoFiles) > 0 {
			t.Errorf("%s uses cgo (%s)", base(p.ImportPath), strings.Join(p.CgoFiles, ", "))
		}
	}
	// Name the allowed packages that pull each one in, so the message
	// says which import to remove.
	edges := map[string]bool{}
	for _, p := range pkgs {
		from := base(p.ImportPath)
		for _, imp := range p.Imports {
			if !bad[from] && bad[base(imp)] {
				edges[from+" imports "+base(imp)] = true
			}
		}
	}
	for _, e := range slices.Sorted(maps.Keys(edges)) {
		t.Errorf("%s: callengine may use only the standard library, callengine/... and internal/runloop", e)
	}
	if len(bad) > 0 && len(edges) == 0 {
		t.Errorf("callengine depends on %v", slices.Sorted(maps.Keys(bad)))
	}
}
