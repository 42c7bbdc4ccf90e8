package e2e

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/impair"
	"github.com/doorbell/intercom/internal/testenv/resident"
)

// badNetCall is how long each benchmarked call is measured after the
// resident's first decoded frame; INTERCOM_BADNET_SECONDS overrides it.
const badNetCall = 60 * time.Second

// badNetTail is the end of the call over which the settled rates are taken.
const badNetTail = 20 * time.Second

// badNetScenarios are the links of BenchmarkBadNetwork, the same in both
// directions of the door's path. The jitter link is netem's
// `delay 100ms 100ms loss 3%` (uniform 0–200 ms, reordering as netem
// does); the cap is tbf's `rate 500kbit burst 1500 latency 50ms`.
var badNetScenarios = []struct {
	name string
	link impair.Link
}{
	{"clean", impair.Link{}},
	{"loss3-jitter100", impair.Link{Loss: 0.03, Delay: 100 * time.Millisecond, Jitter: 100 * time.Millisecond, Reorder: true}},
	// The two halves of the first, apart: what loss costs without
	// jitter, and what jitter alone (without loss) costs.
	{"loss3", impair.Link{Loss: 0.03}},
	{"jitter100", impair.Link{Delay: 100 * time.Millisecond, Jitter: 100 * time.Millisecond, Reorder: true}},
	{"cap500k", impair.Link{Rate: 500_000, QueueLatency: 50 * time.Millisecond}},
	{"loss3-cap500k", impair.Link{Loss: 0.03, Rate: 500_000, QueueLatency: 50 * time.Millisecond}},
}

// BenchmarkBadNetwork (issue 16, make bench): classic calls to a
// resident (matrix-js-sdk in Chromium) whose only path to the door is
// the door's TURN allocation through an impair.Forwarder in front of
// coturn (startBadNet), under each of badNetScenarios. One system for
// every scenario; each op is one call, the link set before the press (so
// ICE and DTLS run over it too) and measured from the resident's first
// decoded frame for badNetCall. Run with -benchtime=1x (or Nx for N calls
// per scenario); every figure is the median over the calls:
//
//   - freezes/min, freeze-s/min: Chromium's own freezeCount and
//     totalFreezesDuration of the door's video (inbound-rtp) over the
//     window, per minute;
//   - noframe-s/min: our own count, seconds of the window in which the
//     resident's framesDecoded did not grow (its stats every 250 ms,
//     read once a second);
//   - conceal-%: the resident's concealedSamples / totalSamplesReceived
//     of the door's audio over the window;
//   - nack/min, pli/min: what the resident sent for the door's video;
//   - target-kbps: the door's video encoder target (/api/status), median
//     of the once-a-second samples of the last badNetTail;
//   - offered-kbps, sent-kbps: what the door sent into the forwarder and
//     what left it towards coturn over the last badNetTail (UDP payload:
//     RTP, SRTP, RTCP and TURN ChannelData, audio and video);
//   - up-drop-%, down-drop-%: the forwarder's random losses and tail
//     drops over the window, of what it received in that direction.
func BenchmarkBadNetwork(b *testing.B) {
	window := badNetCall
	if v := os.Getenv("INTERCOM_BADNET_SECONDS"); v != "" {
		s, err := strconv.Atoi(v)
		if err != nil || s < 5 {
			b.Fatalf("INTERCOM_BADNET_SECONDS=%q: want a whole number ≥ 5", v)
		}
		window = time.Duration(s) * time.Second
	}
	n := startBadNet(b, "alice")
	for i, sc := range badNetScenarios {
		b.Run(sc.name, func(b *testing.B) {
			var calls []badNetResult
			load0 := loadAvg()
			for k := range b.N {
				n.setLinks(sc.link, uint64(100*i+2*k))
				calls = append(calls, n.badNetCall(b, window))
			}
			b.StopTimer()
			reportBadNet(b, sc.name, calls, load0)
		})
	}
	n.setLinks(impair.Link{}, 0)
}

// badNetResult is one call's figures (see BenchmarkBadNetwork).
type badNetResult struct {
	window                          time.Duration
	freezes, freezeSec, noFrameSec  float64
	conceal                         float64 // share of samples
	nack, pli                       int
	target, offered, sent, received float64 // kb/s over the tail
	upDrop, downDrop                float64 // share of packets
	upLost, upDropped               uint64
	downLost, downDropped           uint64
	frames                          int
}

// badNetSample is one second's reading.
type badNetSample struct {
	at     time.Time
	st     resident.Stats
	target int
	enc    encoderStatus // the door's running video encoder
	fwd    impair.Stats
}

func (n *badNet) badNetCall(b *testing.B, window time.Duration) badNetResult {
	b.Helper()
	alice := n.residents[0]
	ctx, cancel := context.WithTimeout(context.Background(), window+3*time.Minute)
	defer cancel()
	n.waitStatus(ctx, "idle", func(s status) bool { return s.State == "idle" })
	n.press()
	if _, err := alice.WaitFor(ctx, resident.EventIncoming); err != nil {
		b.Fatal(err)
	}
	if err := alice.Answer(); err != nil {
		b.Fatal(err)
	}
	if _, err := alice.WaitFor(ctx, resident.EventFirstFrame); err != nil {
		b.Fatal(err)
	}
	sample := func() badNetSample {
		s := badNetSample{at: time.Now(), st: alice.LastStats(), fwd: n.fwd.Stats()}
		if ds, err := n.status(); err == nil {
			for _, e := range ds.Media.Encoders {
				if e.Running && strings.HasPrefix(e.Codec, "video/") {
					s.target, s.enc = e.TargetBitrate, e
				}
			}
		}
		return s
	}
	samples := []badNetSample{sample()}
	tick := time.NewTicker(time.Second)
	for time.Since(samples[0].at) < window {
		<-tick.C
		samples = append(samples, sample())
	}
	tick.Stop()
	if os.Getenv("INTERCOM_BADNET_TIMELINE") == "1" {
		logTimeline(b, samples)
	}
	if err := alice.Hangup(); err != nil {
		b.Fatal(err)
	}
	if _, err := alice.WaitFor(ctx, resident.EventHangup); err != nil {
		b.Fatal(err)
	}
	return badNetFigures(samples, badNetTail)
}

// badNetFigures turns a call's samples into its figures.
func badNetFigures(samples []badNetSample, tail time.Duration) badNetResult {
	first, last := samples[0], samples[len(samples)-1]
	r := badNetResult{window: last.at.Sub(first.at)}
	perMin := time.Minute.Seconds() / r.window.Seconds()
	r.freezes = float64(last.st.FreezeCount-first.st.FreezeCount) * perMin
	r.freezeSec = (last.st.TotalFreezesDuration - first.st.TotalFreezesDuration) * perMin
	for i := 1; i < len(samples); i++ {
		if samples[i].st.FramesDecoded <= samples[i-1].st.FramesDecoded {
			r.noFrameSec++
		}
	}
	r.noFrameSec *= perMin
	if d := last.st.TotalSamplesReceived - first.st.TotalSamplesReceived; d > 0 {
		r.conceal = float64(last.st.ConcealedSamples-first.st.ConcealedSamples) / float64(d)
	}
	r.nack = int(float64(last.st.NackCount-first.st.NackCount) * perMin)
	r.pli = int(float64(last.st.PliCount-first.st.PliCount) * perMin)
	r.frames = last.st.FramesDecoded - first.st.FramesDecoded

	// The tail: from the first sample at least tail before the last.
	from := first
	var targets []float64
	for _, s := range samples {
		if last.at.Sub(s.at) <= tail {
			if targets == nil {
				from = s
			}
			targets = append(targets, float64(s.target)/1000)
		}
	}
	secs := last.at.Sub(from.at).Seconds()
	if secs > 0 {
		r.target = medianF(targets)
		r.offered = float64(last.fwd.Up.ReceivedBytes-from.fwd.Up.ReceivedBytes) * 8 / 1000 / secs
		r.sent = float64(last.fwd.Up.ForwardedBytes-from.fwd.Up.ForwardedBytes) * 8 / 1000 / secs
		r.received = float64(last.st.VideoBytesReceived-from.st.VideoBytesReceived) * 8 / 1000 / secs
	}
	up, down := last.fwd.Up, last.fwd.Down
	fu, fd := first.fwd.Up, first.fwd.Down
	r.upLost, r.upDropped = up.Lost-fu.Lost, up.Dropped-fu.Dropped
	r.downLost, r.downDropped = down.Lost-fd.Lost, down.Dropped-fd.Dropped
	if n := up.Received - fu.Received; n > 0 {
		r.upDrop = float64(r.upLost+r.upDropped) / float64(n)
	}
	if n := down.Received - fd.Received; n > 0 {
		r.downDrop = float64(r.downLost+r.downDropped) / float64(n)
	}
	return r
}

func reportBadNet(b *testing.B, name string, calls []badNetResult, load0 string) {
	b.Helper()
	if len(calls) == 0 {
		return
	}
	pick := func(f func(badNetResult) float64) float64 {
		v := make([]float64, len(calls))
		for i, c := range calls {
			v[i] = f(c)
		}
		slices.Sort(v)
		return medianF(v)
	}
	for _, c := range calls {
		b.Logf("%s: %.0f s from the first frame: %d frames; freezes %.1f/min (%.2f s/min), no new frame in %.1f s/min; "+
			"audio concealed %.2f %%; NACK %d/min, PLI %d/min; last %v: door target %.0f kb/s, offered %.0f kb/s, "+
			"through %.0f kb/s, resident's video %.0f kb/s; forwarder up: %d lost, %d tail-dropped (%.1f %%), down: %d lost, %d tail-dropped (%.1f %%)",
			name, c.window.Seconds(), c.frames, c.freezes, c.freezeSec, c.noFrameSec, c.conceal*100, c.nack, c.pli,
			badNetTail, c.target, c.offered, c.sent, c.received, c.upLost, c.upDropped, c.upDrop*100, c.downLost, c.downDropped, c.downDrop*100)
	}
	b.Logf("%s: load average at start %s, at end %s", name, load0, loadAvg())
	b.ReportMetric(pick(func(c badNetResult) float64 { return c.freezes }), "freezes/min")
	b.ReportMetric(pick(func(c badNetResult) float64 { return c.freezeSec }), "freeze-s/min")
	b.ReportMetric(pick(func(c badNetResult) float64 { return c.noFrameSec }), "noframe-s/min")
	b.ReportMetric(pick(func(c badNetResult) float64 { return c.conceal * 100 }), "conceal-%")
	b.ReportMetric(pick(func(c badNetResult) float64 { return float64(c.nack) }), "nack/min")
	b.ReportMetric(pick(func(c badNetResult) float64 { return float64(c.pli) }), "pli/min")
	b.ReportMetric(pick(func(c badNetResult) float64 { return c.target }), "target-kbps")
	b.ReportMetric(pick(func(c badNetResult) float64 { return c.offered }), "offered-kbps")
	b.ReportMetric(pick(func(c badNetResult) float64 { return c.sent }), "sent-kbps")
	b.ReportMetric(pick(func(c badNetResult) float64 { return c.upDrop * 100 }), "up-drop-%")
	b.ReportMetric(pick(func(c badNetResult) float64 { return c.downDrop * 100 }), "down-drop-%")
	b.ReportMetric(0, "ns/op") // a call's length is set, not measured
}

// logTimeline logs a call second by second (INTERCOM_BADNET_TIMELINE=1),
// to tell what each freeze followed: the resident's decoded, keyframes
// decoded, dropped and lost frames and packets, freezes, NACK and PLI
// sent, and its jitter buffer's mean delay per frame that second; the
// door's frames, keyframes (forced by a request among them), bytes and
// target; the forwarder's random losses and tail drops towards coturn.
func logTimeline(b *testing.B, samples []badNetSample) {
	b.Helper()
	for i := 1; i < len(samples); i++ {
		p, c := samples[i-1], samples[i]
		jb := 0.0
		if n := c.st.JitterBufferEmittedCount - p.st.JitterBufferEmittedCount; n > 0 {
			jb = (c.st.JitterBufferDelay - p.st.JitterBufferDelay) / float64(n) * 1000
		}
		b.Logf("t=%2d res: dec %2d key %d drop %d lost %2d frz %d (%.2f s) nack %2d pli %d jb %3.0f ms | door: fr %2d key %d forced %d req %d %5.1f kB tgt %4d | fwd up: lost %2d tail %2d",
			i, c.st.FramesDecoded-p.st.FramesDecoded, c.st.KeyFramesDecoded-p.st.KeyFramesDecoded,
			c.st.FramesDropped-p.st.FramesDropped, c.st.VideoPacketsLost-p.st.VideoPacketsLost,
			c.st.FreezeCount-p.st.FreezeCount, c.st.TotalFreezesDuration-p.st.TotalFreezesDuration,
			c.st.NackCount-p.st.NackCount, c.st.PliCount-p.st.PliCount, jb,
			c.enc.Frames-p.enc.Frames, c.enc.KeyFrames-p.enc.KeyFrames, c.enc.ForcedKeyFrames-p.enc.ForcedKeyFrames,
			c.enc.KeyFrameRequests-p.enc.KeyFrameRequests, float64(c.enc.Bytes-p.enc.Bytes)/1000, c.target/1000,
			c.fwd.Up.Lost-p.fwd.Up.Lost, c.fwd.Up.Dropped-p.fwd.Up.Dropped)
	}
}
