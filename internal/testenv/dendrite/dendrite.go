// Package dendrite runs a real Matrix homeserver, Dendrite v0.15.2, for the
// integration and end-to-end tests and for `make demo`.
//
// The homeserver listens on 127.0.0.1 only, keeps every component in its own
// SQLite database inside one data directory, has federation, rate limiting
// and open registration off, and accepts shared-secret registration, so a
// test can make users without touching anything else. Its output goes to
// dendrite.log in the data directory.
//
// The binary is built from the Go module proxy the first time (minutes) and
// cached; see Build.
package dendrite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

	"github.com/doorbell/intercom/internal/testenv/logtail"
)

// Options configure Start. The zero value is a working homeserver.
type Options struct {
	// Dir is the data directory (config, key, databases, log). It is created
	// if needed and kept by Stop. Empty: a new temporary directory (on
	// /dev/shm when that is a tmpfs) that Stop removes, after which the
	// Server cannot be restarted.
	Dir string

	// Port on 127.0.0.1; 0 picks a free one. Restart keeps the port.
	Port int

	// ServerName is the domain of user and room IDs. Default "localhost":
	// IDs stay the same whatever the port, and federation is off, so the
	// name need not resolve to this server.
	ServerName string

	// BinDir holds the dendrite binary. Empty: $INTERCOM_DENDRITE_BIN_DIR,
	// else the cached build (see Build).
	BinDir string

	// TURN, if set, makes /_matrix/client/v3/voip/turnServer hand out
	// credentials for these URIs.
	TURN *TURN

	// OpenIDUserInfo serves GET /_matrix/federation/v1/openid/userinfo,
	// which a LiveKit JWT service (internal/testenv/lkjwt) calls to check
	// Matrix OpenID tokens. Dendrite mounts it only with federation enabled;
	// the server still listens on 127.0.0.1 only and, named "localhost", has
	// nobody to federate with.
	OpenIDUserInfo bool

	// StopGrace is how long Stop waits after SIGTERM before SIGKILL.
	// Default 10 s.
	StopGrace time.Duration

	// Logger receives the harness's own progress (build, start, stop), never
	// Dendrite's log. Nil discards it.
	Logger *slog.Logger
}

// TURN is the homeserver's TURN configuration: Dendrite derives time-limited
// credentials from a secret shared with the TURN server (coturn's
// use-auth-secret / static-auth-secret).
type TURN struct {
	URIs         []string // e.g. "turn:127.0.0.1:3478?transport=udp"
	SharedSecret string
	UserLifetime time.Duration // default 1 h
}

// Server is a running (or stopped) Dendrite.
type Server struct {
	BaseURL    string // "http://127.0.0.1:PORT", no trailing slash
	ServerName string // domain part of user IDs, e.g. "localhost"
	Dir        string // data directory, absolute
	Port       int

	bin       string
	secret    string   // registration_shared_secret
	ownDir    bool     // Dir was made by Start; Stop removes it
	dirLock   *os.File // held while an own Dir on tmpfs exists (see fastTempDir)
	stopGrace time.Duration
	log       *slog.Logger
	http      *http.Client

	mu   sync.Mutex
	proc *process // nil while not running
	gone bool     // Dir removed by Stop
}

// startTimeout bounds the wait for /_matrix/client/versions when the caller's
// context has no deadline. A start takes well under a second.
const startTimeout = 60 * time.Second

// Start builds Dendrite if needed, writes its configuration into opts.Dir and
// starts it, returning once /_matrix/client/versions answers. On error no
// process is left running.
func Start(ctx context.Context, opts Options) (*Server, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	bin := opts.BinDir
	if bin == "" {
		t0 := time.Now()
		var err error
		if bin, err = Build(ctx); err != nil {
			return nil, err
		}
		logger.Debug("dendrite binary ready", "dir", bin, "took", time.Since(t0))
	}

	s := &Server{
		ServerName: opts.ServerName,
		Port:       opts.Port,
		bin:        filepath.Join(bin, "dendrite"),
		secret:     randomSecret(),
		stopGrace:  opts.StopGrace,
		log:        logger,
		// Loopback only, never through a proxy from the environment.
		http: &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 30 * time.Second},
	}
	if s.ServerName == "" {
		s.ServerName = "localhost"
	}
	if s.stopGrace <= 0 {
		s.stopGrace = 10 * time.Second
	}
	if opts.Dir == "" {
		dir, lock := fastTempDir()
		s.dirLock = lock
		if dir == "" {
			var err error
			if dir, err = os.MkdirTemp("", "dendrite-"); err != nil {
				return nil, fmt.Errorf("create data directory: %w", err)
			}
		}
		s.Dir, s.ownDir = dir, true
	} else {
		dir, err := filepath.Abs(opts.Dir)
		if err != nil {
			return nil, fmt.Errorf("resolve data directory: %w", err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create data directory: %w", err)
		}
		s.Dir = dir
	}
	fail := func(err error) (*Server, error) {
		if s.ownDir {
			_ = os.RemoveAll(s.Dir)
			s.closeDirLock()
		}
		return nil, err
	}
	c := newConfig(s.Dir, s.ServerName, s.secret, opts.TURN)
	c.Global.DisableFederation = !opts.OpenIDUserInfo
	if err := writeConfig(c, s.Dir); err != nil {
		return fail(err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if opts.Port != 0 {
		if err := s.startLocked(ctx); err != nil {
			return fail(err)
		}
		return s, nil
	}
	// A free port found here can be taken by someone else before Dendrite
	// binds it; try again with another.
	var err error
	for range 3 {
		if s.Port, err = freePort(); err != nil {
			return fail(err)
		}
		if err = s.startLocked(ctx); !errors.Is(err, errAddrInUse) {
			break
		}
	}
	if err != nil {
		return fail(err)
	}
	return s, nil
}

// StartT starts a homeserver for the test t with a fresh data directory
// (see StartTWith), stops it in t.Cleanup (the test may pass, fail or
// panic), and prints the tail of its log if the test failed. With -short the
// test is skipped: it needs the real homeserver.
func StartT(t testing.TB) *Server {
	t.Helper()
	return StartTWith(t, Options{})
}

// StartTWith is StartT with options. An empty opts.Dir becomes a directory
// removed after the test (on /dev/shm when that is a tmpfs, which makes a
// fresh start some 30 times faster; else t.TempDir), and a nil opts.Logger
// logs through t.Log.
func StartTWith(t testing.TB, opts Options) *Server {
	t.Helper()
	if testing.Short() {
		t.Skip("dendrite: needs a real homeserver; skipped with -short")
	}
	if opts.Dir == "" {
		// Prefer tmpfs (see fastTempDir). This cleanup is registered before
		// the one that stops the server, so it runs after it.
		if dir, lock := fastTempDir(); dir != "" {
			t.Cleanup(func() {
				_ = os.RemoveAll(dir)
				lock.Close()
			})
			opts.Dir = dir
		} else {
			opts.Dir = t.TempDir()
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(tWriter{t}, nil))
	}
	s, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatalf("start dendrite: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dendrite log %s, last lines:\n%s", s.LogPath(), s.LogTail(80))
		}
		if err := s.Stop(); err != nil {
			t.Errorf("stop dendrite: %v", err)
		}
	})
	return s
}

// Stop ends Dendrite: SIGTERM to its process group, then SIGKILL if it is
// still running after the grace period. It waits for the process to exit.
// It returns an error wrapping ErrExited if Dendrite had already died by
// itself. Stop is idempotent; a Server with a caller-given Dir can be brought
// back with Restart.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.haltLocked()
	s.http.CloseIdleConnections()
	if s.ownDir && !s.gone {
		s.gone = true
		if rmErr := os.RemoveAll(s.Dir); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove data directory: %w", rmErr))
		}
		s.closeDirLock()
	}
	return err
}

// Restart stops Dendrite (if running) and starts it again with the same data
// directory, port, server name and shared secret, returning once it answers.
// It returns an error wrapping ErrExited, without restarting, if Dendrite had
// died by itself.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gone {
		return ErrStopped
	}
	if err := s.haltLocked(); err != nil {
		return err
	}
	s.http.CloseIdleConnections()
	return s.startLocked(ctx)
}

// Exited is closed when the current Dendrite process exits, whether by Stop
// or by itself. After Restart it refers to the new process. If Dendrite is
// not running it returns a closed channel.
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

// LogPath is the file that receives Dendrite's output.
func (s *Server) LogPath() string { return filepath.Join(s.Dir, logFile) }

// LogTail returns up to the last n lines of Dendrite's log.
func (s *Server) LogTail(n int) string {
	return logtail.Tail(s.LogPath(), n)
}

func (s *Server) closeDirLock() {
	if s.dirLock != nil {
		s.dirLock.Close()
		s.dirLock = nil
	}
}

// errAddrInUse marks a start that failed because the port was taken.
var errAddrInUse = errors.New("address already in use")

// startLocked launches Dendrite on s.Port and waits until it answers.
func (s *Server) startLocked(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	// BaseURL is set once, by Start: Restart keeps the port, and requests
	// may be reading BaseURL while Restart runs.
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
	baseURL := "http://" + addr

	logf, err := os.OpenFile(s.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open dendrite log: %w", err)
	}
	defer logf.Close() // the child holds its own descriptor
	logStart, err := logf.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("open dendrite log: %w", err)
	}
	fmt.Fprintf(logf, "==== intercom harness: starting dendrite %s on %s at %s\n",
		Version, addr, time.Now().Format(time.RFC3339Nano))

	t0 := time.Now()
	p, err := launch(s.bin, []string{
		"-config", filepath.Join(s.Dir, configFile),
		"-http-bind-address", addr,
	}, s.Dir, logf)
	if err != nil {
		return fmt.Errorf("start dendrite: %w", err)
	}
	if err := s.waitReady(ctx, p, baseURL); err != nil {
		s.kill(p)
		out := logtail.ReadFrom(s.LogPath(), logStart)
		if bytes.Contains(out, []byte("address already in use")) {
			err = fmt.Errorf("%w: %w", errAddrInUse, err)
		}
		return fmt.Errorf("start dendrite on %s: %w\n--- %s:\n%s", addr, err, s.LogPath(), logtail.LastLines(out, 40))
	}
	s.proc = p
	if s.BaseURL == "" {
		s.BaseURL = baseURL
	}
	s.log.Info("dendrite started", "url", baseURL, "dir", s.Dir, "pid", p.pid, "took", time.Since(t0))
	return nil
}

// waitReady polls /_matrix/client/versions until it answers 200, the process
// exits or ctx ends.
func (s *Server) waitReady(ctx context.Context, p *process, baseURL string) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	url := baseURL + "/_matrix/client/versions"
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
		if err != nil {
			cancel()
			return err
		}
		resp, err := s.http.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				cancel()
				return nil
			}
		}
		cancel()
		select {
		case <-p.done:
			return fmt.Errorf("dendrite exited before answering: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", url, ctx.Err())
		case <-tick.C:
		}
	}
}

// haltLocked stops the running process, if any.
func (s *Server) haltLocked() error {
	p := s.proc
	if p == nil {
		return nil
	}
	s.proc = nil
	select {
	case <-p.done:
		return fmt.Errorf("%w: %v (see %s)", ErrExited, p.err, s.LogPath())
	default:
	}
	t0 := time.Now()
	_ = syscall.Kill(-p.pid, syscall.SIGTERM)
	timer := time.NewTimer(s.stopGrace)
	defer timer.Stop()
	select {
	case <-p.done:
		s.log.Info("dendrite stopped", "pid", p.pid, "took", time.Since(t0))
	case <-timer.C:
		s.log.Warn("dendrite ignored SIGTERM; killing it", "pid", p.pid, "grace", s.stopGrace)
		s.kill(p)
	}
	return nil
}

// kill ends p's process group at once and waits for p to exit.
func (s *Server) kill(p *process) {
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	<-p.done
}

// process is one run of Dendrite, owned by the goroutine that started it.
type process struct {
	pid  int
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // the result of Wait; read only after done is closed
}

// launch starts bin in dir with its output appended to out. The goroutine
// that starts the process keeps its OS thread locked until the process
// exits: the parent-death signal (see sysProcAttr) fires when that thread
// ends, and the Go runtime only ends threads that are locked when their
// goroutine returns.
func launch(bin string, args []string, dir string, out *os.File) (*process, error) {
	p := &process{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		cmd.Stdout = out
		cmd.Stderr = out
		cmd.Env = append(os.Environ(), "PPROFLISTEN=") // Dendrite serves pprof when set
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

// freePort asks the kernel for a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tWriter sends each write to t.Log.
type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
