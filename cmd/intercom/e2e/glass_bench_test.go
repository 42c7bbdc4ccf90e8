package e2e

import (
	"context"
	"fmt"
	"image"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/householdpeer"
	"github.com/doorbell/intercom/internal/testenv/resident"
	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/codec"
	"github.com/pion/webrtc/v4"
)

// glassCall is how long each benchmarked call lasts after the answer.
const glassCall = 20 * time.Second

// BenchmarkGlassToGlass measures capture → displayed latency per frame on
// each call path, from the intercom's test pattern (its glass code carries
// the capture time, media/glasscode.go) to what the far end shows. Every
// process runs on this machine, so the door's capture time and the
// receiver's display time are read from one wall clock. Each op is one
// call of glassCall after the answer, on a system started for the
// sub-benchmark (run with -benchtime=1x; -count=N for N systems):
//
//   - classic: alice (matrix-js-sdk in Chromium) answers a classic call;
//     her page reads the code from every frame its <video> presents
//     (requestVideoFrameCallback: expected display time). A frame counts
//     only if the code read belongs to the frame the callback described
//     (its RTP timestamp, resident.GlassMatched): a callback that runs
//     late may find a newer picture in the element.
//   - matrixrtc: alice joins the MatrixRTC call through livekit-server
//     (livekit-client in the same page), read the same way.
//   - household: a famedly-style household device (pion; there is no
//     browser household client here) takes the mesh call, and the
//     benchmark decodes every frame it receives with the door's own
//     decoders and reads its code. Its latency is capture → the frame's
//     last packet at the device (the door's share and the loopback; no
//     jitter buffer, decoder or display), with the decode time beside it:
//     a lower bound of what a household tablet shows.
//
// It prints p50 and p95 of the latency, frames read and refused, and for
// the browser paths where the time goes: capture → the frame's last
// packet received (Chromium's receiveTime), received → displayed, and the
// page's own mean jitter buffer delay, first packet → decoded and decode
// time per frame (webrtc-stats over the call).
func BenchmarkGlassToGlass(b *testing.B) {
	b.Run("classic", benchGlassClassic)
	b.Run("household", benchGlassHousehold)
	b.Run("matrixrtc", benchGlassRTC)
}

func benchGlassClassic(b *testing.B) {
	e := startSystem(b, "alice")
	alice := e.residents[0]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var all []resident.Glass
	var timings []timingDelta
	load0 := loadAvg()
	b.ResetTimer()
	for range b.N {
		e.waitStatus(ctx, "idle", func(s status) bool { return s.State == "idle" })
		e.press()
		if _, err := alice.WaitFor(ctx, resident.EventIncoming); err != nil {
			b.Fatal(err)
		}
		alice.Glass() // nothing from before the answer
		if err := alice.Answer(); err != nil {
			b.Fatal(err)
		}
		if _, err := alice.WaitFor(ctx, resident.EventFirstFrame); err != nil {
			b.Fatal(err)
		}
		first := alice.LastStats()
		time.Sleep(glassCall)
		last := alice.LastStats()
		all = append(all, alice.Glass()...)
		td := statsDelta(first.JitterBufferDelay, last.JitterBufferDelay, first.JitterBufferEmittedCount, last.JitterBufferEmittedCount,
			first.TotalProcessingDelay, last.TotalProcessingDelay, first.TotalDecodeTime, last.TotalDecodeTime, first.FramesDecoded, last.FramesDecoded)
		if n := last.AudioJitterBufferEmittedCount - first.AudioJitterBufferEmittedCount; n > 0 {
			td.audioJitterBuffer = (last.AudioJitterBufferDelay - first.AudioJitterBufferDelay) / float64(n) * 1000
		}
		timings = append(timings, td)
		if err := alice.Hangup(); err != nil {
			b.Fatal(err)
		}
		if _, err := alice.WaitFor(ctx, resident.EventHangup); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportGlass(b, all, timings, load0, true)
}

func benchGlassRTC(b *testing.B) {
	s := startRTCSystemOpts(b, rtcOptions{Paths: map[string]string{"alice": "[matrixrtc]", "bob": "[classic]"}})
	alice := s.residents[0]
	room := roomOf(b, alice)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var all []resident.Glass
	var timings []timingDelta
	load0 := loadAvg()
	b.ResetTimer()
	for range b.N {
		s.waitStatus(ctx, "idle", func(st status) bool { return st.State == "idle" })
		pressed := s.press()
		waitEvent(ctx, b, alice, resident.EventRTCRing, pressed, func(ev resident.Event) bool { return ev.Str("roomId") == room })
		alice.Glass()
		if _, err := alice.RTCJoin(ctx, room, ""); err != nil {
			b.Fatal(err)
		}
		waitEvent(ctx, b, alice, resident.EventRTCFirstFrame, pressed, func(resident.Event) bool { return true })
		first := alice.LastRTCStats()
		time.Sleep(glassCall)
		last := alice.LastRTCStats()
		all = append(all, alice.Glass()...)
		timings = append(timings, statsDelta(first.JitterBufferDelay, last.JitterBufferDelay, first.JitterBufferEmittedCount, last.JitterBufferEmittedCount,
			first.TotalProcessingDelay, last.TotalProcessingDelay, first.TotalDecodeTime, last.TotalDecodeTime, first.FramesDecoded, last.FramesDecoded))
		left := time.Now()
		if err := alice.RTCLeave(ctx, room); err != nil {
			b.Fatal(err)
		}
		s.waitLeft(ctx, b, alice, room, left)
	}
	b.StopTimer()
	reportGlass(b, all, timings, load0, true)
}

func benchGlassHousehold(b *testing.B) {
	if testing.Short() {
		b.Skip("end-to-end benchmark: needs Dendrite")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	sys := startHousehold(ctx, b, []string{"alice"}, []string{"carol"}, "")
	var all []resident.Glass
	var decode []float64
	load0 := loadAvg()
	b.ResetTimer()
	for range b.N {
		sink := &decodingSink{}
		dev := sys.deviceOpts("alice", householdpeer.Options{OnVideo: sink.track})
		sys.e.householdStatus(ctx, "alice's membership read", func(s householdStatus) bool { return len(s.Matrix.Household.Members) == 1 })
		sys.e.press()
		sys.waitFrames("alice", dev, 1)
		time.Sleep(glassCall)
		if err := dev.Leave(ctx); err != nil {
			b.Fatal(err)
		}
		dev.Close()
		all = append(all, sink.close()...)
		decode = append(decode, sink.decode...)
		sys.e.householdStatus(ctx, "intercom left", func(s householdStatus) bool {
			return s.Matrix.Household.Phase == "idle" && !s.Matrix.Household.Joined
		})
	}
	b.StopTimer()
	b.ReportMetric(percentile(decode, 0.5), "decode-ms")
	reportGlass(b, all, nil, load0, false)
}

// decodingSink decodes what a household device receives, per track, and
// reads each picture's glass code; it records capture → the frame's last
// packet at the device, and how long each decode took.
type decodingSink struct {
	mu     sync.Mutex
	glass  []resident.Glass
	decode []float64 // ms per frame
	closed bool
	decs   []func()
}

type frameDecoder interface {
	Decode([]byte) (*image.YCbCr, error)
	Close()
}

// track is householdpeer.Options.OnVideo.
func (s *decodingSink) track(mime string) func([]byte, time.Time) {
	var dec frameDecoder
	var err error
	switch mime {
	case webrtc.MimeTypeH264:
		dec, err = codec.NewH264Decoder()
	case webrtc.MimeTypeVP8:
		dec, err = codec.NewVP8Decoder(640, 480)
	default:
		err = fmt.Errorf("no decoder for %s", mime)
	}
	var mu sync.Mutex // the decoder, between this track's goroutine and close
	s.mu.Lock()
	s.decs = append(s.decs, func() {
		mu.Lock()
		defer mu.Unlock()
		if dec != nil {
			dec.Close()
			dec = nil
		}
	})
	s.mu.Unlock()
	return func(frame []byte, arrived time.Time) {
		g := resident.Glass{Reason: "decode"}
		var took time.Duration
		mu.Lock()
		if dec != nil && err == nil {
			t0 := time.Now()
			img, derr := dec.Decode(frame)
			took = time.Since(t0)
			if derr == nil {
				g.Width, g.Height = img.Rect.Dx(), img.Rect.Dy()
				if ms, rerr := media.ReadGlassCode(img); rerr == nil {
					// Capture → the frame's last packet at the device:
					// the door's share and the loopback.
					g = resident.Glass{OK: true, Width: g.Width, Height: g.Height}
					g.LatencyMs = float64(media.GlassLatency(ms, arrived)) / float64(time.Millisecond)
				} else {
					g.Reason = rerr.Error()
				}
			}
		}
		mu.Unlock()
		s.mu.Lock()
		if !s.closed {
			s.glass = append(s.glass, g)
			if took > 0 {
				s.decode = append(s.decode, float64(took)/float64(time.Millisecond))
			}
		}
		s.mu.Unlock()
	}
}

// close frees the decoders and returns what was read.
func (s *decodingSink) close() []resident.Glass {
	s.mu.Lock()
	s.closed = true
	decs := s.decs
	g := s.glass
	s.mu.Unlock()
	for _, f := range decs {
		f()
	}
	return g
}

// timingDelta is a call's receive-side means per frame, from the page's
// cumulative webrtc-stats (ms).
type timingDelta struct{ jitterBuffer, processing, decode, audioJitterBuffer float64 }

func statsDelta(jb0, jb1 float64, em0, em1 int, proc0, proc1, dec0, dec1 float64, fr0, fr1 int) timingDelta {
	var d timingDelta
	if n := em1 - em0; n > 0 {
		d.jitterBuffer = (jb1 - jb0) / float64(n) * 1000
	}
	if n := fr1 - fr0; n > 0 {
		d.processing = (proc1 - proc0) / float64(n) * 1000
		d.decode = (dec1 - dec0) / float64(n) * 1000
	}
	return d
}

// reportGlass reports the latencies of every frame read. With matchRTP
// (the browser paths) a frame counts only if its code matches the RTP
// timestamp of the frame the page's callback described (within 10 ms):
// the others were a newer picture than the one whose display time the
// callback gave.
func reportGlass(b *testing.B, all []resident.Glass, timings []timingDelta, load0 string, matchRTP bool) {
	b.Helper()
	var lat, toRecv, recvToShow []float64
	reasons := map[string]int{}
	dropped, late := 0, 0
	use := all
	if matchRTP {
		streams := map[string][]resident.Glass{}
		var keys []string
		for _, g := range all {
			k := g.CallID + "|" + g.RoomID + "|" + g.Participant
			if _, ok := streams[k]; !ok {
				keys = append(keys, k)
			}
			streams[k] = append(streams[k], g)
		}
		use = nil
		for _, k := range keys {
			matched, mismatched := resident.GlassMatched(streams[k], 10)
			use = append(use, matched...)
			reasons["not the frame described"] += len(mismatched)
			for _, g := range streams[k] {
				if !g.OK {
					use = append(use, g) // counted below
				} else if g.RTP < 0 {
					reasons["no rtp timestamp"]++
				}
			}
		}
	}
	for _, g := range all {
		dropped += g.Dropped
		if g.LateMs > 1000.0/60 {
			late++
		}
	}
	negative := 0
	for _, g := range use {
		if !g.OK {
			reasons[g.Reason]++
			continue
		}
		if g.ReceiveMs > 0 && g.DisplayMs < g.ReceiveMs {
			// Chromium's expected display time before the frame's own
			// last packet (both from the page's clock): the metadata
			// cannot be right for that frame.
			reasons["display time before receipt"]++
			continue
		}
		if g.LatencyMs < 0 {
			negative++
		}
		lat = append(lat, g.LatencyMs)
		if g.ReceiveMs > 0 {
			toRecv = append(toRecv, g.ReceiveMs-g.CaptureMs)
			recvToShow = append(recvToShow, g.DisplayMs-g.ReceiveMs)
		}
	}
	if len(lat) == 0 {
		b.Fatalf("no frame's glass code read (%d frames: %v)", len(all), reasons)
	}
	b.ReportMetric(percentile(lat, 0.5), "p50-ms")
	b.ReportMetric(percentile(lat, 0.95), "p95-ms")
	b.ReportMetric(float64(len(lat)), "frames-read")
	b.ReportMetric(float64(len(all)-len(lat)), "frames-refused")
	for r, n := range reasons {
		if n == 0 {
			delete(reasons, r)
		}
	}
	if len(toRecv) > 0 {
		b.ReportMetric(percentile(toRecv, 0.5), "to-received-p50-ms")
		b.ReportMetric(percentile(recvToShow, 0.5), "received-to-shown-p50-ms")
	}
	if len(timings) > 0 {
		var jb, proc, dec, ajb []float64
		for _, t := range timings {
			jb, proc, dec = append(jb, t.jitterBuffer), append(proc, t.processing), append(dec, t.decode)
			if t.audioJitterBuffer > 0 {
				ajb = append(ajb, t.audioJitterBuffer)
			}
		}
		b.ReportMetric(percentile(jb, 0.5), "jitterbuffer-ms")
		b.ReportMetric(percentile(proc, 0.5), "packet-to-decoded-ms")
		b.ReportMetric(percentile(dec, 0.5), "decode-ms")
		if len(ajb) > 0 {
			b.ReportMetric(percentile(ajb, 0.5), "audio-jitterbuffer-ms")
		}
	}
	b.ReportMetric(0, "ns/op")
	b.Logf("%d frames: %d read (min %.1f, p50 %.1f, p95 %.1f, max %.1f ms; %d below 0), refused %v, dropped before the page saw them %d, callbacks more than a refresh late %d; load average %s → %s",
		len(all), len(lat), percentile(lat, 0), percentile(lat, 0.5), percentile(lat, 0.95), percentile(lat, 1), negative, reasons, dropped, late, load0, loadAvg())
}

// percentile is the q-quantile of v (nearest rank), 0 for none.
func percentile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(q*float64(len(s)-1) + 0.5)
	return s[min(max(i, 0), len(s)-1)]
}

// loadAvg is the first three fields of /proc/loadavg ("" where there is none).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
