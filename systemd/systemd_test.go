package systemd

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// unitKeys parses a unit file into key → values (a key may repeat).
func unitKeys(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: not key=value: %q", path, line)
			}
			keys[section+"."+k] = append(keys[section+"."+k], v)
		}
	}
	return keys
}

// TestUnitVerifies runs systemd-analyze verify on the unit, with the
// binary's path pointed at an executable that exists here. Any message
// fails the test: verify exits 0 on unknown keys, only warning about them.
func TestUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian package systemd; scripts/deps.sh installs it): unit not verified")
	}
	unit, err := os.ReadFile("intercom.service")
	if err != nil {
		t.Fatal(err)
	}
	exe, err := exec.LookPath("true")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "intercom.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/bin/intercom", exe)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestUnitShape checks what the issue asks of the unit, key by key.
func TestUnitShape(t *testing.T) {
	k := unitKeys(t, "intercom.service")
	want := map[string]string{
		"Service.Type":                   "notify",
		"Service.Restart":                "always",
		"Service.NoNewPrivileges":        "yes",
		"Service.ProtectSystem":          "strict",
		"Service.ProtectHome":            "yes",
		"Service.PrivateTmp":             "yes",
		"Service.StateDirectory":         "intercom",
		"Service.ConfigurationDirectory": "intercom",
		"Service.User":                   "intercom",
		"Service.SupplementaryGroups":    "gpio video audio",
		"Service.DevicePolicy":           "closed",
		"Unit.StartLimitIntervalSec":     "0",
	}
	for key, v := range want {
		if got := k[key]; len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q", key, got, v)
		}
	}
	for _, key := range []string{"Service.WatchdogSec", "Service.TimeoutStopSec", "Service.ExecReload"} {
		if len(k[key]) != 1 {
			t.Errorf("%s missing", key)
		}
	}
	if got := k["Service.ExecStopPost"]; len(got) != 1 || !strings.Contains(got[0], "intercom relay-off --config /etc/intercom/intercom.yaml") {
		t.Errorf("ExecStopPost = %q, want the relay-off subcommand", got)
	}
	if got := k["Service.ExecStart"]; len(got) != 1 || got[0] != "/usr/bin/intercom run --config /etc/intercom/intercom.yaml" {
		t.Errorf("ExecStart = %q", got)
	}
	// Only GPIO chips, video and sound devices.
	allowed := k["Service.DeviceAllow"]
	slices.Sort(allowed)
	if want := []string{"char-alsa rw", "char-gpiochip rw", "char-video4linux rw"}; !slices.Equal(allowed, want) {
		t.Errorf("DeviceAllow = %q, want %q", allowed, want)
	}
}

// TestSysusersAndTmpfiles applies the sysusers.d and tmpfiles.d entries to
// an empty root directory with systemd's own tools and checks the result.
func TestSysusersAndTmpfiles(t *testing.T) {
	sysusers, err1 := exec.LookPath("systemd-sysusers")
	tmpfiles, err2 := exec.LookPath("systemd-tmpfiles")
	if err1 != nil || err2 != nil {
		t.Skip("systemd-sysusers or systemd-tmpfiles not installed (Debian package systemd)")
	}
	root := t.TempDir()
	// Absolute: the tools read relative paths below --root.
	users, _ := filepath.Abs("intercom.sysusers")
	files, _ := filepath.Abs("intercom.tmpfiles")
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(sysusers, "--root="+root, users).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	group, err := os.ReadFile(filepath.Join(root, "etc/group"))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"gpio", "video", "audio"} {
		if !regexp.MustCompile(`(?m)^` + g + `:x:\d+:(.*,)?intercom(,.*)?$`).Match(group) {
			t.Errorf("intercom is not in group %s:\n%s", g, group)
		}
	}
	passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^intercom:x:\d+:\d+:[^:]*:/var/lib/intercom:/usr/sbin/nologin$`).Match(passwd) {
		t.Errorf("no intercom system user:\n%s", passwd)
	}
	if os.Geteuid() != 0 {
		t.Skip("tmpfiles.d entries not applied: systemd-tmpfiles must run as root to set owners")
	}
	if out, err := exec.Command(tmpfiles, "--root="+root, "--create", files).CombinedOutput(); err != nil {
		t.Fatalf("systemd-tmpfiles: %v\n%s", err, out)
	}
	for path, mode := range map[string]os.FileMode{"etc/intercom": 0o750, "var/lib/intercom": 0o700} {
		st, err := os.Stat(filepath.Join(root, path))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("/%s has mode %o, want %o", path, st.Mode().Perm(), mode)
		}
	}
}

// TestUdevRule keeps the GPIO rule's group the one the unit joins.
func TestUdevRule(t *testing.T) {
	rule, err := os.ReadFile("60-intercom-gpio.rules")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(rule), `KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"`) {
		t.Fatalf("rule does not give the GPIO chips to group gpio:\n%s", rule)
	}
}
