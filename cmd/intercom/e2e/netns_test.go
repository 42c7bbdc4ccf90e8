package e2e

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/doorbell/intercom/internal/testenv/livekit"
)

// netnsEnv marks a test process that already runs in its own network
// namespace.
const netnsEnv = "INTERCOM_TEST_NETNS"

// vethIPEnv is set, in the private namespace, to a non-loopback address of
// that namespace (vethIP) when TestMain could create the veth pair; tests
// that run pion-based clients without a loopback switch (the LiveKit Go
// SDK, livekit-server's node_ip) use it. Unset: there is only lo.
const vethIPEnv = livekit.VethIPEnv

// The veth pair: both ends stay in the test's namespace, so packets
// between these addresses are delivered locally and never leave it. A
// /24 from 10.0.0.0/8 that a test machine is unlikely to route (the
// namespace has no route to the machine's networks anyway).
const (
	vethName, vethPeer = "lkv0", "lkv1"
	vethIP, vethPeerIP = "10.203.0.1", "10.203.0.2"
)

// TestMain runs this package's tests in a private network namespace that
// has only the loopback interface (unshare --net), when the machine allows
// it. The end-to-end tests then keep every packet on 127.0.0.1: Chromium
// otherwise also sends from the machine's other addresses, which makes ICE
// slower and noisier than on a real LAN and leaks test traffic off
// loopback (see ../shared/TESTING.md). Where unshare is not permitted the
// tests run in the machine's namespace and say so.
//
// Inside the namespace it also adds a veth pair with private addresses
// (vethIPEnv): pion skips loopback interfaces when gathering unless told
// otherwise, and the LiveKit Go SDK cannot be told, so without another
// interface such a client gathers no candidate at all. If the pair cannot
// be made the tests run with lo only and say why.
func TestMain(m *testing.M) {
	// In -short every test here skips: no namespace to make.
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	if os.Getenv(netnsEnv) == "" {
		if code, err := reexecInNetns(); err == nil {
			os.Exit(code)
		} else {
			fmt.Fprintf(os.Stderr, "intercom e2e tests: not in a private network namespace (%v); running in the machine's\n", err)
		}
	} else if os.Getenv(vethIPEnv) == "" {
		if err := addVeth(); err != nil {
			fmt.Fprintf(os.Stderr, "intercom e2e tests: no veth pair in the test namespace (%v); only lo, so LiveKit SDK clients cannot connect\n", err)
		} else {
			// Set before any test runs, so every child process (the
			// intercom, Chromium, livekit-server) inherits it too.
			os.Setenv(vethIPEnv, vethIP)
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

// addVeth creates the veth pair in the current (private) namespace and
// brings it up with IPv4 only: IPv6 would add link-local fe80:: addresses
// that are tentative for a second (duplicate address detection) and give
// Chromium and pion more candidates to try.
func addVeth() error {
	ip := func(args ...string) error {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %v: %w: %s", args, err, out)
		}
		return nil
	}
	if err := ip("link", "add", vethName, "type", "veth", "peer", "name", vethPeer); err != nil {
		return err
	}
	for _, l := range []struct{ dev, addr string }{{vethName, vethIP}, {vethPeer, vethPeerIP}} {
		// Absent when the kernel has no IPv6; then there is nothing to turn off.
		_ = os.WriteFile(filepath.Join("/proc/sys/net/ipv6/conf", l.dev, "disable_ipv6"), []byte("1"), 0o644)
		if err := ip("addr", "add", l.addr+"/24", "dev", l.dev); err != nil {
			return err
		}
		if err := ip("link", "set", l.dev, "up"); err != nil {
			return err
		}
	}
	return nil
}

// setVeth takes the veth pair's addresses away or gives them back: a
// network blip for whatever runs over them (media on the pair's
// addresses), while lo, and Dendrite on it, stay up. Taking the links
// down would not do: both ends are in this namespace, and Linux keeps
// delivering to the addresses of a link that is down (their local
// routes stay, through lo). Without its addresses nothing reaches the
// pair, sends to it fail, and pion gathers nothing on it; given back,
// sockets still bound to them work again.
func setVeth(up bool) error {
	op := "del"
	if up {
		op = "add"
	}
	for _, l := range []struct{ dev, addr string }{{vethName, vethIP}, {vethPeer, vethPeerIP}} {
		if out, err := exec.Command("ip", "addr", op, l.addr+"/24", "dev", l.dev).CombinedOutput(); err != nil {
			return fmt.Errorf("ip addr %s %s dev %s: %w: %s", op, l.addr, l.dev, err, out)
		}
	}
	return nil
}
