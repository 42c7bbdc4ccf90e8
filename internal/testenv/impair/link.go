// Package impair is a test harness: a UDP forwarder that makes one path a
// bad network in user space. The test kernels here have neither netem nor
// tbf, so what `tc qdisc add … netem loss 3% delay 100ms 100ms` and
// `tc qdisc add … tbf rate 500kbit latency 50ms` would do in the kernel is
// done here, visibly and with counters, for the packets of one UDP flow
// (a client, such as the intercom's TURN allocation, talking to one
// upstream address, such as coturn).
//
// Each direction is a Link: independent random loss, then a token-bucket
// rate cap with a bounded queue (tail drop), then a delay with jitter.
// Link decisions are a pure function of arrival times and a seeded random
// source (shaper), so the unit tests judge them exactly; the Forwarder
// only reads, schedules and writes.
package impair

import (
	"math"
	"math/rand/v2"
	"time"
)

// Distribution is how jitter is drawn around a Link's Delay.
type Distribution int

const (
	// Uniform draws the delay from [Delay−Jitter, Delay+Jitter], as netem
	// does when no distribution is named.
	Uniform Distribution = iota
	// Normal draws it from a normal distribution of mean Delay and
	// standard deviation Jitter (netem's "distribution normal").
	Normal
)

// Link describes one direction of a path. The zero Link forwards every
// packet at once.
type Link struct {
	// Loss is the probability that a packet is dropped, drawn
	// independently for every packet (netem's "loss random" without
	// correlation).
	Loss float64
	// Delay is the one-way delay added to every packet, and Jitter its
	// spread (see Distribution). A drawn delay below zero counts as zero.
	Delay, Jitter time.Duration
	Distribution  Distribution
	// Reorder lets a packet overtake an earlier one whose drawn delay was
	// longer, as netem does with jitter. Without it the link stays FIFO:
	// a packet never leaves before the one sent before it, so jitter
	// piles up behind a long delay instead of reordering.
	Reorder bool
	// Rate caps the link in bits per second (IP payload: the UDP
	// datagram's bytes, without IP/UDP headers); 0 is no cap. It is a
	// token bucket of Burst bytes (default 1500: one packet, like a link
	// that serialises) feeding a queue that holds a packet at most
	// QueueLatency (default 50 ms, as `tbf latency 50ms`); a packet that
	// would wait longer is dropped at the tail.
	Rate         int
	Burst        int
	QueueLatency time.Duration
}

const (
	defaultBurst        = 1500
	defaultQueueLatency = 50 * time.Millisecond
)

// verdict is what a link does with one packet.
type verdict int

const (
	pass     verdict = iota
	lost             // random loss
	tailDrop         // the rate cap's queue was full
)

// shaper applies a Link to a sequence of packets. It is pure: time is an
// argument, randomness comes from its own seeded source, and it never
// blocks. Not safe for concurrent use.
type shaper struct {
	link Link
	rng  *rand.Rand

	// The rate cap in virtual time: departures from the bottleneck are
	// in order, so the bucket is known at the last departure.
	lastDepart time.Time
	tokens     float64 // bytes in the bucket at lastDepart

	lastOut time.Time // latest scheduled delivery, for FIFO links
}

func newShaper(l Link, seed uint64) *shaper {
	if l.Burst <= 0 {
		l.Burst = defaultBurst
	}
	if l.QueueLatency <= 0 {
		l.QueueLatency = defaultQueueLatency
	}
	return &shaper{link: l, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), tokens: float64(l.Burst)}
}

// admit decides the fate of a packet of size bytes arriving at now: pass
// with the time it is to be delivered, or a drop and why.
func (s *shaper) admit(now time.Time, size int) (time.Time, verdict) {
	l := &s.link
	if l.Loss > 0 && s.rng.Float64() < l.Loss {
		return time.Time{}, lost
	}
	at := now
	if l.Rate > 0 {
		depart, ok := s.depart(now, size)
		if !ok {
			return time.Time{}, tailDrop
		}
		at = depart
	}
	at = at.Add(s.delay())
	if !l.Reorder && at.Before(s.lastOut) {
		at = s.lastOut
	}
	if at.After(s.lastOut) {
		s.lastOut = at
	}
	return at, pass
}

// depart is the token bucket: the packet leaves the bottleneck once the
// queue ahead of it has left and the bucket holds size bytes of tokens.
// It refuses a packet that would wait longer than QueueLatency, leaving
// the bucket as it was.
func (s *shaper) depart(now time.Time, size int) (time.Time, bool) {
	l := &s.link
	bytesPerSec := float64(l.Rate) / 8
	start := now
	if s.lastDepart.After(start) {
		start = s.lastDepart // the queue ahead of it
	}
	tokens := s.tokens
	if !s.lastDepart.IsZero() {
		tokens = math.Min(float64(l.Burst), tokens+start.Sub(s.lastDepart).Seconds()*bytesPerSec)
	}
	depart := start
	if need := float64(size) - tokens; need > 0 {
		depart = start.Add(time.Duration(need / bytesPerSec * float64(time.Second)))
		tokens = 0
	} else {
		tokens -= float64(size)
	}
	if depart.Sub(now) > l.QueueLatency {
		return time.Time{}, false
	}
	s.lastDepart, s.tokens = depart, tokens
	return depart, true
}

// delay draws one packet's added delay.
func (s *shaper) delay() time.Duration {
	l := &s.link
	d := float64(l.Delay)
	if l.Jitter > 0 {
		switch l.Distribution {
		case Normal:
			d += s.rng.NormFloat64() * float64(l.Jitter)
		default:
			d += (2*s.rng.Float64() - 1) * float64(l.Jitter)
		}
	}
	return time.Duration(max(d, 0))
}
