package webrtc

import (
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
)

// Pacing (issue 16, "bad networks stay usable").
//
// The encoder writes each frame's packets at once. On a path whose
// bottleneck has a short queue (BenchmarkBadNetwork's 500 kb/s cap holds
// 50 ms, about 3 kB) every frame larger than that queue loses its tail
// there: keyframes (3–15 kB at 150 kb/s), the encoder's larger P-frames,
// and the retransmissions of what was lost, which burst again. pacer
// sends a peer's video no faster than paceFactor times the peer's
// send-side estimate, so a keyframe leaves over a few tens of
// milliseconds instead of in one burst, and a lost packet's
// retransmission goes before the video still queued.
//
// It is pion's gcc.Pacer, the place GCC gives a pacer (below the NACK
// responder and the sender reports, above SRTP): GCC sets its rate on
// every change of its estimate and its stamp of each packet's send time
// (for transport-cc feedback) runs when the pacer sends, not when the
// encoder wrote. pion's own pacer (gcc's leaky bucket) sends at least one
// packet every 5 ms whatever the rate (≈ 2 Mb/s of 1200-byte packets) on
// a goroutine per peer; this one sends at once while its budget allows,
// which is every packet of an average frame at any rate (paceBurst), and
// only otherwise queues and arms a timer: no goroutine while idle.

// paceFactor is how much faster than the estimate video may leave. The
// encoder's rate control keeps the mean at the target; the factor leaves
// room for frames above the mean. 2.5 is libwebrtc's default pacing
// factor.
const paceFactor = 2.5

// paceBurst is how much of the pacing rate may leave at once after a
// pause: at paceFactor it holds 1.5 mean frames at 15 fps, so only frames
// well above the mean (keyframes, the odd large P-frame) are spread.
const paceBurst = 40 * time.Millisecond

// minPaceRate is the lowest pacing rate: paceFactor times the stream's
// default floor (media.StreamConfig's MinVideoBitrate, 150 kb/s), which
// the encoder never goes below whatever the estimate says. Pacing slower
// than the encoder sends would only add delay.
const minPaceRate = 375_000

// maxPaceDelay is the longest a packet should wait in the pacer: when
// the queue holds more than this at the pacing rate, it drains faster.
// Nothing is dropped here; the encoder's target follows the estimate.
const maxPaceDelay = 500 * time.Millisecond

// minPacket is the least the budget's ceiling holds: one full packet,
// so that at any rate a packet can leave when the budget is full.
const minPacket = 1200

type pacedPacket struct {
	header  rtp.Header
	payload []byte
	attr    interceptor.Attributes
	w       interceptor.RTPWriter
	at      time.Time // when it was queued
}

// pacer is one peer connection's pacer (gcc.Pacer). Until GCC first sets
// a rate it sends everything at once, so the keyframe a new viewer waits
// for (answer → first frame) is never held back: no feedback has been
// measured yet then anyway.
type pacer struct {
	now       func() time.Time
	afterFunc func(time.Duration, func()) *time.Timer

	mu      sync.Mutex
	writers map[uint32]interceptor.RTPWriter
	direct  map[uint32]bool   // audio: sent at once, counted against the budget
	lastSeq map[uint32]uint16 // per stream, the newest sequence number written
	rate    int               // bits per second; 0 until GCC sets one
	tokens  float64           // bytes that may leave now; negative: owed
	filled  time.Time         // when tokens was last brought up to date
	rtx     []pacedPacket     // retransmissions, sent first
	queue   []pacedPacket
	queued  int // bytes in rtx and queue
	timer   *time.Timer
	closed  bool
	stats   pacerStats
}

// pacerStats counts what the pacer did, for tests and logs.
type pacerStats struct {
	Direct, Queued, Retransmissions uint64
}

func newPacer() *pacer {
	return &pacer{
		now: time.Now, afterFunc: time.AfterFunc,
		writers: map[uint32]interceptor.RTPWriter{},
		direct:  map[uint32]bool{},
		lastSeq: map[uint32]uint16{},
	}
}

// AddStream routes the packets of ssrc to w (gcc.Pacer).
func (p *pacer) AddStream(ssrc uint32, w interceptor.RTPWriter) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.writers[ssrc] = w
}

// sendAtOnce exempts ssrc (audio) from pacing: a 20-ms Opus packet must
// not wait behind a keyframe. Its bytes still count against the budget.
func (p *pacer) sendAtOnce(ssrc uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.direct[ssrc] = true
}

// SetTargetBitrate sets the estimate the pacing rate follows (gcc.Pacer).
func (p *pacer) SetTargetBitrate(bps int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	p.refill(now)
	first := p.rate == 0
	p.rate = max(int(paceFactor*float64(bps)), minPaceRate)
	if first {
		p.tokens, p.filled = p.burst(), now
	}
	p.tokens = min(p.tokens, p.burst())
}

// Write sends or queues one packet (gcc.Pacer). A queued packet is a
// copy: the caller reuses its buffers.
func (p *pacer) Write(h *rtp.Header, payload []byte, attr interceptor.Attributes) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w, ok := p.writers[h.SSRC]
	if !ok {
		return 0, fmt.Errorf("pace packet of ssrc %d: %w", h.SSRC, errUnknownSSRC)
	}
	if p.closed {
		return 0, errPacerClosed
	}
	size := h.MarshalSize() + len(payload)
	// A sequence number not after the newest of its stream is a
	// retransmission (pion's NACK responder resends on the same SSRC).
	last, seen := p.lastSeq[h.SSRC]
	resend := seen && int16(h.SequenceNumber-last) <= 0
	if !resend {
		p.lastSeq[h.SSRC] = h.SequenceNumber
	}
	now := p.now()
	p.refill(now)
	if p.rate == 0 || p.direct[h.SSRC] || (p.queued == 0 && p.tokens > 0) {
		p.tokens -= float64(size)
		p.stats.Direct++
		return w.Write(h, payload, attr)
	}
	pk := pacedPacket{header: h.Clone(), payload: append([]byte(nil), payload...), w: w, at: now}
	if attr != nil {
		pk.attr = maps.Clone(attr)
	}
	if resend {
		p.rtx = append(p.rtx, pk)
		p.stats.Retransmissions++
	} else {
		p.queue = append(p.queue, pk)
	}
	p.queued += size
	p.stats.Queued++
	p.arm(now)
	return len(payload), nil
}

// Close drops what is queued (gcc.Pacer); later writes fail.
func (p *pacer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.timer != nil {
		p.timer.Stop()
	}
	p.rtx, p.queue, p.queued = nil, nil, 0
	return nil
}

// burst is the budget's ceiling in bytes.
func (p *pacer) burst() float64 {
	return max(float64(p.rate)/8*paceBurst.Seconds(), minPacket)
}

// drainRate is the rate at now: the pacing rate, or what empties the
// queue by the time its oldest packet has waited maxPaceDelay.
func (p *pacer) drainRate(now time.Time) float64 {
	if p.queued == 0 {
		return float64(p.rate)
	}
	oldest := now
	if len(p.rtx) > 0 {
		oldest = p.rtx[0].at
	}
	if len(p.queue) > 0 && p.queue[0].at.Before(oldest) {
		oldest = p.queue[0].at
	}
	left := max(maxPaceDelay-now.Sub(oldest), 10*time.Millisecond)
	return max(float64(p.rate), float64(p.queued)*8/left.Seconds())
}

// refill brings the budget up to now.
func (p *pacer) refill(now time.Time) {
	if p.rate == 0 {
		return
	}
	if !p.filled.IsZero() && now.After(p.filled) {
		p.tokens = min(p.tokens+p.drainRate(now)/8*now.Sub(p.filled).Seconds(), p.burst())
	}
	p.filled = now
}

// arm sets the timer for when the budget next lets a packet go, unless it
// is set already.
func (p *pacer) arm(now time.Time) {
	if p.timer != nil || p.queued == 0 || p.closed {
		return
	}
	wait := time.Duration(0)
	if p.tokens <= 0 {
		wait = time.Duration((-p.tokens + 1) * 8 / p.drainRate(now) * float64(time.Second))
	}
	p.timer = p.afterFunc(wait, p.drain)
}

// drain sends what the budget allows, retransmissions first, and arms
// the timer again for the rest.
func (p *pacer) drain() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.timer = nil
	if p.closed {
		return
	}
	now := p.now()
	p.refill(now)
	for p.queued > 0 && p.tokens > 0 {
		var pk pacedPacket
		if len(p.rtx) > 0 {
			pk, p.rtx = p.rtx[0], p.rtx[1:]
		} else {
			pk, p.queue = p.queue[0], p.queue[1:]
		}
		size := pk.header.MarshalSize() + len(pk.payload)
		p.queued -= size
		p.tokens -= float64(size)
		// An error here has no caller to go to: the packet is lost as it
		// would be on the wire, and the receiver's NACK asks for it.
		_, _ = pk.w.Write(&pk.header, pk.payload, pk.attr)
	}
	if p.queued == 0 {
		p.rtx, p.queue = p.rtx[:0], p.queue[:0]
	}
	p.arm(now)
}
