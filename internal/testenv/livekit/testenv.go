package livekit

import (
	"net"
	"testing"
)

// VethIPEnv names the environment variable that cmd/intercom/e2e's TestMain
// sets inside its private network namespace to the address of the veth
// pair it adds there (10.203.0.1); unset outside it.
const VethIPEnv = "INTERCOM_TEST_VETH_IP"

// SkipWithoutClientAddress skips t when this network namespace has no
// address that the LiveKit Go SDK could gather an ICE candidate on. The
// SDK (pion) skips loopback interfaces and offers no switch to include
// them, so in a namespace with only lo it connects its signalling but
// never its media ("could not connect after timeout"). An SDK client on a
// non-loopback local address reaches an SFU whose NodeIP is 127.0.0.1
// fine: Linux delivers such packets locally, through lo.
func SkipWithoutClientAddress(t testing.TB) {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skipf("livekit: list interface addresses: %v", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return
		}
	}
	t.Skipf("livekit: no non-loopback address for the Go SDK's ICE candidates (pion skips lo); in a test namespace, $%s marks the veth pair that provides one", VethIPEnv)
}
