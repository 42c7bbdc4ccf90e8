package runloop

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// recorder collects what the items of a Sender did, in order.
type recorder struct {
	mu  sync.Mutex
	log []string
}

func (r *recorder) item(name string, d time.Duration) func(context.Context) {
	return func(ctx context.Context) {
		if d > 0 {
			_ = Sleep(ctx, d)
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		r.log = append(r.log, name)
	}
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.log)
}

func TestSenderRunsInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var s Sender
		var rec recorder
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); s.Run(ctx) }()
		// The slow first item must not let the quick ones overtake it.
		s.Add(rec.item("join", 3*time.Second))
		s.Add(rec.item("ring", 0))
		s.Add(rec.item("candidates", time.Second))
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got, want := rec.got(), []string{"join", "ring", "candidates"}; !slices.Equal(got, want) {
			t.Errorf("ran %v, want %v", got, want)
		}
		cancel()
		<-done
	})
}

// At shutdown Run stops after the item under way; Flush waits for it and
// sends the rest with its own, live, context.
func TestSenderFlushAfterRunStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var s Sender
		var rec recorder
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); s.Run(ctx) }()
		var runCtxAlive bool
		s.Add(func(ictx context.Context) {
			time.Sleep(2 * time.Second) // ignores cancellation, like a request in flight
			runCtxAlive = ictx.Err() == nil
			rec.item("ring", 0)(ictx)
		})
		s.Add(rec.item("leave", 0))
		s.Add(rec.item("clear membership", 0))
		time.Sleep(time.Second) // "ring" under way
		cancel()
		if err := s.Flush(context.Background()); err != nil {
			t.Fatalf("Flush: %v", err)
		}
		<-done
		if got, want := rec.got(), []string{"ring", "leave", "clear membership"}; !slices.Equal(got, want) {
			t.Errorf("ran %v, want %v", got, want)
		}
		if runCtxAlive {
			t.Error("the item under way at shutdown saw a live context")
		}
	})
}

func TestSenderFlush(t *testing.T) {
	tests := []struct {
		name     string
		items    []string
		flushCtx func() (context.Context, context.CancelFunc)
		wantErr  error
		wantRan  []string
		wantLeft int
	}{
		{
			name:     "nothing queued",
			flushCtx: func() (context.Context, context.CancelFunc) { return context.Background(), func() {} },
		},
		{
			name:     "runs everything without Run",
			items:    []string{"a", "b"},
			flushCtx: func() (context.Context, context.CancelFunc) { return context.Background(), func() {} },
			wantRan:  []string{"a", "b"},
		},
		{
			name:  "context already ended",
			items: []string{"a", "b"},
			flushCtx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx, func() {}
			},
			wantErr:  context.Canceled,
			wantLeft: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Sender
			var rec recorder
			for _, name := range tt.items {
				s.Add(rec.item(name, 0))
			}
			ctx, cancel := tt.flushCtx()
			defer cancel()
			if err := s.Flush(ctx); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Flush = %v, want %v", err, tt.wantErr)
			}
			if got := rec.got(); !slices.Equal(got, tt.wantRan) {
				t.Errorf("ran %v, want %v", got, tt.wantRan)
			}
			s.mu.Lock()
			left := len(s.items)
			s.mu.Unlock()
			if left != tt.wantLeft {
				t.Errorf("%d items left, want %d", left, tt.wantLeft)
			}
		})
	}
}

// Flush waits for what was added before it, not for what is added while
// it runs.
func TestSenderFlushStopsAtItsMark(t *testing.T) {
	var s Sender
	var rec recorder
	s.Add(func(ctx context.Context) {
		rec.item("first", 0)(ctx)
		s.Add(rec.item("added during flush", 0))
	})
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := rec.got(), []string{"first"}; !slices.Equal(got, want) {
		t.Errorf("ran %v, want %v", got, want)
	}
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := rec.got(), []string{"first", "added during flush"}; !slices.Equal(got, want) {
		t.Errorf("ran %v, want %v", got, want)
	}
}

// Flush gives up waiting for an item Run is executing when its context
// ends.
func TestSenderFlushTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var s Sender
		release := make(chan struct{})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		done := make(chan struct{})
		go func() { defer close(done); s.Run(ctx) }()
		s.Add(func(context.Context) { <-release })
		synctest.Wait()
		fctx, fcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer fcancel()
		if err := s.Flush(fctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Flush = %v, want deadline exceeded", err)
		}
		close(release)
		cancel()
		<-done
	})
}
