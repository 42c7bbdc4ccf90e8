package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// maxArm64Size is the budget for the stripped arm64 binary: it must fit a
// small board's image with room for updates. It was 25 MiB until issue 14:
// the binary had reached 25.1 MiB before it (at 997b005), and end-to-end
// encryption (mautrix's crypto with goolm, its SQLite store with SQLite's
// C code) adds 2.7 MiB, to 27.8 MiB. Raised to 30 MiB rather than cutting
// a feature; the next thing to weigh is LiveKit's SDK and its protobufs.
const maxArm64Size = 30 << 20

// TestReleaseArm64UnderQemu cross-builds the arm64 release binary with
// scripts/release.sh (Debian's cross toolchain, multiarch libraries) and
// runs `intercom version` and `intercom check-config` on the documented
// example under qemu-aarch64-static. qemu is called without -L: with a
// sysroot prefix and the multiarch libc installed, cgo binaries hang
// (../shared/TESTING.md). It needs `scripts/deps.sh release`, which
// `make test-release` runs; without the toolchain it skips.
func TestReleaseArm64UnderQemu(t *testing.T) {
	if testing.Short() {
		t.Skip("release test: cross-builds for arm64")
	}
	for _, tool := range []string{"aarch64-linux-gnu-gcc", "qemu-aarch64-static"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: run `make test-release` (scripts/deps.sh release installs the cross toolchain)", tool)
		}
	}
	if _, err := os.Stat("/usr/lib/aarch64-linux-gnu/pkgconfig/vpx.pc"); err != nil {
		t.Skip("libvpx-dev:arm64 not installed: run `make test-release`")
	}
	dist := t.TempDir()
	const ver = "v9.9.9-releasetest"
	build := exec.Command("../../scripts/release.sh")
	build.Env = append(os.Environ(), "ARCHES=arm64", "DIST="+dist, "VERSION="+ver)
	out, err := build.CombinedOutput()
	if err != nil {
		t.Fatalf("release.sh: %v\n%s", err, out)
	}
	t.Logf("%s", bytes.TrimSpace(out))
	bin := filepath.Join(dist, "intercom-linux-arm64")
	st, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stripped arm64 binary: %.1f MB (budget %d MB)", float64(st.Size())/(1<<20), maxArm64Size>>20)
	if st.Size() > maxArm64Size {
		t.Errorf("arm64 binary is %d bytes, over the %d budget", st.Size(), maxArm64Size)
	}
	if file, err := exec.Command("file", bin).Output(); err == nil && !strings.Contains(string(file), "ARM aarch64") {
		t.Fatalf("not an arm64 binary: %s", file)
	}

	qemu := func(args ...string) (string, error) {
		cmd := exec.Command("qemu-aarch64-static", append([]string{bin}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	got, err := qemu("version")
	if err != nil || strings.TrimSpace(got) != "intercom "+ver {
		t.Fatalf("version under qemu: %v: %q, want %q", err, got, "intercom "+ver)
	}

	// The example names ./secrets/password; give it one, 0600.
	dir := t.TempDir()
	example, err := os.ReadFile("../../provisioning/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "intercom.yaml")
	if err := os.WriteFile(cfg, example, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "secrets"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secrets", "password"), []byte("example-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = qemu("check-config", "--config", cfg)
	if err != nil || !strings.Contains(got, cfg+": ok") {
		t.Fatalf("check-config under qemu: %v\n%s", err, got)
	}
	// And a broken file fails with FILE:LINE, as on the host.
	if err := os.WriteFile(cfg, append(example, []byte("bogus: 1\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = qemu("check-config", "--config", cfg)
	if err == nil || !strings.Contains(got, "intercom.yaml:") || !strings.Contains(got, "bogus") {
		t.Fatalf("broken config under qemu: %v\n%s", err, got)
	}
}
