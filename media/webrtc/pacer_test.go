package webrtc

import (
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
)

// sentPacket is what a recordWriter saw.
type sentPacket struct {
	at   time.Time
	ssrc uint32
	seq  uint16
	size int
}

type recordWriter struct {
	mu   sync.Mutex
	sent []sentPacket
}

func (r *recordWriter) Write(h *rtp.Header, payload []byte, _ interceptor.Attributes) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, sentPacket{at: time.Now(), ssrc: h.SSRC, seq: h.SequenceNumber, size: h.MarshalSize() + len(payload)})
	return len(payload), nil
}

func (r *recordWriter) packets() []sentPacket {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sentPacket(nil), r.sent...)
}

const (
	videoSSRC = 1
	audioSSRC = 2
)

func newTestPacer() (*pacer, *recordWriter) {
	p, w := newPacer(), &recordWriter{}
	p.AddStream(videoSSRC, w)
	p.AddStream(audioSSRC, w)
	p.sendAtOnce(audioSSRC)
	return p, w
}

func writePacket(t *testing.T, p *pacer, ssrc uint32, seq uint16, n int) {
	t.Helper()
	buf := make([]byte, n)
	if _, err := p.Write(&rtp.Header{Version: 2, SSRC: ssrc, SequenceNumber: seq}, buf, nil); err != nil {
		t.Fatal(err)
	}
	clear(buf) // the caller reuses its buffer: the pacer must have copied it
}

// TestPacerPassesThroughUntilEstimate: before GCC sets a rate nothing is
// held, so the first keyframe of a call leaves at once.
func TestPacerPassesThroughUntilEstimate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, w := newTestPacer()
		for i := range 20 {
			writePacket(t, p, videoSSRC, uint16(i), 1200)
		}
		if got := len(w.packets()); got != 20 {
			t.Fatalf("%d of 20 packets sent at once before any estimate", got)
		}
		for _, s := range w.packets() {
			if !s.at.Equal(w.packets()[0].at) {
				t.Fatalf("packet %d sent at %v, want at once", s.seq, s.at)
			}
		}
	})
}

// TestPacerSpreadsAKeyframe: a 20-packet burst at a 150 kb/s estimate
// leaves at no more than 2.5 times the estimate after the first 40 ms
// worth, in order, every packet.
func TestPacerSpreadsAKeyframe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, w := newTestPacer()
		p.SetTargetBitrate(150_000)
		start := time.Now()
		const n = 20
		for i := range n {
			writePacket(t, p, videoSSRC, uint16(i), 1188)
		}
		time.Sleep(2 * time.Second)
		sent := w.packets()
		if len(sent) != n {
			t.Fatalf("%d of %d packets sent", len(sent), n)
		}
		rate := paceFactor * 150_000.0
		burst := rate / 8 * paceBurst.Seconds()
		bytes := 0
		for i, s := range sent {
			if s.seq != uint16(i) {
				t.Fatalf("packet %d went out as the %dth", s.seq, i)
			}
			// Token-bucket conformance: what left by s.at is at most the
			// burst, one packet of overdraft, and the rate since start.
			bytes += s.size
			if limit := burst + float64(s.size) + rate/8*s.at.Sub(start).Seconds(); float64(bytes) > limit {
				t.Fatalf("%d bytes out %v after the burst, more than %.0f", bytes, s.at.Sub(start), limit)
			}
		}
		took := sent[n-1].at.Sub(start)
		// 20 packets of 1200 bytes at 375 kb/s, less the burst: ≈ 470 ms.
		want := time.Duration((float64(bytes) - burst - float64(sent[0].size)) * 8 / rate * float64(time.Second))
		if took < want-5*time.Millisecond || took > want+5*time.Millisecond {
			t.Errorf("the burst took %v to leave, want about %v", took, want)
		}
		if p.stats.Queued == 0 || p.stats.Direct == 0 {
			t.Errorf("stats %+v: want some sent at once and some queued", p.stats)
		}
	})
}

// TestPacerAudioAndRetransmissionsFirst: audio is never queued, and a
// retransmission (a sequence number already sent) overtakes the video
// still queued.
func TestPacerAudioAndRetransmissionsFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, w := newTestPacer()
		p.SetTargetBitrate(150_000)
		for i := range 10 {
			writePacket(t, p, videoSSRC, uint16(100+i), 1188)
		}
		queuedFrom := len(w.packets())
		writePacket(t, p, audioSSRC, 7, 80)
		if got := w.packets(); len(got) != queuedFrom+1 || got[len(got)-1].ssrc != audioSSRC {
			t.Fatalf("audio was not sent at once: %+v", got)
		}
		writePacket(t, p, videoSSRC, 101, 1188) // asked for again
		time.Sleep(time.Second)
		sent := w.packets()
		if len(sent) != 12 {
			t.Fatalf("%d of 12 packets sent", len(sent))
		}
		if next := sent[queuedFrom+1]; next.seq != 101 {
			t.Errorf("after the audio went seq %d, want the retransmission of 101", next.seq)
		}
		if p.stats.Retransmissions != 1 {
			t.Errorf("%d retransmissions queued, want 1", p.stats.Retransmissions)
		}
	})
}

// TestPacerDrainsALongQueueFaster: no packet waits much longer than
// maxPaceDelay, however much was queued.
func TestPacerDrainsALongQueueFaster(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, w := newTestPacer()
		p.SetTargetBitrate(150_000)
		start := time.Now()
		const n = 100 // 120 kB: 2.6 s at 375 kb/s
		for i := range n {
			writePacket(t, p, videoSSRC, uint16(i), 1188)
		}
		time.Sleep(5 * time.Second)
		sent := w.packets()
		if len(sent) != n {
			t.Fatalf("%d of %d packets sent", len(sent), n)
		}
		if took := sent[n-1].at.Sub(start); took > maxPaceDelay+100*time.Millisecond {
			t.Errorf("the queue took %v to drain, want about %v", took, maxPaceDelay)
		}
	})
}

// TestPacerClose: what is queued at Close is dropped, and later writes
// fail.
func TestPacerClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, w := newTestPacer()
		p.SetTargetBitrate(150_000)
		for i := range 10 {
			writePacket(t, p, videoSSRC, uint16(i), 1188)
		}
		before := len(w.packets())
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if got := len(w.packets()); got != before {
			t.Errorf("%d packets sent after Close", got-before)
		}
		if _, err := p.Write(&rtp.Header{SSRC: videoSSRC, SequenceNumber: 20}, nil, nil); !errors.Is(err, errPacerClosed) {
			t.Errorf("write after Close: %v, want errPacerClosed", err)
		}
		if _, err := p.Write(&rtp.Header{SSRC: 99}, nil, nil); !errors.Is(err, errUnknownSSRC) {
			t.Errorf("write of an unknown stream: %v, want errUnknownSSRC", err)
		}
	})
}
