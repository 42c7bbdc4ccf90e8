package media

import (
	"testing"
	"time"
)

func TestRateControl(t *testing.T) {
	const lo, hi, start, audio = 150_000, 1_500_000, 600_000, 32_000
	// video is the target an estimate asks for, before clamping.
	video := func(est int) int { return int(float64(est)*estimateShare) - audio }
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	type step struct {
		at     time.Duration
		from   string
		est    int // 0: the receiver leaves
		want   int
		change bool
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a lower estimate applies at once", []step{
			{0, "a", 400_000, video(400_000), true},
		}},
		{"the minimum over receivers wins", []step{
			{0, "a", 1_000_000, video(1_000_000), true},
			{10 * time.Millisecond, "b", 500_000, video(500_000), true},
			{20 * time.Millisecond, "c", 900_000, video(500_000), false},
		}},
		{"clamped to the floor and the ceiling", []step{
			{0, "a", 50_000, lo, true},
			{3 * time.Second, "a", 50_000_000, hi, true},
		}},
		{"small decreases are ignored", []step{
			{0, "a", 900_000, video(900_000), true},
			{100 * time.Millisecond, "a", 880_000, video(900_000), false},
			{200 * time.Millisecond, "a", 800_000, video(800_000), true},
		}},
		{"the floor is reached however small the step", []step{
			{0, "a", 200_000, video(200_000), true},
			{100 * time.Millisecond, "a", 195_000, lo, true}, // 152 kb/s → 150 kb/s
		}},
		{"increases wait for the hold", []step{
			{0, "a", 400_000, video(400_000), true},
			{time.Second, "a", 800_000, video(400_000), false},
			{rateIncreaseHold, "a", 800_000, video(800_000), true},
			{rateIncreaseHold + 100*time.Millisecond, "a", 820_000, video(800_000), false},
			{2*rateIncreaseHold + time.Second, "a", 820_000, video(800_000), false}, // under 10 %
		}},
		{"a decrease is not held", []step{
			{0, "a", 1_000_000, video(1_000_000), true},
			{10 * time.Millisecond, "a", 300_000, video(300_000), true},
		}},
		{"the slowest receiver leaving raises the target after the hold", []step{
			{0, "a", 1_000_000, video(1_000_000), true},
			{0, "b", 300_000, video(300_000), true},
			{time.Second, "b", 0, video(300_000), false},
			{3 * time.Second, "a", 1_000_000, video(1_000_000), true},
		}},
		{"the last receiver leaving restores the start", []step{
			{0, "a", 300_000, video(300_000), true},
			{time.Second, "a", 0, start, true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRateControl(lo, hi, start, audio)
			r.warmup = 0 // TestRateWarmup covers it
			if got, n, _ := r.state(); got != start || n != 0 {
				t.Fatalf("initial target %d with %d receivers", got, n)
			}
			for i, s := range tc.steps {
				var got int
				var changed bool
				if s.est == 0 {
					got, changed = r.forget(s.from, at(s.at))
				} else {
					got, changed = r.report(s.from, s.est, at(s.at))
				}
				if got != s.want || changed != s.change {
					t.Errorf("step %d (%s %d at %v): target %d changed %v, want %d %v", i, s.from, s.est, s.at, got, changed, s.want, s.change)
				}
			}
		})
	}
}

// TestRateWarmup: a receiver's first estimates (Chromium's first REMB is
// sent before its estimator has measured anything) cannot pull the target
// below the start value, but can raise it; after the warm-up they count.
func TestRateWarmup(t *testing.T) {
	const lo, hi, start, audio = 150_000, 1_500_000, 600_000, 32_000
	t0 := time.Unix(1000, 0)
	r := newRateControl(lo, hi, start, audio)
	if got, changed := r.report("a", 31_000, t0); got != start || changed {
		t.Fatalf("first REMB of 31 kb/s: target %d changed %v, want the start %d kept", got, changed, start)
	}
	if got, _ := r.report("a", 40_000, t0.Add(EstimateWarmup-time.Millisecond)); got != start {
		t.Fatalf("low estimate inside the warm-up: target %d", got)
	}
	if got, changed := r.report("a", 300_000, t0.Add(EstimateWarmup)); !changed || got != int(float64(300_000)*estimateShare)-audio {
		t.Fatalf("after the warm-up: target %d changed %v", got, changed)
	}
	// A new receiver's warm-up does not undo what an older one measured.
	if got, changed := r.report("b", 20_000, t0.Add(EstimateWarmup+time.Second)); changed {
		t.Fatalf("warming receiver moved the target to %d", got)
	}
	// A send-side measurement is not held: the door's own estimate
	// starts at the start value and falls only on what it measured.
	r3 := newRateControl(lo, hi, start, audio)
	if got, changed := r3.report(measuredKey{true}, 300_000, t0); !changed || got != int(float64(300_000)*estimateShare)-audio {
		t.Fatalf("measured estimate inside the warm-up: target %d changed %v", got, changed)
	}
	r4 := newRateControl(lo, hi, start, audio)
	if got, changed := r4.report(measuredKey{false}, 31_000, t0); got != start || changed {
		t.Fatalf("unmeasured estimate inside the warm-up: target %d changed %v, want the start kept", got, changed)
	}
	// High first estimates raise the target as usual (after the hold).
	r2 := newRateControl(lo, hi, start, audio)
	if got, changed := r2.report("a", 2_000_000, t0.Add(rateIncreaseHold)); !changed || got != hi {
		t.Fatalf("high first estimate: target %d changed %v", got, changed)
	}
}

// TestStreamFollowsEstimates: reports reach the running encoder of that
// codec only, and the other codec keeps its own target.
func TestStreamFollowsEstimates(t *testing.T) {
	fk := newFakes()
	s, err := NewStream(StreamConfig{Width: 64, Height: 48, FPS: 50, Encoders: fk.encoders(),
		VideoBitrate: 600_000, MinVideoBitrate: 100_000, MaxVideoBitrate: 1_000_000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for _, c := range []Codec{H264, VP8} {
		release, err := s.Acquire(c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(release)
	}
	waitFor(t, "encoders", func() bool { return fk.rate[H264].Load() == 600_000 && fk.rate[VP8].Load() == 600_000 })
	s.codecs[H264].rate.warmup = 0 // TestRateWarmup covers it
	s.ReportBandwidth(H264, "peer1", 300_000)
	want := int64(float64(300_000)*estimateShare) - 32_000
	waitFor(t, "H.264 target", func() bool { return fk.rate[H264].Load() == want })
	if got := stats(s, H264); got.TargetBitrate != int(want) || got.EstimateReceivers != 1 || got.EstimateReports != 1 {
		t.Errorf("H.264 stats %+v", got)
	}
	time.Sleep(50 * time.Millisecond)
	if got := fk.rate[VP8].Load(); got != 600_000 {
		t.Errorf("VP8 target %d, want 600000 (no VP8 receiver reported)", got)
	}
	s.ForgetBandwidth(H264, "peer1")
	waitFor(t, "H.264 back to the start", func() bool { return fk.rate[H264].Load() == 600_000 })

	if _, err := NewStream(StreamConfig{MinVideoBitrate: 2_000_000, MaxVideoBitrate: 1_000_000}); err == nil {
		t.Error("min above max accepted")
	}
}

// measuredKey is a receiver key that says whether its estimate is a
// send-side measurement (MeasuredEstimate).
type measuredKey struct{ m bool }

func (k measuredKey) EstimateMeasured() bool { return k.m }
