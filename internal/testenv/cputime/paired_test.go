package cputime

import (
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Each round loads, measures, unloads and measures again; a busy
// goroutine shows up in the loaded windows only, and counters come out
// per second.
func TestPairedRounds(t *testing.T) {
	var calls []string
	var busy atomic.Bool
	var spinner sync.WaitGroup
	p := Paired{
		Span: 100 * time.Millisecond,
		Load: func() {
			calls = append(calls, "load")
			busy.Store(true)
			spinner.Go(func() {
				for busy.Load() {
				}
			})
		},
		Unload: func() {
			calls = append(calls, "unload")
			busy.Store(false)
			spinner.Wait()
		},
		// A clock in ms grows by 1000 a second.
		Counters: map[string]func() float64{"clock": func() float64 { return float64(time.Now().UnixNano()) / 1e6 }},
	}
	r := p.Rounds(3)
	if want := []string{"load", "unload", "load", "unload", "load", "unload"}; !slices.Equal(calls, want) {
		t.Fatalf("calls %v, want %v", calls, want)
	}
	if len(r.Loaded) != 3 || len(r.Unloaded) != 3 {
		t.Fatalf("%d loaded and %d unloaded windows, want 3 each", len(r.Loaded), len(r.Unloaded))
	}
	for _, w := range slices.Concat(r.Loaded, r.Unloaded) {
		if c := w.Rates["clock"]; c < 950 || c > 1050 {
			t.Errorf("a ms clock grew by %.1f/s", c)
		}
	}
	if got := Rate(r.Loaded, "clock"); got < 950 || got > 1050 {
		t.Errorf("median clock rate %.1f/s", got)
	}
	if l, u := CPU(r.Loaded), CPU(r.Unloaded); l <= u || r.Ratio() <= 1 {
		t.Errorf("busy %.1f ms/s, idle %.1f ms/s, ratio %.2f", l, u, r.Ratio())
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		v    []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 3},
	} {
		if got := median(tc.v); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.v, got, tc.want)
		}
	}
	r := Rounds{
		Loaded:   []Window{{CPU: 30}, {CPU: 40}, {CPU: 10}},
		Unloaded: []Window{{CPU: 10}, {CPU: 40}, {CPU: 5}},
	}
	// The median of the per-round ratios (3, 1, 2), not the ratio of
	// the medians (30/10).
	if got := r.Ratio(); got != 2 {
		t.Errorf("Ratio = %v, want 2", got)
	}
}

// With ProfileDir set every window leaves a CPU profile named for its
// side and round (a gzipped protobuf, as pprof writes it).
func TestPairedProfiles(t *testing.T) {
	dir := t.TempDir()
	p := Paired{Span: 20 * time.Millisecond, Load: func() {}, Unload: func() {}, ProfileDir: dir}
	p.Rounds(2)
	for _, name := range []string{"loaded-0.pprof", "unloaded-0.pprof", "loaded-1.pprof", "unloaded-1.pprof"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
			t.Errorf("%s: %d bytes, not gzip", name, len(b))
		}
	}
}
