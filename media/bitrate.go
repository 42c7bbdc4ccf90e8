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
const (
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

	mu      sync.Mutex
	est     map[any]int // per receiver, bits per second
	target  int
	changed time.Time
	reports uint64
}

func newRateControl(min, max, start, audio int) *rateControl {
	return &rateControl{min: min, max: max, start: clampRate(start, min, max), audio: audio,
		est: map[any]int{}, target: clampRate(start, min, max)}
}

func clampRate(v, lo, hi int) int {
	return max(lo, min(v, hi))
}

// report records receiver from's estimate and returns the target and
// whether it changed.
func (r *rateControl) report(from any, bps int, now time.Time) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.est[from] = bps
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

// want is the target the estimates ask for, before hysteresis.
func (r *rateControl) wantLocked() int {
	lowest := -1
	for _, v := range r.est {
		if lowest < 0 || v < lowest {
			lowest = v
		}
	}
	return clampRate(int(float64(lowest)*estimateShare)-r.audio, r.min, r.max)
}

func (r *rateControl) updateLocked(now time.Time) (int, bool) {
	if len(r.est) == 0 {
		return r.target, false
	}
	want, cur := r.wantLocked(), r.target
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
