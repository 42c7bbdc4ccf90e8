package runloop

import (
	"sync"
	"testing"
)

func TestLatest(t *testing.T) {
	tests := []struct {
		name      string
		initial   string
		published []string
		wantGet   string
		wantRecv  []string // what a subscriber that reads only at the end finds
	}{
		{"nothing published", "idle", nil, "idle", nil},
		{"one", "idle", []string{"ringing"}, "ringing", []string{"ringing"}},
		{"a slow reader sees only the last", "idle", []string{"ringing", "in call", "idle"}, "idle", []string{"idle"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLatest(tt.initial)
			ch, cancel := l.Subscribe()
			defer cancel()
			for _, v := range tt.published {
				l.Publish(v)
			}
			if got := l.Get(); got != tt.wantGet {
				t.Errorf("Get = %q, want %q", got, tt.wantGet)
			}
			var got []string
			for {
				select {
				case v := <-ch:
					got = append(got, v)
					continue
				default:
				}
				break
			}
			if len(got) != len(tt.wantRecv) || (len(got) > 0 && got[0] != tt.wantRecv[0]) {
				t.Errorf("subscriber received %q, want %q", got, tt.wantRecv)
			}
		})
	}
}

func TestLatestCancel(t *testing.T) {
	var l Latest[int] // the zero value is ready
	ch, cancel := l.Subscribe()
	cancel()
	cancel() // harmless
	l.Publish(1)
	select {
	case v := <-ch:
		t.Errorf("received %d after cancel", v)
	default:
	}
	if got := l.Get(); got != 1 {
		t.Errorf("Get = %d, want 1", got)
	}
}

// Publishers are never held up and every reader ends on the last value,
// under the race detector.
func TestLatestConcurrent(t *testing.T) {
	const readers, values = 4, 1000
	var l Latest[int]
	var wg sync.WaitGroup
	last := make([]int, readers)
	ready := make(chan struct{}, readers)
	for r := range readers {
		ch, cancel := l.Subscribe()
		wg.Go(func() {
			defer cancel()
			ready <- struct{}{}
			prev := -1
			for v := range ch {
				if v <= prev {
					t.Errorf("reader %d: %d after %d", r, v, prev)
				}
				prev = v
				if v == values {
					last[r] = v
					return
				}
			}
		})
	}
	for range readers {
		<-ready
	}
	for v := 1; v <= values; v++ {
		l.Publish(v)
	}
	wg.Wait()
	for r, v := range last {
		if v != values {
			t.Errorf("reader %d ended on %d", r, v)
		}
	}
}
