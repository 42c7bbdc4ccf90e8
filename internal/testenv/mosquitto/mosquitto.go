// Package mosquitto runs a real MQTT broker for tests: Debian's mosquitto
// (scripts/deps.sh installs it), started on 127.0.0.1 with a
// configuration file of the test's own and stopped by its PID. It can
// require a user name and password, and serve MQTT over TLS with a
// certificate from a CA the harness makes for the test.
package mosquitto

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options say how the broker is set up.
type Options struct {
	// Users, when not empty, are the only accounts the broker accepts
	// (user name → password); anonymous clients are refused.
	Users map[string]string
	// ACL, when not empty, is the broker's acl_file: which user may
	// read and write which topics (mosquitto.conf(5), acl_file).
	ACL string
	// TLS adds a second listener speaking MQTT over TLS (Broker.TLSURL)
	// with a server certificate for 127.0.0.1 signed by a CA made for
	// this broker (Broker.CAFile).
	TLS bool
}

// Broker is one mosquitto process of a test.
type Broker struct {
	// URL is the plain listener, mqtt://127.0.0.1:port; TLSURL the TLS
	// one (mqtts://), empty without Options.TLS.
	URL, TLSURL string
	// CAFile is the PEM file of the CA that signed the TLS listener's
	// certificate.
	CAFile string

	t    testing.TB
	bin  string
	dir  string
	port int
	tls  int
	log  *lockedBuffer
	cmd  *exec.Cmd
	done chan struct{}
}

// readyTimeout bounds the wait for the listeners; mosquitto accepts
// connections within a few milliseconds of its start.
const readyTimeout = 10 * time.Second

// Start runs mosquitto until the test ends. The test is skipped where
// mosquitto is not installed.
func Start(t testing.TB, opts Options) *Broker {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		t.Skip("mosquitto not installed; scripts/deps.sh installs it")
	}
	b := &Broker{t: t, bin: bin, dir: t.TempDir(), port: freePort(t), log: &lockedBuffer{}}
	b.URL = fmt.Sprintf("mqtt://127.0.0.1:%d", b.port)
	// Every option is spelt out so no /etc/mosquitto default leaks in:
	// loopback listeners only, no persistence (a restart forgets every
	// retained message, the hardest case for a client), and no dropping
	// of privileges when the tests run as root (the files are the test's,
	// mode 0600).
	var conf strings.Builder
	conf.WriteString("per_listener_settings false\npersistence false\nlog_dest stdout\nlog_type all\nlog_timestamp_format %H:%M:%S\n")
	if os.Getuid() == 0 {
		conf.WriteString("user root\n")
	}
	if len(opts.Users) > 0 {
		pw := filepath.Join(b.dir, "passwd")
		if err := os.WriteFile(pw, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		passwd, err := exec.LookPath("mosquitto_passwd")
		if err != nil {
			t.Skip("mosquitto_passwd not installed; scripts/deps.sh installs mosquitto")
		}
		for u, p := range opts.Users {
			// mosquitto_passwd hashes the password (PBKDF2) into the file.
			if out, err := exec.Command(passwd, "-b", pw, u, p).CombinedOutput(); err != nil {
				t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
			}
		}
		fmt.Fprintf(&conf, "allow_anonymous false\npassword_file %s\n", pw)
	} else {
		conf.WriteString("allow_anonymous true\n")
	}
	if opts.ACL != "" {
		acl := filepath.Join(b.dir, "acl")
		if err := os.WriteFile(acl, []byte(opts.ACL), 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&conf, "acl_file %s\n", acl)
	}
	fmt.Fprintf(&conf, "listener %d 127.0.0.1\n", b.port)
	if opts.TLS {
		b.tls = freePort(t)
		b.TLSURL = fmt.Sprintf("mqtts://127.0.0.1:%d", b.tls)
		ca, cert, key := b.certificates()
		b.CAFile = ca
		fmt.Fprintf(&conf, "listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n", b.tls, ca, cert, key)
	}
	if err := os.WriteFile(filepath.Join(b.dir, "mosquitto.conf"), []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	b.start()
	t.Cleanup(func() {
		b.Stop()
		if t.Failed() || os.Getenv("INTERCOM_E2E_LOG") != "" {
			t.Logf("mosquitto log (last 60 lines):\n%s", lastLines(b.log.String(), 60))
		}
	})
	return b
}

// start runs mosquitto with the configuration file and waits until every
// listener accepts connections.
func (b *Broker) start() {
	b.t.Helper()
	b.cmd = exec.Command(b.bin, "-c", filepath.Join(b.dir, "mosquitto.conf"))
	b.cmd.Dir = b.dir
	b.cmd.Stdout, b.cmd.Stderr = b.log, b.log
	if err := b.cmd.Start(); err != nil {
		b.t.Fatalf("start mosquitto: %v", err)
	}
	b.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(b.cmd, b.done)
	deadline := time.Now().Add(readyTimeout)
	for _, port := range []int{b.port, b.tls} {
		if port == 0 {
			continue
		}
		for !accepts(port) {
			select {
			case <-b.done:
				b.t.Fatalf("mosquitto exited at start: %v\n%s", b.cmd.ProcessState, lastLines(b.log.String(), 40))
			default:
			}
			if time.Now().After(deadline) {
				b.Stop()
				b.t.Fatalf("mosquitto not listening on %d within %v\n%s", port, readyTimeout, lastLines(b.log.String(), 40))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// Stop ends the broker by its PID (SIGTERM, then SIGKILL after 5 s).
// Clients see their connections close; a stopped broker can be started
// again with Restart.
func (b *Broker) Stop() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	select {
	case <-b.done:
		return
	default:
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(5 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}

// Kill ends the broker at once (SIGKILL), as a crash or a power cut
// would: nothing is said to its clients.
func (b *Broker) Kill() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	_ = b.cmd.Process.Kill()
	<-b.done
}

// Restart starts a stopped broker again on the same ports. Without
// persistence it has forgotten every retained message and session.
func (b *Broker) Restart() {
	b.t.Helper()
	b.Stop()
	b.start()
}

// Log is what mosquitto has logged so far.
func (b *Broker) Log() string { return b.log.String() }

// certificates writes a CA and a server certificate for 127.0.0.1 signed
// by it, and returns the paths of the CA, the certificate and its key.
func (b *Broker) certificates() (caFile, certFile, keyFile string) {
	b.t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "intercom test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		b.t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		b.t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		b.t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		b.t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(b.dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			b.t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", der), write("server.key", "EC PRIVATE KEY", keyDER)
}

// accepts reports whether 127.0.0.1:port takes a TCP connection.
func accepts(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// freePort is a TCP port of 127.0.0.1 free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// lockedBuffer collects the broker's output for the test's log.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
