// Package sdnotifytest is a fake systemd for tests: a unixgram socket that
// collects sd_notify messages, as $NOTIFY_SOCKET names it.
package sdnotifytest

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Socket collects the messages sent to Path.
type Socket struct {
	Path string
	// Msgs receives every message, in order; closed when the socket is.
	Msgs chan string
	conn *net.UnixConn
}

// Listen opens a socket that is closed and removed when the test ends.
func Listen(t testing.TB) *Socket {
	t.Helper()
	// A short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "ic")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s := &Socket{Path: path, conn: conn, Msgs: make(chan string, 1024)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				close(s.Msgs)
				return
			}
			s.Msgs <- string(buf[:k])
		}
	}()
	t.Cleanup(func() { conn.Close(); _ = os.RemoveAll(dir) })
	return s
}

// Next returns the next message, or fails the test after d.
func (s *Socket) Next(t testing.TB, d time.Duration) string {
	t.Helper()
	select {
	case m := <-s.Msgs:
		return m
	case <-time.After(d):
		t.Fatalf("no sd_notify message within %v", d)
		return ""
	}
}

// Collect returns every message received within d.
func (s *Socket) Collect(d time.Duration) []string {
	var out []string
	deadline := time.After(d)
	for {
		select {
		case m := <-s.Msgs:
			out = append(out, m)
		case <-deadline:
			return out
		}
	}
}
