package nodeproc

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
	"time"
)

// syncWriter serialises writes from the stderr copier and the event reader.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// tailBuffer keeps the last max bytes written, for error messages.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(bytes.TrimSpace(b.buf))
}

// TestLog returns a writer that sends whole lines to t.Log, each after
// prefix: the harnesses' drivers write their diagnostics in pieces from
// two goroutines, and t.Log wants lines.
func TestLog(t testing.TB, prefix string) io.Writer {
	return &testLog{t: t, prefix: prefix}
}

type testLog struct {
	mu     sync.Mutex
	t      testing.TB
	prefix string
	buf    []byte
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.t.Log(w.prefix + string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}

// StartT calls start for a test, bounded by timeout and the test's
// context, fails the test if it fails, and closes what it started in
// t.Cleanup; what names it in the cleanup's error ("resident").
func StartT[T interface{ Close() error }](t testing.TB, what string, timeout time.Duration, start func(context.Context) (T, error)) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	v, err := start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := v.Close(); err != nil {
			t.Errorf("close %s: %v", what, err)
		}
	})
	return v
}
