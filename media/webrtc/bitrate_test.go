package webrtc

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/doorbell/intercom/media"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/gcc"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
)

// fakeSink records what reaches the stream's rate control.
type fakeSink struct {
	mu     sync.Mutex
	est    map[media.Codec]map[any]int
	forgot int
}

func (s *fakeSink) ReportBandwidth(c media.Codec, from any, bps int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.est == nil {
		s.est = map[media.Codec]map[any]int{}
	}
	if s.est[c] == nil {
		s.est[c] = map[any]int{}
	}
	s.est[c][from] = bps
}

func (s *fakeSink) ForgetBandwidth(c media.Codec, from any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.est[c][from]; ok {
		delete(s.est[c], from)
		s.forgot++
	}
}

func (s *fakeSink) get(c media.Codec, from any) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	bps, ok := s.est[c][from]
	return bps, ok
}

func (s *fakeSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.est {
		n += len(m)
	}
	return n
}

// fakeEstimator is a cc.BandwidthEstimator whose target the test sets.
type fakeEstimator struct {
	mu       sync.Mutex
	target   int
	onChange func(int)
}

func (e *fakeEstimator) AddStream(_ *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	return w
}
func (e *fakeEstimator) WriteRTCP([]rtcp.Packet, interceptor.Attributes) error { return nil }
func (e *fakeEstimator) GetStats() map[string]any                              { return nil }
func (e *fakeEstimator) Close() error                                          { return nil }
func (e *fakeEstimator) GetTargetBitrate() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.target
}
func (e *fakeEstimator) OnTargetBitrateChange(f func(int)) { e.onChange = f }

// set changes the target and calls back with a stale value, as a late
// goroutine of GCC's might.
func (e *fakeEstimator) set(bps int) {
	e.mu.Lock()
	e.target = bps
	e.mu.Unlock()
	e.onChange(-1)
}

// TestSendSideEstimateRelays: the latest target reaches the stream as the
// peer's estimate, for the codec in use; nothing before the codec is
// known; a codec change moves it; close forgets it and later callbacks
// are ignored.
func TestSendSideEstimateRelays(t *testing.T) {
	sink := &fakeSink{}
	var codec media.Codec
	est := &fakeEstimator{target: 600_000}
	g := newSendSideEstimate(est, sink, func() media.Codec { return codec })

	est.set(500_000)
	if n := sink.count(); n != 0 {
		t.Fatalf("%d estimates before the codec was chosen", n)
	}
	codec = media.H264
	est.set(400_000)
	if bps, ok := sink.get(media.H264, g); !ok || bps != 400_000 {
		t.Fatalf("H.264 estimate %d (%v), want the latest target 400000 whatever the callback's value", bps, ok)
	}
	codec = media.VP8
	est.set(300_000)
	if _, ok := sink.get(media.H264, g); ok {
		t.Error("the H.264 estimate stayed after the switch to VP8")
	}
	if bps, _ := sink.get(media.VP8, g); bps != 300_000 {
		t.Errorf("VP8 estimate %d, want 300000", bps)
	}
	g.close()
	if n := sink.count(); n != 0 {
		t.Errorf("%d estimates left after close", n)
	}
	est.set(100_000) // a late callback
	if n := sink.count(); n != 0 {
		t.Errorf("a callback after close reported %d estimates", n)
	}
	g.close()
	if sink.forgot != 2 {
		t.Errorf("forgot %d times, want 2 (the codec switch, the first close)", sink.forgot)
	}
}

// TestSendSideEstimateFollowsLoss drives pion's real GCC with real
// transport-cc feedback (pion's twcc.Recorder, as a receiver builds it)
// for 800 kb/s of packets of which 30 % never arrive: the estimate
// reported to the stream falls well below the 600 kb/s start, the way the
// door's encoder must follow a lossy link. The second estimator sees the
// same packets all arrive and does not fall. Bounded by a 10 s deadline on
// the condition, not by a timing.
func TestSendSideEstimateFollowsLoss(t *testing.T) {
	const start = 600_000
	run := func(loss float64) int {
		est, err := gcc.NewSendSideBWE(gcc.SendSideBWEInitialBitrate(start), gcc.SendSideBWEPacer(gcc.NewNoOpPacer()))
		if err != nil {
			t.Fatal(err)
		}
		defer est.Close()
		sink := &fakeSink{}
		g := newSendSideEstimate(est, sink, func() media.Codec { return media.H264 })
		defer g.close()
		const ssrc, extID = 1234, 5
		w := est.AddStream(&interceptor.StreamInfo{SSRC: ssrc,
			RTPHeaderExtensions: []interceptor.RTPHeaderExtension{{URI: sdp.TransportCCURI, ID: extID}}},
			interceptor.RTPWriterFunc(func(*rtp.Header, []byte, interceptor.Attributes) (int, error) { return 0, nil }))
		rec := twcc.NewRecorder(5678)
		rng := rand.New(rand.NewPCG(1, 2))
		payload := make([]byte, 1000)
		t0 := time.Now()
		var seq uint16
		lowest := start
		for time.Since(t0) < 10*time.Second {
			// Two 1000-byte packets every 20 ms: 800 kb/s.
			for range 2 {
				h := &rtp.Header{Version: 2, SSRC: ssrc, SequenceNumber: seq, PayloadType: 102}
				ext, err := (&rtp.TransportCCExtension{TransportSequence: seq}).Marshal()
				if err != nil {
					t.Fatal(err)
				}
				if err := h.SetExtension(extID, ext); err != nil {
					t.Fatal(err)
				}
				if _, err := w.Write(h, payload, nil); err != nil {
					t.Fatal(err)
				}
				if rng.Float64() >= loss {
					rec.Record(ssrc, seq, time.Since(t0).Microseconds())
				}
				seq++
			}
			if seq%10 == 0 { // feedback every 100 ms
				if err := est.WriteRTCP(rec.BuildFeedbackPacket(), nil); err != nil {
					t.Fatal(err)
				}
			}
			if bps, ok := sink.get(media.H264, g); ok {
				lowest = min(lowest, bps)
			}
			if loss > 0 && lowest < start*3/4 {
				break
			}
			if loss == 0 && time.Since(t0) > 2*time.Second {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		return lowest
	}
	if got := run(0.3); got >= start*3/4 {
		t.Errorf("at 30 %% loss the estimate reported stayed at %d b/s or above, want below %d", got, start*3/4)
	}
	if got := run(0); got < start*3/4 {
		t.Errorf("without loss the estimate fell to %d b/s", got)
	}
}

// TestPeerEstimate: one receiver per peer; the lower of its send-side
// estimate and a fresh REMB, a stale REMB not counted against a
// send-side estimate; forgotten when both are gone.
func TestPeerEstimate(t *testing.T) {
	sink := &fakeSink{}
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	e := newPeerEstimate(sink, "peer")
	e.now = func() time.Time { return now }
	got := func() int {
		t.Helper()
		bps, ok := sink.get(media.H264, "peer")
		if !ok {
			t.Fatal("no estimate for the peer")
		}
		return bps
	}
	measured := func(want bool) {
		t.Helper()
		if got := e.measured.Load(); got != want {
			t.Errorf("measured %v, want %v", got, want)
		}
	}
	e.ReportBandwidth(media.H264, rembSource{}, 30_000) // Chromium's first REMB
	if bps := got(); bps != 30_000 {
		t.Errorf("REMB alone: %d", bps)
	}
	measured(false)
	e.ReportBandwidth(media.H264, "gcc", 600_000)
	if bps := got(); bps != 30_000 {
		t.Errorf("a fresh REMB below the send-side estimate: %d, want 30000", bps)
	}
	measured(false)
	now = now.Add(rembFresh)
	e.ReportBandwidth(media.H264, "gcc", 550_000)
	if bps := got(); bps != 550_000 {
		t.Errorf("a stale REMB beside a send-side estimate: %d, want 550000", bps)
	}
	measured(true)
	e.ReportBandwidth(media.H264, rembSource{}, 250_000)
	if bps := got(); bps != 250_000 {
		t.Errorf("a fresh lower REMB: %d, want 250000", bps)
	}
	measured(false)
	if n := sink.count(); n != 1 {
		t.Errorf("%d receivers for one peer", n)
	}
	e.ForgetBandwidth(media.H264, "gcc")
	if bps := got(); bps != 250_000 {
		t.Errorf("REMB left: %d", bps)
	}
	e.ForgetBandwidth(media.H264, rembSource{})
	if n := sink.count(); n != 0 {
		t.Errorf("%d estimates after both were forgotten", n)
	}
}

// refusingEstimator refuses every feedback packet with err.
type refusingEstimator struct {
	fakeEstimator
	err error
}

func (e *refusingEstimator) WriteRTCP([]rtcp.Packet, interceptor.Attributes) error { return e.err }

// TestTolerantEstimator: a refused feedback packet is not an error of the
// RTCP read (which would end the peer's reader); a closed estimator is.
func TestTolerantEstimator(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	e := &tolerantEstimator{BandwidthEstimator: &refusingEstimator{err: errors.New("invalid feedback")}, log: log}
	for range 3 {
		if err := e.WriteRTCP(nil, nil); err != nil {
			t.Fatalf("refused feedback: %v", err)
		}
	}
	if n := e.refused.Load(); n != 3 {
		t.Errorf("counted %d refusals, want 3", n)
	}
	closed := &tolerantEstimator{BandwidthEstimator: &refusingEstimator{err: gcc.ErrSendSideBWEClosed}, log: log}
	if err := closed.WriteRTCP(nil, nil); !errors.Is(err, gcc.ErrSendSideBWEClosed) {
		t.Errorf("closed estimator: %v, want ErrSendSideBWEClosed", err)
	}
}

// TestSendSideEstimateRereports: an estimate that does not change is
// reported again on feedback once rereport has passed, and not more
// often; nothing after close.
func TestSendSideEstimateRereports(t *testing.T) {
	sink := &countingSink{}
	est := &fakeEstimator{target: 200_000}
	g := newSendSideEstimate(est, sink, func() media.Codec { return media.H264 })
	est.set(200_000)
	if sink.reports.Load() != 1 {
		t.Fatalf("%d reports after a change", sink.reports.Load())
	}
	g.feedback() // at once: not due
	if n := sink.reports.Load(); n != 1 {
		t.Errorf("%d reports after feedback right after a report, want 1", n)
	}
	g.mu.Lock()
	g.lastAt = g.lastAt.Add(-rereport)
	g.mu.Unlock()
	g.feedback()
	if n := sink.reports.Load(); n != 2 {
		t.Errorf("%d reports after feedback a rereport later, want 2", n)
	}
	g.close()
	g.mu.Lock()
	g.lastAt = g.lastAt.Add(-rereport)
	g.mu.Unlock()
	g.feedback()
	if n := sink.reports.Load(); n != 2 {
		t.Errorf("%d reports after close, want 2", n)
	}
}

// countingSink counts reports.
type countingSink struct{ reports atomic.Int64 }

func (s *countingSink) ReportBandwidth(media.Codec, any, int) { s.reports.Add(1) }
func (s *countingSink) ForgetBandwidth(media.Codec, any)      {}
