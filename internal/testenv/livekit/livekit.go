// Package livekit runs a real LiveKit SFU, livekit-server v1.13.5, for the
// MatrixRTC integration and end-to-end tests (Element Call and Element X
// send their media through LiveKit).
//
// The server gets a generated configuration (not --dev): signalling on
// 127.0.0.1 (and on NodeIP when that differs), one UDP port for all media,
// ICE over TCP as the fallback, a random API key and secret, no Redis, no
// TURN, no STUN, and host candidates rewritten to NodeIP. Its output goes to
// livekit.log in a temporary directory.
//
// pion, which both livekit-server and the Go client SDK are built on, skips
// loopback interfaces when it gathers candidates. The server is told to
// include them (rtc.enable_loopback_candidate), so NodeIP 127.0.0.1 works on
// its side; the Go SDK has no such switch, so an SDK client needs some
// non-loopback address to send from (see TestSFUForwardsMedia and
// cmd/intercom/e2e's TestMain, which gives its network namespace a veth pair).
//
// The binary is built from the Go module proxy the first time (minutes) and
// cached; see Build.
package livekit

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"

	"github.com/doorbell/intercom/internal/testenv/logtail"
)

// Options configure Start. The zero value is a working server on loopback.
type Options struct {
	// NodeIP is the address the SFU advertises in ICE candidates (default
	// 127.0.0.1). Media is received on this address only.
	NodeIP string
	// Logger, if set, also receives the server's log as it is written.
	Logger io.Writer
	// Bin is the livekit-server binary. Empty: $INTERCOM_LIVEKIT_BIN, else
	// the cached build (see Build).
	Bin string
	// StopGrace is how long Stop waits after SIGTERM before SIGKILL.
	// Default 5 s.
	StopGrace time.Duration
}

// Server is a running (or stopped) livekit-server.
type Server struct {
	URL       string // ws://127.0.0.1:PORT, the signalling URL clients connect to
	APIKey    string
	APISecret string
	NodeIP    string // the address in the SFU's ICE candidates
	HTTPPort  int    // signalling and Twirp API, on 127.0.0.1 (and NodeIP)
	UDPPort   int    // all media over UDP, on NodeIP
	TCPPort   int    // ICE over TCP, on every address
	Dir       string // temporary directory: config and log; removed by Stop

	bin       string
	logger    io.Writer
	stopGrace time.Duration
	http      *http.Client

	mu      sync.Mutex
	proc    *process // nil once stopped
	stopped bool
	lastLog []byte // the log's tail, kept by Stop before Dir goes
}

// startTimeout bounds the wait for the HTTP port when the caller's context
// has no deadline. A start takes well under a second.
const startTimeout = 60 * time.Second

// Start builds livekit-server if needed, writes its configuration and
// starts it, returning once its HTTP port answers. On error no process is
// left running.
func Start(ctx context.Context, opts Options) (*Server, error) {
	nodeIP := opts.NodeIP
	if nodeIP == "" {
		nodeIP = "127.0.0.1"
	}
	if net.ParseIP(nodeIP) == nil {
		return nil, fmt.Errorf("start livekit: node IP %q is not an IP address", nodeIP)
	}
	bin := opts.Bin
	if bin == "" {
		var err error
		if bin, err = Build(ctx); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "livekit-")
	if err != nil {
		return nil, fmt.Errorf("start livekit: create directory: %w", err)
	}
	s := &Server{
		APIKey:    "API" + randomHex(6),
		APISecret: randomHex(24), // 48 characters; the server wants at least 32
		NodeIP:    nodeIP,
		Dir:       dir,
		bin:       bin,
		logger:    opts.Logger,
		stopGrace: opts.StopGrace,
		// Loopback only, never through a proxy from the environment.
		http: &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 5 * time.Second},
	}
	if s.stopGrace <= 0 {
		s.stopGrace = 5 * time.Second
	}
	// Free ports found here can be taken by someone else before the server
	// binds them; try again with others.
	for range 3 {
		if err = s.pickPorts(); err != nil {
			break
		}
		if err = s.start(ctx); !errors.Is(err, errAddrInUse) {
			break
		}
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// StartT starts a server for the test t and stops it in t.Cleanup (the test
// may pass, fail or panic), printing the tail of its log if the test
// failed. With -short the test is skipped: it needs the real SFU, whose
// first build takes minutes.
func StartT(t testing.TB, opts Options) *Server {
	t.Helper()
	if testing.Short() {
		t.Skip("livekit: needs a real livekit-server (built from the module proxy); skipped with -short")
	}
	s, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatalf("start livekit-server: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop livekit-server: %v", err)
		}
		if t.Failed() {
			t.Logf("livekit-server log, last lines:\n%s", s.LogTail(60))
		}
	})
	return s
}

// Token returns a join token for room with publish and subscribe grants,
// valid for ttl (default one hour), signed with the server's key.
func (s *Server) Token(identity, room string, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		ttl = time.Hour
	}
	yes := true
	tok, err := auth.NewAccessToken(s.APIKey, s.APISecret).
		SetIdentity(identity).
		SetValidFor(ttl).
		SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: room, CanPublish: &yes, CanSubscribe: &yes, CanPublishData: &yes}).
		ToJWT()
	if err != nil {
		return "", fmt.Errorf("livekit token for %q in %q: %w", identity, room, err)
	}
	return tok, nil
}

// Stop ends the server: SIGTERM, a second SIGTERM 100 ms later (after the
// first the server waits for every participant to leave; the second makes
// it close their rooms, which tells the clients, and stop anyway), then
// SIGKILL after StopGrace. A stop takes about a second: the server's own
// shutdown. It waits for the process to exit
// and removes the directory; LogTail keeps working. It returns an error
// wrapping ErrExited if the server had died by itself. Stop is idempotent.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	var err error
	if p := s.proc; p != nil {
		s.proc = nil
		err = p.halt(s.stopGrace)
	}
	s.http.CloseIdleConnections()
	s.lastLog = logtail.Read(s.LogPath())
	if rmErr := os.RemoveAll(s.Dir); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("remove livekit directory: %w", rmErr))
	}
	return err
}

// Kill ends the server at once with SIGKILL, as a crash or a power cut
// would: clients get no goodbye. Stop is still needed afterwards to clean
// up; it then reports no error.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.proc; p != nil {
		p.kill()
		s.proc = nil
	}
}

// Exited is closed when the server process exits, whether by Stop, Kill or
// by itself.
func (s *Server) Exited() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return s.proc.done
}

// LogPath is the file that receives the server's output (gone after Stop).
func (s *Server) LogPath() string { return filepath.Join(s.Dir, logFile) }

// LogTail returns up to the last n lines of the server's log.
func (s *Server) LogTail(n int) string {
	s.mu.Lock()
	stopped, last := s.stopped, s.lastLog
	s.mu.Unlock()
	if stopped {
		return logtail.LastLines(last, n)
	}
	return logtail.LastLines(logtail.Read(s.LogPath()), n)
}

// pickPorts chooses free ports: HTTP on 127.0.0.1, ICE/TCP on every address
// (where the server listens), UDP on NodeIP.
func (s *Server) pickPorts() error {
	var err error
	if s.HTTPPort, err = freeTCPPort("127.0.0.1"); err != nil {
		return err
	}
	if s.TCPPort, err = freeTCPPort(""); err != nil {
		return err
	}
	if s.UDPPort, err = freeUDPPort(s.NodeIP); err != nil {
		return err
	}
	return nil
}

// start launches the server on the chosen ports and waits until it answers.
func (s *Server) start(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	cfgPath, err := writeConfig(newConfig(s.HTTPPort, s.TCPPort, s.UDPPort, s.NodeIP, s.APIKey, s.APISecret), s.Dir)
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(s.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open livekit log: %w", err)
	}
	defer logf.Close() // the child holds its own descriptor
	logStart, err := logf.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("open livekit log: %w", err)
	}
	var out io.Writer = logf
	if s.logger != nil {
		// exec copies through a pipe then; Wait waits for the copy.
		out = io.MultiWriter(logf, s.logger)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.HTTPPort))
	p, err := launch(s.bin, []string{"--config", cfgPath}, s.Dir, out)
	if err != nil {
		return fmt.Errorf("start livekit-server: %w", err)
	}
	if err := s.waitReady(ctx, p, "http://"+addr+"/"); err != nil {
		p.kill()
		log := logtail.ReadFrom(s.LogPath(), logStart)
		if bytes.Contains(log, []byte("address already in use")) {
			err = fmt.Errorf("%w: %w", errAddrInUse, err)
		}
		return fmt.Errorf("start livekit-server on %s: %w\n--- %s:\n%s", addr, err, s.LogPath(), logtail.LastLines(log, 40))
	}
	s.proc = p
	s.URL = "ws://" + addr
	return nil
}

// waitReady polls the server's health endpoint (GET / answers "OK") until
// it answers 200, the process exits or ctx ends. The HTTP server starts
// after the RTC listeners, so media can flow once it answers.
func (s *Server) waitReady(ctx context.Context, p *process, url string) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", url, err)
		}
		if resp, err := s.http.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("livekit-server exited before answering: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", url, ctx.Err())
		case <-tick.C:
		}
	}
}

// process is one run of livekit-server, owned by the goroutine that
// started it.
type process struct {
	pid  int
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // the result of Wait; read only after done is closed
}

// launch starts bin in dir with its output to out. The goroutine that
// starts the process keeps its OS thread locked until the process exits:
// the parent-death signal (see sysProcAttr) fires when that thread ends,
// and the Go runtime only ends threads that are locked when their goroutine
// returns.
func launch(bin string, args []string, dir string, out io.Writer) (*process, error) {
	p := &process{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		cmd.Stdout = out
		cmd.Stderr = out
		cmd.SysProcAttr = sysProcAttr()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

// halt stops p as Stop describes.
func (p *process) halt(grace time.Duration) error {
	select {
	case <-p.done:
		return fmt.Errorf("%w: %v", ErrExited, p.err)
	default:
	}
	_ = syscall.Kill(-p.pid, syscall.SIGTERM)
	// Not at once: the server's signal channel holds one signal, and a
	// second that comes before the first was read is lost.
	force := time.NewTimer(100 * time.Millisecond)
	defer force.Stop()
	kill := time.NewTimer(grace)
	defer kill.Stop()
	for {
		select {
		case <-p.done:
			return nil
		case <-force.C:
			_ = syscall.Kill(-p.pid, syscall.SIGTERM)
		case <-kill.C:
			p.kill()
			return nil
		}
	}
}

// kill ends p's process group at once and waits for p to exit.
func (p *process) kill() {
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	<-p.done
}

// freeTCPPort asks the kernel for a free TCP port on host ("" for every
// address).
func freeTCPPort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find free tcp port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freeUDPPort asks the kernel for a free UDP port on host.
func freeUDPPort(host string) (int, error) {
	c, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find free udp port on %s: %w", host, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return hex.EncodeToString(b)
}
