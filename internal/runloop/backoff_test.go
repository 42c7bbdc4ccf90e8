package runloop

import (
	"context"
	"errors"
	"math"
	"testing"
	"testing/synctest"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	const ms = time.Millisecond
	none := func(int64) int64 { return 0 }
	most := func(n int64) int64 { return n - 1 }
	tests := []struct {
		name    string
		b       Backoff
		attempt int
		want    time.Duration
	}{
		{"first", Backoff{Base: 500 * ms, Max: 30 * time.Second}, 1, 500 * ms},
		{"attempt below 1 is the first", Backoff{Base: 500 * ms, Max: 30 * time.Second}, 0, 500 * ms},
		{"doubles", Backoff{Base: 500 * ms, Max: 30 * time.Second}, 4, 4000 * ms},
		{"capped", Backoff{Base: 500 * ms, Max: 30 * time.Second}, 7, 30 * time.Second},
		{"capped far out, no overflow", Backoff{Base: 500 * ms, Max: 30 * time.Second}, 1000, 30 * time.Second},
		{"no cap saturates", Backoff{Base: 500 * ms}, 200, math.MaxInt64},
		{"zero value never waits", Backoff{}, 5, 0},
		{"jitter low end is half", Backoff{Base: 500 * ms, Max: 30 * time.Second, Jitter: none}, 2, 500 * ms},
		{"jitter high end is the whole", Backoff{Base: 500 * ms, Max: 30 * time.Second, Jitter: most}, 2, 1000 * ms},
		{"jitter on the cap", Backoff{Base: 500 * ms, Max: 30 * time.Second, Jitter: none}, 50, 15 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.b.Delay(tt.attempt); got != tt.want {
				t.Errorf("Delay(%d) = %v, want %v", tt.attempt, got, tt.want)
			}
		})
	}
}

// Whatever the jitter source says within its contract, the wait stays in
// [half, whole] and never exceeds Max.
func TestBackoffJitterBounds(t *testing.T) {
	for attempt := 1; attempt < 70; attempt++ {
		lo := Backoff{Base: time.Second, Max: time.Minute, Jitter: func(int64) int64 { return 0 }}
		hi := Backoff{Base: time.Second, Max: time.Minute, Jitter: func(n int64) int64 { return n - 1 }}
		l, h := lo.Delay(attempt), hi.Delay(attempt)
		if l <= 0 || h > time.Minute || h < l || l < h/2 {
			t.Fatalf("attempt %d: wait in [%v, %v]", attempt, l, h)
		}
	}
}

func TestBackoffNextReset(t *testing.T) {
	b := Backoff{Base: time.Second, Max: 5 * time.Second}
	var got []time.Duration
	for range 4 {
		got = append(got, b.Next())
	}
	b.Reset()
	got = append(got, b.Next())
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, time.Second}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("waits %v, want %v", got, want)
		}
	}
}

var errDown = errors.New("homeserver down")

func TestRetry(t *testing.T) {
	errForbidden := errors.New("forbidden")
	tests := []struct {
		name      string
		results   []error // op's answers in turn; the last repeats
		ctxAfter  time.Duration
		wantErr   []error // errors.Is targets; nil: success
		wantCalls int
		wantWaits []time.Duration
		wantTime  time.Duration
	}{
		{
			name:      "first time",
			results:   []error{nil},
			wantCalls: 1,
		},
		{
			name:      "after failures",
			results:   []error{errDown, errDown, errDown, nil},
			wantCalls: 4,
			wantWaits: []time.Duration{time.Second, 2 * time.Second, 4 * time.Second},
			wantTime:  7 * time.Second,
		},
		{
			name:      "permanent stops at once",
			results:   []error{errDown, Permanent(errForbidden)},
			wantErr:   []error{errForbidden},
			wantCalls: 2,
			wantWaits: []time.Duration{time.Second},
			wantTime:  time.Second,
		},
		{
			name:      "context ends while waiting",
			results:   []error{errDown},
			ctxAfter:  10 * time.Second,
			wantErr:   []error{errDown, context.DeadlineExceeded},
			wantCalls: 4, // at 0, 1, 3 and 7 s; the wait of 8 s is cut at 10 s
			wantWaits: []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second},
			wantTime:  10 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := t.Context()
				if tt.ctxAfter > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tt.ctxAfter)
					defer cancel()
				}
				b := Backoff{Base: time.Second, Max: time.Minute}
				calls := 0
				var waits []time.Duration
				start := time.Now()
				err := Retry(ctx, &b, func() error {
					calls++
					return tt.results[min(calls, len(tt.results))-1]
				}, func(_ error, wait time.Duration) { waits = append(waits, wait) })
				for _, target := range tt.wantErr {
					if !errors.Is(err, target) {
						t.Errorf("err = %v, want %v in it", err, target)
					}
				}
				if tt.wantErr == nil && err != nil {
					t.Errorf("err = %v", err)
				}
				if calls != tt.wantCalls {
					t.Errorf("%d calls, want %d", calls, tt.wantCalls)
				}
				if len(waits) != len(tt.wantWaits) {
					t.Fatalf("waits %v, want %v", waits, tt.wantWaits)
				}
				for i := range waits {
					if waits[i] != tt.wantWaits[i] {
						t.Fatalf("waits %v, want %v", waits, tt.wantWaits)
					}
				}
				if took := time.Since(start); took != tt.wantTime {
					t.Errorf("took %v, want %v", took, tt.wantTime)
				}
			})
		})
	}
}

// A Backoff kept across Retry calls starts afresh after a success.
func TestRetryResetsOnSuccess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := Backoff{Base: time.Second, Max: time.Minute}
		fails := 2
		op := func() error {
			if fails > 0 {
				fails--
				return errDown
			}
			return nil
		}
		if err := Retry(t.Context(), &b, op, nil); err != nil {
			t.Fatal(err)
		}
		if got := b.Next(); got != time.Second {
			t.Errorf("after success the next wait is %v, want 1s", got)
		}
	})
}

func TestPermanent(t *testing.T) {
	if Permanent(nil) != nil {
		t.Error("Permanent(nil) is not nil")
	}
	err := Permanent(errDown)
	if err.Error() != errDown.Error() || !errors.Is(err, errDown) {
		t.Errorf("Permanent(%v) = %v, does not read as the error it marks", errDown, err)
	}
	tests := []struct {
		err  error
		want bool
	}{
		{errDown, false},
		{err, true},
		{errors.Join(errors.New("send"), err), true},
		{nil, false},
	}
	for _, tt := range tests {
		if got := IsPermanent(tt.err); got != tt.want {
			t.Errorf("IsPermanent(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if err := Sleep(t.Context(), 3*time.Second); err != nil || time.Since(start) != 3*time.Second {
			t.Errorf("Sleep = %v after %v", err, time.Since(start))
		}
		cause := errors.New("shutting down")
		ctx, cancel := context.WithCancelCause(t.Context())
		time.AfterFunc(time.Second, func() { cancel(cause) })
		start = time.Now()
		if err := Sleep(ctx, time.Hour); !errors.Is(err, cause) || time.Since(start) != time.Second {
			t.Errorf("Sleep = %v after %v, want the cause after 1s", err, time.Since(start))
		}
		if err := Sleep(ctx, 0); !errors.Is(err, cause) {
			t.Errorf("Sleep(0) on an ended context = %v", err)
		}
	})
}

// RetryAll retries even errors marked Permanent, and returns ctx's error
// (not op's) when ctx ends.
func TestRetryAll(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := Backoff{Base: time.Second, Max: 4 * time.Second}
		calls := 0
		err := RetryAll(t.Context(), &b, func() error {
			if calls++; calls < 3 {
				return Permanent(errors.New("403"))
			}
			return nil
		}, nil)
		if err != nil || calls != 3 {
			t.Fatalf("RetryAll: %v after %d calls, want success on the 3rd", err, calls)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		err = RetryAll(ctx, &b, func() error { return Permanent(errors.New("403")) }, nil)
		if err != context.DeadlineExceeded {
			t.Fatalf("RetryAll after ctx ended: %v, want context.DeadlineExceeded", err)
		}
	})
}
