// Package go2rtc runs go2rtc (AlexxIT/go2rtc, pinned, built from the Go
// module proxy by gobuild into the user's cache) for tests: a WHEP client
// that is not ours. Its `webrtc:` source with an http(s) URL is its WHEP
// client; a consumer such as GET /api/frame.mp4 makes it connect.
package go2rtc

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/gobuild"
)

// Version is the go2rtc release the harness builds.
const Version = "v1.9.9"

// Module returns the pinned go2rtc as gobuild builds it: pure Go, its main
// package at the module root.
func Module() gobuild.Module {
	return gobuild.Module{
		Name:     "go2rtc",
		Path:     "github.com/AlexxIT/go2rtc",
		Version:  Version,
		Commands: []gobuild.Command{{Binary: "go2rtc", Package: "."}},
	}
}

// Build builds go2rtc once per machine (a minute or two cold, then
// cached; see gobuild) and returns the binary's path.
func Build(ctx context.Context) (string, error) {
	dir, err := Module().Build(ctx, nil)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "go2rtc"), nil
}

// Server is one go2rtc process.
type Server struct {
	URL string // its API, http://127.0.0.1:port
}

// Start runs go2rtc with streams (name → source) until the test ends. Its
// own servers (RTSP, RTMP, its WebRTC listener) are off; its WebRTC
// clients gather on 127.0.0.1 only and use no STUN server, so the test
// stays on loopback.
func Start(t testing.TB, ctx context.Context, streams map[string]string, log io.Writer) *Server {
	t.Helper()
	bin, err := Build(ctx)
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "api:\n  listen: \"127.0.0.1:%d\"\n", port)
	cfg.WriteString("rtsp:\n  listen: \"\"\nrtmp:\n  listen: \"\"\nsrtp:\n  listen: \"\"\n")
	cfg.WriteString("webrtc:\n  listen: \"\"\n  ice_servers: []\n  filters:\n    loopback: true\n    ips: [127.0.0.1]\n    networks: [udp4]\n")
	cfg.WriteString("log:\n  level: debug\nstreams:\n")
	for name, src := range streams {
		fmt.Fprintf(&cfg, "  %s: %q\n", name, src)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "go2rtc.yaml")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-config", path)
	cmd.Dir = dir
	if log == nil {
		log = io.Discard
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	s := &Server{URL: fmt.Sprintf("http://127.0.0.1:%d", port)}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/api")
		if err == nil {
			resp.Body.Close()
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("go2rtc API not up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
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
