package media

import (
	"sync"
	"time"
)

// Bitrate adaptation. Every viewer's receiver estimates the bitrate its
// path can carry and tells the door (REMB, draft-alvestrand-rmcat-remb;
// see media/webrtc). One encoder feeds every viewer of a codec, so its
// target must fit the worst of them: it is the minimum over the estimates
// of that codec's viewers, less what the estimate also has to carry
// (audio, packet headers), clamped to the configured bounds. Decreases
// are applied at once (the path is congested now); increases wait until
// the last change is rateIncreaseHold old, and both ignore changes
// smaller than a few per cent, so the encoder is not reconfigured on
// every report.
//
// A receiver's first estimates are not yet measurements: Chromium sends
// its first REMB (about 30 kb/s here) before its estimator has seen any
// traffic, and acting on it starved every call's first seconds at the
// floor. For EstimateWarmup after a receiver's first report its estimate
// may hold the target at the start value or raise it, not lower it below
// the start (GCC ramps the same way from its own start rate).
const (
	// EstimateWarmup is how long a receiver's estimate cannot pull the
	// target below the start value (exported for tests elsewhere that
	// must wait it out).
	EstimateWarmup = 4 * time.Second
	// estimateShare is the share of an estimate left for video payload
	// after RTP, SRTP and UDP/IP headers (≈ 40 bytes on 1200-byte packets,
	// plus SRTP's tag) and keyframe bursts, before audio is taken off.
	estimateShare = 0.92
	// rateDecreaseMin and rateIncreaseMin are the smallest relative
	// changes acted upon.
	rateDecreaseMin = 0.05
	rateIncreaseMin = 0.10
	// rateIncreaseHold is the least time between a change and an increase.
	rateIncreaseHold = 2 * time.Second
)

// rateControl turns receivers' estimates into one encoder target. It is
// pure apart from its lock: time is an argument.
type rateControl struct {
	min, max, start int
	audio           int // bits per second the estimate also carries

	warmup time.Duration // EstimateWarmup; tests set 0

	mu      sync.Mutex
	est     map[any]estimate // per receiver
	target  int
	changed time.Time
	reports uint64
}

func newRateControl(min, max, start, audio int) *rateControl {
	return &rateControl{min: min, max: max, start: clampRate(start, min, max), audio: audio,
		est: map[any]estimate{}, target: clampRate(start, min, max), warmup: EstimateWarmup}
}

// estimate is one receiver's latest estimate and when it first reported.
type estimate struct {
	bps   int
	first time.Time
	// measured: the estimate is the sender's own (GCC on transport-cc
	// feedback), which starts at the start value and moves only on what
	// the feedback shows, so the warm-up does not hold it.
	measured bool
}

// MeasuredEstimate is implemented by a receiver key (ReportBandwidth's
// from) that can tell whether its latest estimate is a send-side
// measurement rather than the receiver's word. Held at the start for the
// warm-up, a door on a 500 kb/s uplink sent its 600 kb/s start for 4 s
// and the resident's first 5–6 s froze (BenchmarkBadNetwork, cap500k).
type MeasuredEstimate interface {
	EstimateMeasured() bool
}

func clampRate(v, lo, hi int) int {
	return max(lo, min(v, hi))
}

// report records receiver from's estimate and returns the target and
// whether it changed.
func (r *rateControl) report(from any, bps int, now time.Time) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.est[from]
	if !ok {
		e.first = now
	}
	e.bps = bps
	m, ok := from.(MeasuredEstimate)
	e.measured = ok && m.EstimateMeasured()
	r.est[from] = e
	r.reports++
	return r.updateLocked(now)
}

// forget drops a receiver that left. When none is left the target goes
// back to the start value, for the next call.
func (r *rateControl) forget(from any, now time.Time) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.est[from]; !ok {
		return r.target, false
	}
	delete(r.est, from)
	if len(r.est) == 0 {
		changed := r.target != r.start
		r.target, r.changed = r.start, now
		return r.target, changed
	}
	return r.updateLocked(now)
}

// want is the target the estimates ask for, before hysteresis: the
// lowest of the receivers' wishes, where one still warming up wishes at
// least the start value.
func (r *rateControl) wantLocked(now time.Time) int {
	lowest := -1
	for _, e := range r.est {
		v := clampRate(int(float64(e.bps)*estimateShare)-r.audio, r.min, r.max)
		if now.Sub(e.first) < r.warmup && !e.measured {
			v = max(v, r.start)
		}
		if lowest < 0 || v < lowest {
			lowest = v
		}
	}
	return lowest
}

func (r *rateControl) updateLocked(now time.Time) (int, bool) {
	if len(r.est) == 0 {
		return r.target, false
	}
	want, cur := r.wantLocked(now), r.target
	switch {
	case want < cur:
		// Always act on reaching the floor, however small the step.
		if float64(cur-want) < rateDecreaseMin*float64(cur) && want != r.min {
			return cur, false
		}
	case want > cur:
		if float64(want-cur) < rateIncreaseMin*float64(cur) && want != r.max {
			return cur, false
		}
		if now.Sub(r.changed) < rateIncreaseHold {
			return cur, false
		}
	default:
		return cur, false
	}
	r.target, r.changed = want, now
	return want, true
}

// state returns the target and how many receivers report estimates.
func (r *rateControl) state() (target, receivers int, reports uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.target, len(r.est), r.reports
}
