package buildroot

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/doorbell/intercom/provisioning"
)

// The Buildroot release the defconfigs follow, and the Go it ships
// (package/go/go.mk, GO_VERSION): go.mod's go directive must not exceed
// it, or the board build fails with "go.mod requires go >= …".
const (
	buildrootRelease = "2026.05.1"
	buildrootGo      = "1.26.3"
)

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mkVars returns the variables an .mk file assigns (NAME = …, +=, ?=),
// with continuation lines joined.
func mkVars(t *testing.T, path string) map[string]string {
	t.Helper()
	text := strings.ReplaceAll(read(t, path), "\\\n", " ")
	vars := map[string]string{}
	inDefine := false
	for _, line := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(line, "define "):
			inDefine = true
			continue
		case line == "endef":
			inDefine = false
			continue
		case inDefine || strings.HasPrefix(line, "#"):
			continue
		}
		m := regexp.MustCompile(`^([A-Z0-9_]+)\s*(\+|\?|:)?=\s*(.*)$`).FindStringSubmatch(line)
		if m != nil {
			vars[m[1]] = strings.TrimSpace(vars[m[1]] + " " + m[3])
		}
	}
	return vars
}

const external = "BR2_EXTERNAL_INTERCOM_PATH"

func TestExternalTree(t *testing.T) {
	desc := read(t, "external.desc")
	if !regexp.MustCompile(`(?m)^name: INTERCOM$`).MatchString(desc) {
		t.Fatalf("external.desc must name the tree INTERCOM (the $%s variable):\n%s", external, desc)
	}
	if !strings.Contains(read(t, "external.mk"), "$("+external+")/package/*/*.mk") {
		t.Error("external.mk does not include the packages' .mk files")
	}
	// Every package directory is sourced from Config.in, and every sourced
	// file exists.
	cfg := read(t, "Config.in")
	sourced := regexp.MustCompile(`source "\$`+external+`/([^"]+)"`).FindAllStringSubmatch(cfg, -1)
	var files []string
	for _, m := range sourced {
		files = append(files, m[1])
		if _, err := os.Stat(m[1]); err != nil {
			t.Errorf("Config.in sources %s: %v", m[1], err)
		}
	}
	pkgs, _ := filepath.Glob("package/*/Config.in")
	for _, p := range pkgs {
		if !slices.Contains(files, p) {
			t.Errorf("Config.in does not source %s", p)
		}
	}
}

func TestIntercomPackage(t *testing.T) {
	const pkg, PKG = "intercom", "INTERCOM"
	dir := filepath.Join("package", pkg)
	mkPath := filepath.Join(dir, pkg+".mk")
	mk := read(t, mkPath)
	vars := mkVars(t, mkPath)

	if !strings.Contains(mk, "$(eval $(golang-package))") {
		t.Error("intercom.mk does not use the golang-package infrastructure")
	}
	for name := range vars {
		if !strings.HasPrefix(name, PKG+"_") {
			t.Errorf("variable %s does not start with %s_: Buildroot would ignore it", name, PKG)
		}
	}
	// Buildroot 2026.05.1 (and master) refuses <PKG>_INSTALL_BINS; the binary name
	// comes from the build target.
	if _, ok := vars[PKG+"_INSTALL_BINS"]; ok {
		t.Errorf("%s_INSTALL_BINS is rejected by the golang infrastructure; use %s_BUILD_TARGETS", PKG, PKG)
	}
	if vars[PKG+"_SITE_METHOD"] != "local" || vars[PKG+"_SITE"] != "$("+external+")/.." {
		t.Errorf("the package must build this checkout: SITE %q, SITE_METHOD %q", vars[PKG+"_SITE"], vars[PKG+"_SITE_METHOD"])
	}
	// A local package is not vendored by the download step.
	if !strings.Contains(vars[PKG+"_PRE_BUILD_HOOKS"], PKG+"_GO_VENDOR") || !strings.Contains(mk, "mod vendor") {
		t.Error("no vendor step: a local-source Go package arrives without vendor/ and cannot build offline")
	}
	gomod := read(t, "../go.mod")
	module := regexp.MustCompile(`(?m)^module (\S+)$`).FindStringSubmatch(gomod)
	if module == nil || vars[PKG+"_GOMOD"] != module[1] {
		t.Errorf("%s_GOMOD %q is not go.mod's module %v", PKG, vars[PKG+"_GOMOD"], module)
	}
	for _, target := range strings.Fields(vars[PKG+"_BUILD_TARGETS"]) {
		if _, err := os.Stat(filepath.Join("..", target, "main.go")); err != nil {
			t.Errorf("build target %s: %v", target, err)
		}
	}
	if !strings.Contains(vars[PKG+"_LDFLAGS"], "-X main.version=$("+PKG+"_VERSION)") {
		t.Error("the version is not injected at link time")
	}
	// Every file the recipes copy exists: $(@D)/X in the checkout,
	// $(BR2_EXTERNAL_INTERCOM_PATH)/X in this tree.
	for _, m := range regexp.MustCompile(`\$\(@D\)/([\w./-]+)`).FindAllStringSubmatch(mk, -1) {
		if m[1] == "vendor/modules.txt" || m[1] == "bin" || strings.HasPrefix(m[1], "bin/") {
			continue
		}
		if _, err := os.Stat(filepath.Join("..", m[1])); err != nil {
			t.Errorf("intercom.mk copies $(@D)/%s, which the checkout lacks", m[1])
		}
	}
	for _, m := range regexp.MustCompile(`\$\(`+external+`\)/([\w./-]+)`).FindAllStringSubmatch(mk, -1) {
		if m[1] == ".." {
			continue
		}
		if _, err := os.Stat(m[1]); err != nil {
			t.Errorf("intercom.mk uses $(%s)/%s, which the tree lacks", external, m[1])
		}
	}
	// Each C library dependency is selected in Config.in.
	cfg := read(t, filepath.Join(dir, "Config.in"))
	if !strings.Contains(cfg, "config BR2_PACKAGE_"+PKG+"\n") {
		t.Errorf("Config.in does not define BR2_PACKAGE_%s", PKG)
	}
	deps := strings.Fields(vars[PKG+"_DEPENDENCIES"])
	for _, want := range []string{"libvpx", "opus", "alsa-lib", "speexdsp"} {
		if !slices.Contains(deps, want) {
			t.Errorf("%s_DEPENDENCIES lacks %s", PKG, want)
		}
	}
	for _, d := range deps {
		sym := "BR2_PACKAGE_" + strings.ToUpper(strings.ReplaceAll(d, "-", "_"))
		if !strings.Contains(cfg, "select "+sym) {
			t.Errorf("dependency %s is not selected (select %s) in Config.in", d, sym)
		}
	}
}

// TestGoVersionFitsBuildroot keeps go.mod's go directive within the Go the
// targeted Buildroot release builds with.
func TestGoVersionFitsBuildroot(t *testing.T) {
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(read(t, "../go.mod"))
	if m == nil {
		t.Fatal("no go directive in go.mod")
	}
	if compareVersions(m[1], buildrootGo) > 0 {
		t.Fatalf("go.mod says go %s, but Buildroot %s ships Go %s: the board build would fail", m[1], buildrootRelease, buildrootGo)
	}
}

func TestDefconfigs(t *testing.T) {
	want := []string{"intercom_raspberrypi4_64_defconfig", "intercom_raspberrypi5_defconfig", "intercom_raspberrypizero2w_64_defconfig"}
	got, _ := filepath.Glob("configs/*_defconfig")
	for i := range got {
		got[i] = filepath.Base(got[i])
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("defconfigs %v, want %v", got, want)
	}
	for _, name := range want {
		t.Run(name, func(t *testing.T) {
			opts := map[string]string{}
			for _, line := range strings.Split(read(t, filepath.Join("configs", name)), "\n") {
				if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
					if _, dup := opts[k]; dup {
						t.Errorf("%s set twice", k)
					}
					opts[k] = v
				}
			}
			for k, v := range map[string]string{
				"BR2_PACKAGE_INTERCOM":        "y",
				"BR2_INIT_SYSTEMD":            "y",
				"BR2_aarch64":                 "y",
				"BR2_PACKAGE_CA_CERTIFICATES": "y",
				"BR2_TOOLCHAIN_EXTERNAL_BOOTLIN_AARCH64_GLIBC_STABLE": "y", // glibc for systemd, C++ for openh264
			} {
				if opts[k] != v {
					t.Errorf("%s=%q, want %q", k, opts[k], v)
				}
			}
			overlay := strings.Trim(opts["BR2_ROOTFS_OVERLAY"], `"`)
			rel, ok := strings.CutPrefix(overlay, "$("+external+")/")
			if !ok {
				t.Fatalf("BR2_ROOTFS_OVERLAY %q is not inside this tree", overlay)
			}
			if _, err := os.Stat(filepath.Join(rel, "etc/intercom/intercom.yaml")); err != nil {
				t.Errorf("overlay has no sample config: %v", err)
			}
		})
	}
}

// The overlay's sample config is valid for the current schema, and uses
// the directories the systemd unit gives the service.
func TestOverlayConfig(t *testing.T) {
	path := "board/intercom/rootfs-overlay/etc/intercom/intercom.yaml"
	cfg, err := provisioning.Parse(path, []byte(read(t, path)), "/etc/intercom")
	if err != nil {
		t.Fatalf("sample config does not parse:\n%v", err)
	}
	if cfg.StateDir != "/var/lib/intercom" {
		t.Errorf("state_dir %q, want the unit's StateDirectory /var/lib/intercom", cfg.StateDir)
	}
	if !strings.HasPrefix(cfg.Matrix.PasswordFile, "/etc/intercom/") {
		t.Errorf("password_file %q outside the unit's ConfigurationDirectory", cfg.Matrix.PasswordFile)
	}
}

// compareVersions compares dotted Go versions ("1.26", "1.26.3").
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(as), len(bs)) {
		x, y := 0, 0
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x - y
		}
	}
	return 0
}
