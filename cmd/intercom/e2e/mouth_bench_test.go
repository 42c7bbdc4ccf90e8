package e2e

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/dendrite"
	"github.com/doorbell/intercom/internal/testenv/householdpeer"
	"github.com/doorbell/intercom/internal/testenv/resident"
	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/codec"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	pmedia "github.com/pion/webrtc/v4/pkg/media"
)

// mouthCall is how long each benchmarked call lasts after the answer.
const mouthCall = 20 * time.Second

// mouthDoorAudio gives the intercom a speaker on real alsa-lib: the
// "null" PCM of the system's configuration (it discards what it is given
// and, having no clock, is kept to real time by media/alsa's pacer). The
// microphone's capture PCM is configured but not opened: with
// INTERCOM_TEST_BURSTS=1 the microphone is media.Bursts, through the
// door's processing (echo canceller, noise suppression, gain control,
// high-pass: every stage on, the default).
const mouthDoorAudio = "hardware:\n  audio: alsa\naudio:\n  capture: \"null\"\n  playback: \"null\"\n"

// BenchmarkMouthToEar measures mouth-to-ear latency both ways on each call
// path with timestamped tone bursts (media/burst.go): burst k starts at
// Unix k·1000 ms (the door's) or k·1000 + 500 ms (a resident's) and its
// frequency tells k modulo 4, so whoever hears an onset knows when it was
// "spoken". Every process runs on this machine and reads one wall clock.
// Each op is one call of mouthCall after the answer, on a system started
// for the sub-benchmark (run with -benchtime=1x; -count=N for N systems).
//
// Door → resident (down-*): the door's microphone is media.Bursts, framed
// like a sound card's (a 20 ms frame is handed over when its last sample
// is "captured"), through the door's processing and Opus encoder.
//   - classic, matrixrtc: alice's page (matrix-js-sdk, or livekit-client
//     through livekit-server) finds the onsets in the remote audio track as
//     its WebAudio renders it (an AudioWorklet; the track also plays in a
//     media element). The figure stops at that render (down-p50-ms);
//     down-out-p50-ms adds the output latency Chromium estimates
//     (getOutputTimestamp).
//   - household: the pion device decodes the door's Opus with libopus as
//     packets arrive; the figure stops at the onset's packet's arrival on
//     the RTP timeline (no jitter buffer: a lower bound of a tablet's).
//
// Resident → door (up-*): the resident's microphone sends bursts (the
// page's getUserMedia answers with a WebAudio burst track; the household
// device sends media.Bursts through the door's Opus encoder), and the
// door's speaker finds the onsets in each period it hands to alsa-lib. The
// figure stops at that handing over plus the device's delay
// (snd_pcm_delay; 0 on the clockless null PCM, where a real card adds its
// buffer of up to 60 ms).
//
// It prints p50 and p95 per direction, onsets attributed and refused, and
// where the time goes: the browser's audio jitter buffer (NetEq, mean per
// sample over the call), the door's playout buffer at each onset, and
// Chromium's output latency.
func BenchmarkMouthToEar(b *testing.B) {
	b.Setenv("INTERCOM_TEST_BURSTS", "1")
	b.Run("classic", benchMouthClassic)
	b.Run("household", benchMouthHousehold)
	b.Run("matrixrtc", benchMouthRTC)
}

// mouthCallResult is what one call measured.
type mouthCallResult struct {
	down        []resident.Burst // door → resident, onsets in the call's window
	up          []doorBurst      // resident → door
	jitterMs    float64          // the page's audio jitter buffer, mean (0: none)
	outLatency  float64          // the page's AudioContext.outputLatency, ms
	loadAverage string
}

func benchMouthClassic(b *testing.B) {
	e := startSystemWith(b, systemOptions{Config: mouthDoorAudio, Resident: resident.Options{Bursts: true}}, "alice")
	alice := e.residents[0]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var calls []mouthCallResult
	b.ResetTimer()
	for range b.N {
		e.waitStatus(ctx, "idle", func(s status) bool { return s.State == "idle" })
		e.press()
		if _, err := alice.WaitFor(ctx, resident.EventIncoming); err != nil {
			b.Fatal(err)
		}
		if err := alice.Answer(); err != nil {
			b.Fatal(err)
		}
		if _, err := alice.WaitFor(ctx, resident.EventFirstFrame); err != nil {
			b.Fatal(err)
		}
		alice.Bursts()
		first := alice.LastStats()
		from := time.Now()
		time.Sleep(mouthCall)
		to := time.Now()
		last := alice.LastStats()
		r := mouthCallResult{down: inWindow(alice.Bursts(), from, to), up: doorBursts(e.log.String(), from, to), loadAverage: loadAvg()}
		if n := last.AudioJitterBufferEmittedCount - first.AudioJitterBufferEmittedCount; n > 0 {
			r.jitterMs = (last.AudioJitterBufferDelay - first.AudioJitterBufferDelay) / float64(n) * 1000
		}
		calls = append(calls, r)
		if err := alice.Hangup(); err != nil {
			b.Fatal(err)
		}
		if _, err := alice.WaitFor(ctx, resident.EventHangup); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportMouth(b, calls)
}

func benchMouthRTC(b *testing.B) {
	s := startRTCSystemOpts(b, rtcOptions{
		Paths:    map[string]string{"alice": "[matrixrtc]", "bob": "[classic]"},
		ExtraFor: func(*dendrite.Server) string { return mouthDoorAudio },
		Bursts:   true,
	})
	alice := s.residents[0]
	room := roomOf(b, alice)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var calls []mouthCallResult
	b.ResetTimer()
	for range b.N {
		s.waitStatus(ctx, "idle", func(st status) bool { return st.State == "idle" })
		pressed := s.press()
		waitEvent(ctx, b, alice, resident.EventRTCRing, pressed, func(ev resident.Event) bool { return ev.Str("roomId") == room })
		if _, err := alice.RTCJoin(ctx, room, ""); err != nil {
			b.Fatal(err)
		}
		waitEvent(ctx, b, alice, resident.EventRTCFirstFrame, pressed, func(resident.Event) bool { return true })
		alice.Bursts()
		first := alice.LastRTCStats()
		from := time.Now()
		time.Sleep(mouthCall)
		to := time.Now()
		last := alice.LastRTCStats()
		r := mouthCallResult{down: inWindow(alice.Bursts(), from, to), up: doorBursts(s.log.String(), from, to), loadAverage: loadAvg()}
		if n := last.AudioJitterBufferEmittedCount - first.AudioJitterBufferEmittedCount; n > 0 {
			r.jitterMs = (last.AudioJitterBufferDelay - first.AudioJitterBufferDelay) / float64(n) * 1000
		}
		calls = append(calls, r)
		left := time.Now()
		if err := alice.RTCLeave(ctx, room); err != nil {
			b.Fatal(err)
		}
		s.waitLeft(ctx, b, alice, room, left)
	}
	b.StopTimer()
	reportMouth(b, calls)
}

func benchMouthHousehold(b *testing.B) {
	if testing.Short() {
		b.Skip("end-to-end benchmark: needs Dendrite")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	sys := startHousehold(ctx, b, []string{"alice"}, []string{"carol"}, mouthDoorAudio)
	var calls []mouthCallResult
	b.ResetTimer()
	for range b.N {
		mic, err := startBurstMicrophone(ctx)
		if err != nil {
			b.Fatal(err)
		}
		sink := &burstSink{}
		dev := sys.deviceOpts("alice", householdpeer.Options{OnAudio: sink.track, Audio: mic.track})
		sys.e.householdStatus(ctx, "alice's membership read", func(s householdStatus) bool { return len(s.Matrix.Household.Members) == 1 })
		sys.e.press()
		sys.waitFrames("alice", dev, 1)
		from := time.Now()
		time.Sleep(mouthCall)
		to := time.Now()
		r := mouthCallResult{down: inWindow(sink.close(), from, to), up: doorBursts(sys.e.log.String(), from, to), loadAverage: loadAvg()}
		calls = append(calls, r)
		if err := dev.Leave(ctx); err != nil {
			b.Fatal(err)
		}
		dev.Close()
		mic.stop()
		sys.e.householdStatus(ctx, "intercom left", func(s householdStatus) bool {
			return s.Matrix.Household.Phase == "idle" && !s.Matrix.Household.Joined
		})
	}
	b.StopTimer()
	reportMouth(b, calls)
}

// inWindow keeps the onsets heard between from and to.
func inWindow(bs []resident.Burst, from, to time.Time) []resident.Burst {
	var out []resident.Burst
	for _, x := range bs {
		if x.AtMs >= float64(from.UnixMilli()) && x.AtMs <= float64(to.UnixMilli()) {
			out = append(out, x)
		}
	}
	return out
}

// doorBurst is one "burst heard" line of the intercom's log: an onset of a
// resident's burst in what its speaker handed to alsa-lib.
type doorBurst struct {
	K         int64
	Refused   string
	Handed    time.Time     // the onset's sample handed to alsa-lib
	Delay     time.Duration // snd_pcm_delay then
	Playout   time.Duration // the speaker's playout buffers then
	LatencyMs float64       // burst start → handed + delay
}

// doorBursts reads the onsets the intercom logged between from and to.
func doorBursts(log string, from, to time.Time) []doorBurst {
	var out []doorBurst
	for _, line := range strings.Split(log, "\n") {
		kv := parseLogLine(line)
		if kv == nil || kv["msg"] != "burst heard" {
			continue
		}
		us := func(k string) int64 {
			v, _ := strconv.ParseInt(kv[k], 10, 64)
			return v
		}
		d := doorBurst{Refused: kv["refused"], Handed: time.UnixMicro(us("handed_unix_us")),
			Delay: time.Duration(us("delay_us")) * time.Microsecond, Playout: time.Duration(us("playout_us")) * time.Microsecond,
			LatencyMs: float64(us("latency_us")) / 1000}
		d.K, _ = strconv.ParseInt(kv["k"], 10, 64)
		if d.Handed.Before(from) || d.Handed.After(to) {
			continue
		}
		out = append(out, d)
	}
	return out
}

// reportMouth reports both directions over every call.
func reportMouth(b *testing.B, calls []mouthCallResult) {
	b.Helper()
	var down, downOut, up, playout, jitter, outLat []float64
	downRefused, upRefused := map[string]int{}, map[string]int{}
	downSeen, upSeen := 0, 0
	for i, c := range calls {
		var cd, cu []float64
		for _, x := range c.down {
			downSeen++
			if x.Refused != "" {
				downRefused[x.Refused]++
				continue
			}
			cd = append(cd, x.LatencyMs)
			if x.OutMs > 0 {
				downOut = append(downOut, x.OutMs-x.StartMs)
				outLat = append(outLat, x.OutputLatency*1000)
			}
		}
		for _, x := range c.up {
			upSeen++
			if x.Refused != "" {
				upRefused[x.Refused]++
				continue
			}
			cu = append(cu, x.LatencyMs)
			playout = append(playout, float64(x.Playout)/float64(time.Millisecond))
		}
		down, up = append(down, cd...), append(up, cu...)
		if c.jitterMs > 0 {
			jitter = append(jitter, c.jitterMs)
		}
		b.Logf("call %d: door → resident %d onsets (p50 %.1f, p95 %.1f ms), resident → door %d onsets (p50 %.1f, p95 %.1f ms), audio jitter buffer %.1f ms; load average %s",
			i+1, len(cd), percentile(cd, 0.5), percentile(cd, 0.95), len(cu), percentile(cu, 0.5), percentile(cu, 0.95), c.jitterMs, c.loadAverage)
	}
	if len(down) == 0 || len(up) == 0 {
		b.Fatalf("onsets attributed: door → resident %d (refused %v), resident → door %d (refused %v)", len(down), downRefused, len(up), upRefused)
	}
	b.ReportMetric(percentile(down, 0.5), "down-p50-ms")
	b.ReportMetric(percentile(down, 0.95), "down-p95-ms")
	b.ReportMetric(float64(len(down)), "down-bursts")
	b.ReportMetric(float64(downSeen-len(down)), "down-refused")
	b.ReportMetric(percentile(up, 0.5), "up-p50-ms")
	b.ReportMetric(percentile(up, 0.95), "up-p95-ms")
	b.ReportMetric(float64(len(up)), "up-bursts")
	b.ReportMetric(float64(upSeen-len(up)), "up-refused")
	b.ReportMetric(percentile(playout, 0.5), "door-playout-ms")
	if len(downOut) > 0 {
		b.ReportMetric(percentile(downOut, 0.5), "down-out-p50-ms")
		b.ReportMetric(percentile(outLat, 0.5), "output-latency-ms")
	}
	if len(jitter) > 0 {
		b.ReportMetric(percentile(jitter, 0.5), "audio-jitterbuffer-ms")
	}
	b.ReportMetric(0, "ns/op")
	b.Logf("door → resident: %d onsets attributed (min %.1f, p50 %.1f, p95 %.1f, max %.1f ms), refused %v; resident → door: %d (min %.1f, p50 %.1f, p95 %.1f, max %.1f ms), refused %v; door's playout buffer at the onsets p50 %.1f ms",
		len(down), percentile(down, 0), percentile(down, 0.5), percentile(down, 0.95), percentile(down, 1), downRefused,
		len(up), percentile(up, 0), percentile(up, 0.5), percentile(up, 0.95), percentile(up, 1), upRefused, percentile(playout, 0.5))
}

// burstMicrophone is a household device's microphone: media.Bursts of a
// resident's phase through the door's own Opus encoder, written to a track
// every 20 ms.
type burstMicrophone struct {
	track  *webrtc.TrackLocalStaticSample
	cancel context.CancelFunc
	done   chan struct{}
}

func startBurstMicrophone(ctx context.Context) (*burstMicrophone, error) {
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "household-mic")
	if err != nil {
		return nil, err
	}
	enc, err := codec.NewOpus(media.AudioEncoderConfig{Bitrate: 32_000})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	m := &burstMicrophone{track: track, cancel: cancel, done: make(chan struct{})}
	src := media.NewBursts(media.BurstPhaseResident)
	go func() {
		defer close(m.done)
		defer enc.Close()
		defer src.Close()
		for {
			pcm, err := src.ReadAudio(ctx)
			if err != nil {
				return
			}
			pkt, err := enc.Encode(pcm)
			if err != nil {
				return
			}
			if err := track.WriteSample(pmedia.Sample{Data: pkt, Duration: media.AudioFrame}); err != nil && !errors.Is(err, context.Canceled) {
				return
			}
		}
	}()
	return m, nil
}

func (m *burstMicrophone) stop() {
	m.cancel()
	<-m.done
}

// burstSink decodes the door's Opus as a household device receives it and
// finds the bursts' onsets. Each packet's audio is placed on the RTP
// timeline at the earliest arrival seen (capture → arrival of a packet
// that was not held up on the way); the decode itself takes ~15 µs.
type burstSink struct {
	mu     sync.Mutex
	onsets []resident.Burst
	closed bool
}

// track is householdpeer.Options.OnAudio.
func (s *burstSink) track() func(*rtp.Packet, time.Time) {
	dec, err := codec.NewOpusDecoder()
	det := media.NewBurstDetector(0)
	pcm := make([]int16, 5760)
	var first uint32
	var started bool
	var offset time.Duration // min(arrival − RTP time)
	base := time.Now()
	return func(p *rtp.Packet, arrived time.Time) {
		if err != nil {
			return
		}
		if !started {
			first, started = p.Timestamp, true
		}
		rtpAt := time.Duration(int32(p.Timestamp-first)) * time.Second / 48000
		if off := arrived.Sub(base) - rtpAt; offset == 0 || off < offset {
			offset = off
		}
		n, derr := dec.DecodeToInt16(p.Payload, pcm)
		if derr != nil {
			return
		}
		for _, o := range det.Write(pcm[:n], base.Add(rtpAt+offset)) {
			b := resident.Burst{AtMs: unixMs(o.At), K: o.K, Refused: o.Refused, Freq: o.Freq}
			if o.Refused == "" {
				b.StartMs, b.LatencyMs = unixMs(o.Start), float64(o.Latency)/float64(time.Millisecond)
			}
			s.mu.Lock()
			if !s.closed {
				s.onsets = append(s.onsets, b)
			}
			s.mu.Unlock()
		}
	}
}

func unixMs(t time.Time) float64 { return float64(t.UnixNano()) / 1e6 }

// close returns the onsets found and stops taking more.
func (s *burstSink) close() []resident.Burst {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return s.onsets
}

// TestMouthToEarClassic proves the mouth-to-ear pieces work end to end in
// one short classic call (BenchmarkMouthToEar measures): the door's
// bursts reach alice's page and are attributed, hers reach the door's
// speaker and are attributed, each with a latency a conversation could
// have.
func TestMouthToEarClassic(t *testing.T) {
	t.Setenv("INTERCOM_TEST_BURSTS", "1")
	e := startSystemWith(t, systemOptions{Config: mouthDoorAudio, Resident: resident.Options{Bursts: true}}, "alice")
	alice := e.residents[0]
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	e.press()
	if _, err := alice.WaitFor(ctx, resident.EventIncoming); err != nil {
		t.Fatal(err)
	}
	if err := alice.Answer(); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.WaitFor(ctx, resident.EventFirstFrame); err != nil {
		t.Fatal(err)
	}
	from := time.Now()
	time.Sleep(5 * time.Second)
	to := time.Now()
	down, up := inWindow(alice.Bursts(), from, to), doorBursts(e.log.String(), from, to)
	check := func(dir string, lat []float64, refused int) {
		t.Logf("%s: %d bursts attributed %v ms, %d refused", dir, len(lat), lat, refused)
		// One burst a second; the first after the answer may be missed
		// while a side's buffers fill.
		if len(lat) < 3 {
			t.Errorf("%s: %d bursts attributed in 5 s, want at least 3", dir, len(lat))
		}
		for _, l := range lat {
			if l < 20 || l > 500 {
				t.Errorf("%s: latency %.1f ms, want 20–500", dir, l)
			}
		}
	}
	var dl, ul []float64
	var dr, ur int
	for _, x := range down {
		if x.Refused != "" {
			dr++
		} else {
			dl = append(dl, x.LatencyMs)
		}
	}
	for _, x := range up {
		if x.Refused != "" {
			ur++
		} else {
			ul = append(ul, x.LatencyMs)
		}
	}
	check("door → alice", dl, dr)
	check("alice → door", ul, ur)
}
