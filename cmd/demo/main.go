// Command demo is `make demo`: the intercom in simulation against a local
// homeserver, with a resident page to open in a browser.
//
// It starts Dendrite (internal/testenv/dendrite) with its data under
// demo-state/, makes sure the users @intercom and @alice exist, writes the
// intercom's configuration, runs the intercom binary as a child process and
// serves the resident page (internal/testenv/resident) next to a reverse
// proxy of the intercom's local API, so the page's "Ring the doorbell"
// button, which posts to /api/ring on its own origin, presses the simulated
// button. Everything it makes is kept in demo-state/, so a second run reuses
// the users, the intercom's login and its direct room with alice.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/doorbell/intercom/device"
	"github.com/doorbell/intercom/internal/testenv/dendrite"
	"github.com/doorbell/intercom/internal/testenv/resident"
	"github.com/doorbell/intercom/provisioning"
)

// The demo's accounts. Dendrite refuses passwords shorter than 8 characters.
const (
	intercomUser     = "intercom"
	intercomPassword = "intercom-demo-password"
	residentUser     = "alice"
	residentPassword = "alice-demo-password"
)

func main() {
	var o options
	flag.StringVar(&o.intercom, "intercom", "bin/intercom", "path of the intercom binary")
	flag.StringVar(&o.state, "state", "demo-state", "directory for everything the demo keeps between runs")
	flag.IntVar(&o.hsPort, "hs-port", 8008, "port of the homeserver on 127.0.0.1")
	flag.StringVar(&o.api, "api", "127.0.0.1:8080", "address of the intercom's local API")
	flag.StringVar(&o.listen, "listen", "127.0.0.1:8090", "address of the resident page")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	// An error after Ctrl-C is only the start being cut short.
	if err := run(ctx, o, logger); err != nil && ctx.Err() == nil {
		// Plain text: the error may carry the last lines of a log.
		fmt.Fprintf(os.Stderr, "demo failed: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	intercom, state, api, listen string
	hsPort                       int
}

func run(ctx context.Context, o options, logger *slog.Logger) error {
	log := logger.With("component", "demo")
	state, err := filepath.Abs(o.state)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	// Take the page's address first, so that a port in use fails the demo
	// before anything is started.
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen for the resident page: %w", err)
	}
	defer ln.Close()
	pageDir, err := resident.Setup(ctx)
	if err != nil {
		return fmt.Errorf("set up the resident page: %w", err)
	}

	hs, err := dendrite.Start(ctx, dendrite.Options{
		Dir:    filepath.Join(state, "dendrite"),
		Port:   o.hsPort,
		Logger: logger.With("component", "dendrite"),
	})
	if err != nil {
		return fmt.Errorf("start Dendrite: %w", err)
	}
	defer func() {
		if err := hs.Stop(); err != nil {
			log.Error("stop Dendrite", "err", err)
		}
	}()
	bot, err := hs.EnsureUser(ctx, intercomUser, intercomPassword)
	if err != nil {
		return fmt.Errorf("ensure user %s: %w", intercomUser, err)
	}
	alice, err := hs.EnsureUser(ctx, residentUser, residentPassword)
	if err != nil {
		return fmt.Errorf("ensure user %s: %w", residentUser, err)
	}

	cfgPath, err := writeConfig(state, hs.BaseURL, bot.UserID, alice.UserID, o.api)
	if err != nil {
		return err
	}
	ic, err := startIntercom(o.intercom, cfgPath)
	if err != nil {
		return err
	}
	defer ic.stop(log)
	if err := ic.waitHealthy(ctx, "http://"+o.api+"/healthz", hs.Exited()); err != nil {
		return fmt.Errorf("%w\n%s", err, ic.tail.String())
	}

	pages, err := pageMux(pageDir, o.api, ln.Addr().String())
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: pages, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer srv.Close()

	printBanner(os.Stdout, "http://"+ln.Addr().String(), hs, alice.UserID, state)

	select {
	case <-ctx.Done():
		log.Info("stopping")
		return nil
	case <-ic.exited:
		return fmt.Errorf("intercom exited: %v; last lines of its output:\n%s", ic.err, ic.tail.String())
	case <-hs.Exited():
		return fmt.Errorf("dendrite exited; last lines of %s:\n%s", hs.LogPath(), hs.LogTail(30))
	case err := <-served:
		return fmt.Errorf("serve the resident page: %w", err)
	}
}

// writeConfig writes the intercom's password file and configuration into
// state and checks the configuration with the intercom's own loader.
func writeConfig(state, homeserver, botID, residentID, api string) (string, error) {
	if err := os.WriteFile(filepath.Join(state, "intercom-password"), []byte(intercomPassword), 0o600); err != nil {
		return "", fmt.Errorf("write intercom password: %w", err)
	}
	// Relative paths are resolved against the configuration's directory.
	cfg := fmt.Sprintf(`# Written by cmd/demo on every run of make demo.
matrix:
  homeserver: %s
  user_id: %q
  password_file: ./intercom-password
  device_name: Demo front door
state_dir: ./intercom-state
residents: [%q]
ring:
  timeout: 60s
hardware:
  gpio: sim
  camera: testpattern
  audio: tone
api:
  listen: %s
`, homeserver, botID, residentID, api)
	path := filepath.Join(state, "intercom.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return "", fmt.Errorf("write intercom config: %w", err)
	}
	if _, err := provisioning.Load(path); err != nil {
		return "", fmt.Errorf("check intercom config: %w", err)
	}
	return path, nil
}

// intercom is the intercom binary running as a child process.
type intercom struct {
	cmd    *exec.Cmd
	tail   *tailWriter
	exited chan struct{} // closed when the process has exited; err is then set
	err    error
}

func startIntercom(bin, cfgPath string) (*intercom, error) {
	ic := &intercom{tail: &tailWriter{max: 40}, exited: make(chan struct{})}
	ic.cmd = exec.Command(bin, "run", "--config", cfgPath)
	// Loopback ICE: the browser runs on this machine, and the demo must not
	// send media over the machine's other networks.
	ic.cmd.Env = append(os.Environ(), "INTERCOM_ICE_LOOPBACK=1")
	ic.cmd.Stdout = &prefixWriter{dst: os.Stdout, tail: ic.tail}
	ic.cmd.Stderr = &prefixWriter{dst: os.Stderr, tail: ic.tail}
	ic.cmd.SysProcAttr = sysProcAttr()
	started := make(chan error, 1)
	go func() {
		// The parent-death signal follows the thread that started the
		// child, so that thread stays locked until the child has exited.
		runtime.LockOSThread()
		if err := ic.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		ic.err = ic.cmd.Wait()
		close(ic.exited)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start intercom %s: %w", bin, err)
	}
	return ic, nil
}

// waitHealthy polls the intercom's /healthz until it answers 200, which it
// does once its Matrix sync is healthy.
func (ic *intercom) waitHealthy(ctx context.Context, url string, hsExited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the intercom's %s: %w", url, ctx.Err())
		case <-ic.exited:
			return fmt.Errorf("intercom exited before it was healthy: %v", ic.err)
		case <-hsExited:
			return errors.New("dendrite exited while the intercom was starting")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stop ends the intercom as systemd would: SIGTERM, then SIGKILL if it has
// not exited within 10 s.
func (ic *intercom) stop(log *slog.Logger) {
	select {
	case <-ic.exited:
		return
	default:
	}
	log.Info("stopping the intercom", "pid", ic.cmd.Process.Pid)
	_ = ic.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ic.exited:
	case <-time.After(10 * time.Second):
		log.Warn("intercom still running 10 s after SIGTERM; killing it", "pid", ic.cmd.Process.Pid)
		_ = ic.cmd.Process.Kill()
		<-ic.exited
	}
}

// pageMux serves the resident page under /resident/ and passes the
// intercom's API through, so that the page reaches it on its own origin
// (page, the address the page is served on).
//
// The intercom's API refuses requests addressed to another host or sent
// from another origin (device.Guard), and the page's are both. So the
// pass-through is guarded the same way for the page's own address, and
// what passes is sent on as the API's own: Host the API's address, no
// Origin (it was the page's, checked here).
func pageMux(pageDir, api, page string) (http.Handler, error) {
	target := &url.URL{Scheme: "http", Host: api}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target) // also sets Host to the API's address
			pr.Out.Header.Del("Origin")
		},
		FlushInterval: -1, // /api/events is a server-sent event stream
	}
	guarded, err := device.Guard(proxy, device.GuardConfig{Listen: page})
	if err != nil {
		return nil, fmt.Errorf("the resident page passes the intercom's API through, so it must listen on loopback: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/resident/", http.StripPrefix("/resident", resident.Handler(pageDir)))
	mux.Handle("/api/", guarded)
	mux.Handle("/healthz", guarded)
	// Browsers keep the fragment (the login) across a redirect.
	mux.Handle("/{$}", http.RedirectHandler("/resident/", http.StatusFound))
	return mux, nil
}

func printBanner(w io.Writer, page string, hs *dendrite.Server, residentID, state string) {
	// The page reads its parameters from the fragment, which never reaches
	// a server log. autojoin=1 makes it join the direct room the intercom
	// invites alice to at start-up; encryption=1 starts matrix-js-sdk's
	// rust crypto, as the intercom's rooms are encrypted (matrix.encryption
	// is on by default).
	link := fmt.Sprintf("%s/resident/#hs=%s&user=%s&password=%s&autojoin=1&encryption=1",
		page, fragmentEscape(hs.BaseURL), fragmentEscape(residentID), fragmentEscape(residentPassword))
	rule := strings.Repeat("=", 72)
	fmt.Fprintf(w, `
%[1]s
  The intercom is running: simulated button, test-pattern camera, tone.

  Open the page of the resident %[2]s in a browser on this machine:

    %[3]s

  1. Wait for "ready as %[2]s".
  2. Press "Ring the doorbell": the page rings (caller: intercom).
  3. Press "Answer": you see the test pattern (clock and frame counter)
     and hear the tone.
  4. Press "Hang up".

  Homeserver %[4]s (its log: %[5]s).
  Everything is kept in %[6]s for the next run. Ctrl-C stops everything.
%[1]s

`, rule, residentID, link, hs.BaseURL, hs.LogPath(), state)
}

// fragmentEscape escapes what URLSearchParams would misread in the
// fragment, and leaves the rest (":", "/", "@") readable.
var fragmentEscape = strings.NewReplacer("%", "%25", "&", "%26", "=", "%3D", "+", "%2B", "#", "%23", " ", "%20").Replace

// prefixWriter copies a child's output line by line, each line prefixed
// with "intercom | ", and keeps the lines in tail.
type prefixWriter struct {
	dst  io.Writer
	tail *tailWriter
	buf  []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		line := p.buf[:i+1]
		fmt.Fprintf(p.dst, "intercom | %s", line)
		p.tail.add(string(line))
		p.buf = p.buf[i+1:]
	}
}

// tailWriter keeps the last max lines of output.
type tailWriter struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (t *tailWriter) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > t.max {
		t.lines = t.lines[len(t.lines)-t.max:]
	}
}

func (t *tailWriter) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "")
}
