package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// coturn is a real TURN server (Debian's coturn, the `turnserver` binary)
// on 127.0.0.1, started by a test with its own configuration file and
// stopped by its PID. It authenticates with the TURN REST scheme
// (use-auth-secret): a user name "expiry:user" and the HMAC of it under
// the secret it shares with the homeserver (Dendrite's
// turn_shared_secret), so Dendrite's /voip/turnServer credentials work.
type coturn struct {
	t      testing.TB
	bin    string
	dir    string
	Port   int
	Secret string
	Realm  string
	log    *lockedBuffer
	cmd    *exec.Cmd
	done   chan struct{}
}

// coturnReadyTimeout bounds the wait for the first STUN answer; coturn
// answers within ~50 ms of its start.
const coturnReadyTimeout = 10 * time.Second

// startCoturn starts coturn on a free UDP port of 127.0.0.1 and stops it
// in t.Cleanup. The test is skipped where coturn is not installed
// (scripts/deps.sh installs it).
func startCoturn(t testing.TB) *coturn {
	t.Helper()
	bin, err := exec.LookPath("turnserver")
	if err != nil {
		t.Skip("coturn (turnserver) not installed; scripts/deps.sh installs it")
	}
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	c := &coturn{t: t, bin: bin, dir: t.TempDir(), Port: freeUDPPort(t), Secret: hex.EncodeToString(secret),
		Realm: "intercom.test", log: &lockedBuffer{}}
	// Every option is spelt out so that no /etc/turnserver.conf default
	// leaks in: plain UDP only (no TLS, DTLS or TCP listeners), no CLI, no
	// database beside our temporary one, and, because the relayed peers
	// of these tests are on 127.0.0.1 too, allow-loopback-peers (coturn
	// refuses loopback peers by default, which would make every
	// CreatePermission to a 127.0.0.1 peer fail with 403).
	conf := fmt.Sprintf(`listening-ip=127.0.0.1
relay-ip=127.0.0.1
listening-port=%d
no-tcp
no-tls
no-dtls
no-tcp-relay
no-cli
no-rfc5780
no-stun-backward-compatibility
no-software-attribute
use-auth-secret
static-auth-secret=%s
realm=%s
fingerprint
allow-loopback-peers
no-multicast-peers
userdb=%s
pidfile=%s
log-file=stdout
simple-log
verbose
`, c.Port, c.Secret, c.Realm, filepath.Join(c.dir, "turndb"), filepath.Join(c.dir, "turnserver.pid"))
	if err := os.WriteFile(filepath.Join(c.dir, "turnserver.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	c.start()
	t.Cleanup(func() {
		c.stop()
		if t.Failed() || os.Getenv("INTERCOM_E2E_LOG") != "" {
			t.Logf("coturn log (last 60 lines):\n%s", lastLines(c.log.String(), 60))
		}
	})
	return c
}

// URI is the TURN URI to hand out (RFC 7065), UDP only.
func (c *coturn) URI() string { return fmt.Sprintf("turn:127.0.0.1:%d?transport=udp", c.Port) }

// start runs turnserver with the configuration file and waits until it
// answers a STUN Binding request.
func (c *coturn) start() {
	c.t.Helper()
	c.cmd = exec.Command(c.bin, "-c", filepath.Join(c.dir, "turnserver.conf"))
	c.cmd.Dir = c.dir
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		c.t.Fatalf("start coturn: %v", err)
	}
	c.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(c.cmd, c.done)
	deadline := time.Now().Add(coturnReadyTimeout)
	for !stunAnswers(c.Port) {
		select {
		case <-c.done:
			c.t.Fatalf("coturn exited at start: %v\n%s", c.cmd.ProcessState, lastLines(c.log.String(), 40))
		default:
		}
		if time.Now().After(deadline) {
			c.stop()
			c.t.Fatalf("coturn did not answer STUN within %v\n%s", coturnReadyTimeout, lastLines(c.log.String(), 40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends the coturn this test started, by its PID: SIGTERM, then
// SIGKILL after 5 s. Every allocation on it is gone afterwards.
func (c *coturn) stop() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// restart stops coturn and starts it again on the same port with the same
// secret: clients must allocate afresh, as after a TURN server's restart.
func (c *coturn) restart() {
	c.t.Helper()
	c.stop()
	c.start()
}

// allocations returns coturn's log lines of successful allocations whose
// user name contains user (the REST scheme's "expiry:@user:server").
func (c *coturn) allocations(user string) []string {
	var out []string
	for _, line := range strings.Split(c.log.String(), "\n") {
		if strings.Contains(line, "ALLOCATE processed, success") && strings.Contains(line, user) {
			out = append(out, line)
		}
	}
	return out
}

// freeUDPPort returns a UDP port of 127.0.0.1 that was free a moment ago.
func freeUDPPort(t testing.TB) int {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

// stunAnswers sends one STUN Binding request (RFC 8489 section 5: type
// 0x0001, no attributes, the magic cookie, a random transaction ID) to
// 127.0.0.1:port and reports whether a Binding success response with that
// transaction ID comes back within 200 ms.
func stunAnswers(port int) bool {
	conn, err := net.Dial("udp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	defer conn.Close()
	req := make([]byte, 20)
	binary.BigEndian.PutUint16(req[0:], 0x0001)
	binary.BigEndian.PutUint32(req[4:], 0x2112A442)
	_, _ = rand.Read(req[8:20])
	if _, err := conn.Write(req); err != nil {
		return false
	}
	_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 1500)
	n, err := conn.Read(buf)
	return err == nil && n >= 20 && binary.BigEndian.Uint16(buf[0:]) == 0x0101 && bytes.Equal(buf[8:20], req[8:20])
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
