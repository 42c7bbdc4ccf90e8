package impair

import (
	"math"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)

// TestLoss: over many packets with a fixed seed the share lost is the
// configured probability (binomial: at 3 % over 100000 packets one
// standard deviation is 0.054 %; the bound is about five of them).
func TestLoss(t *testing.T) {
	for _, p := range []float64{0, 0.01, 0.03, 0.10, 1} {
		s := newShaper(Link{Loss: p}, 42)
		const n = 100000
		lostN := 0
		for i := range n {
			if _, v := s.admit(t0.Add(time.Duration(i)*time.Millisecond), 1000); v == lost {
				lostN++
			}
		}
		got := float64(lostN) / n
		if math.Abs(got-p) > 0.003 {
			t.Errorf("loss %.2f: lost %.4f of %d packets", p, got, n)
		}
	}
}

// TestLossIndependentOfSeed: two seeds lose different packets (the draws
// come from the seed, not from a shared source) and one seed repeats.
func TestLossIndependentOfSeed(t *testing.T) {
	pattern := func(seed uint64) []bool {
		s := newShaper(Link{Loss: 0.2}, seed)
		out := make([]bool, 200)
		for i := range out {
			_, v := s.admit(t0, 100)
			out[i] = v == lost
		}
		return out
	}
	a, b, c := pattern(1), pattern(1), pattern(2)
	same := func(x, y []bool) bool {
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	if !same(a, b) {
		t.Error("one seed gave two loss patterns")
	}
	if same(a, c) {
		t.Error("two seeds gave the same loss pattern")
	}
}

// TestRateCap: offered twice the cap for two seconds, the link delivers
// the cap (±10 %) in any one-second window after the queue filled, never
// holds a packet longer than its queue latency, and drops the rest at the
// tail.
func TestRateCap(t *testing.T) {
	for _, tc := range []struct {
		rate, size int
		offered    int // bits per second offered
	}{
		{500_000, 1200, 1_000_000},
		{500_000, 200, 1_000_000}, // audio-sized packets
		{2_000_000, 1200, 3_000_000},
	} {
		l := Link{Rate: tc.rate, QueueLatency: 50 * time.Millisecond}
		s := newShaper(l, 1)
		interval := time.Duration(float64(tc.size*8) / float64(tc.offered) * float64(time.Second))
		var departs []time.Time
		dropped := 0
		for i := 0; ; i++ {
			now := t0.Add(time.Duration(i) * interval)
			if now.Sub(t0) > 2*time.Second {
				break
			}
			at, v := s.admit(now, tc.size)
			switch v {
			case pass:
				if w := at.Sub(now); w > l.QueueLatency || w < 0 {
					t.Fatalf("rate %d: a packet waited %v", tc.rate, w)
				}
				departs = append(departs, at)
			case tailDrop:
				dropped++
			default:
				t.Fatalf("verdict %v without loss", v)
			}
		}
		from, to := t0.Add(500*time.Millisecond), t0.Add(1500*time.Millisecond)
		bits := 0
		for _, d := range departs {
			if !d.Before(from) && d.Before(to) {
				bits += tc.size * 8
			}
		}
		if got := float64(bits); math.Abs(got-float64(tc.rate)) > 0.1*float64(tc.rate) {
			t.Errorf("rate %d, %d-byte packets at %d b/s: %d b/s through in a second", tc.rate, tc.size, tc.offered, bits)
		}
		if dropped == 0 {
			t.Errorf("rate %d: nothing dropped at twice the cap", tc.rate)
		}
	}
}

// TestRateUnderCap: below the cap nothing is dropped and a packet is
// delayed by at most its own serialisation.
func TestRateUnderCap(t *testing.T) {
	s := newShaper(Link{Rate: 500_000}, 1)
	for i := range 1000 {
		now := t0.Add(time.Duration(i) * 40 * time.Millisecond) // 1200 B per 40 ms: 240 kb/s
		at, v := s.admit(now, 1200)
		if v != pass {
			t.Fatalf("packet %d: %v under the cap", i, v)
		}
		if w := at.Sub(now); w > 20*time.Millisecond {
			t.Fatalf("packet %d waited %v under the cap", i, w)
		}
	}
}

// TestDelayAndJitter: every delay lies in Delay±Jitter (uniform), the
// mean is Delay, a FIFO link never reorders and a reordering one does.
func TestDelayAndJitter(t *testing.T) {
	for _, reorder := range []bool{false, true} {
		l := Link{Delay: 100 * time.Millisecond, Jitter: 100 * time.Millisecond, Reorder: reorder}
		s := newShaper(l, 7)
		const n = 20000
		var sum time.Duration
		var prev time.Time
		reordered := 0
		for i := range n {
			now := t0.Add(time.Duration(i) * 10 * time.Millisecond)
			at, v := s.admit(now, 1000)
			if v != pass {
				t.Fatalf("verdict %v", v)
			}
			d := at.Sub(now)
			if d < 0 || (reorder && d > 200*time.Millisecond) {
				t.Fatalf("reorder %v: delay %v outside [0, 200 ms]", reorder, d)
			}
			if at.Before(prev) {
				reordered++
			}
			prev = at
			sum += d
		}
		mean := sum / n
		switch {
		case reorder && (mean < 95*time.Millisecond || mean > 105*time.Millisecond):
			t.Errorf("reordering link: mean delay %v, want 100 ms ±5", mean)
		case !reorder && mean < 100*time.Millisecond:
			// Holding a packet behind a later-drawn one only adds delay.
			t.Errorf("FIFO link: mean delay %v below the base", mean)
		}
		if reorder && reordered == 0 {
			t.Error("a reordering link with 100 ms jitter at 100 packets/s reordered nothing")
		}
		if !reorder && reordered != 0 {
			t.Errorf("FIFO link reordered %d packets", reordered)
		}
	}
}

// TestNormalJitter: with a normal distribution about 68 % of delays lie
// within one standard deviation, and none below zero.
func TestNormalJitter(t *testing.T) {
	s := newShaper(Link{Delay: 100 * time.Millisecond, Jitter: 20 * time.Millisecond, Distribution: Normal, Reorder: true}, 3)
	const n = 20000
	within := 0
	for range n {
		at, _ := s.admit(t0, 100)
		d := at.Sub(t0)
		if d < 0 {
			t.Fatalf("negative delay %v", d)
		}
		if d >= 80*time.Millisecond && d <= 120*time.Millisecond {
			within++
		}
	}
	if f := float64(within) / n; f < 0.65 || f > 0.71 {
		t.Errorf("%.3f within one standard deviation, want ≈ 0.683", f)
	}
}
