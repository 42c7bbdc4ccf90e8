package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// netnsEnv marks a test process that already runs in its own network
// namespace.
const netnsEnv = "INTERCOM_TEST_NETNS"

// TestMain runs this package's tests in a private network namespace that
// has only the loopback interface (unshare --net), when the machine allows
// it. The end-to-end tests then keep every packet on 127.0.0.1: Chromium
// otherwise also sends from the machine's other addresses, which makes ICE
// slower and noisier than on a real LAN and leaks test traffic off
// loopback (see ../shared/TESTING.md). Where unshare is not permitted the
// tests run in the machine's namespace and say so.
func TestMain(m *testing.M) {
	if os.Getenv(netnsEnv) == "" {
		if code, err := reexecInNetns(); err == nil {
			os.Exit(code)
		} else {
			fmt.Fprintf(os.Stderr, "intercom tests: not in a private network namespace (%v); running in the machine's\n", err)
		}
	}
	os.Exit(m.Run())
}

func reexecInNetns() (int, error) {
	if _, err := exec.LookPath("unshare"); err != nil {
		return 0, err
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return 0, err
	}
	// Probe first, so a refusal is told apart from a failing test.
	if out, err := exec.Command("unshare", "--net", "true").CombinedOutput(); err != nil {
		return 0, fmt.Errorf("unshare --net: %v: %s", err, out)
	}
	args := append([]string{"--net", "sh", "-c", `ip link set lo up && exec "$0" "$@"`, os.Args[0]}, os.Args[1:]...)
	cmd := exec.Command("unshare", args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), nil
	}
	if err != nil {
		return 0, err
	}
	return 0, nil
}
