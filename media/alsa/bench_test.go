package alsa

import (
	"context"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/aec"
	"github.com/doorbell/intercom/media/aec/aectest"
)

// BenchmarkPlaybackDelay measures the playback path's delay: packets of
// the resident's audio arrive every 20 ms with up to 30 ms of jitter, and
// every 20 ms the delay a sample entering now would see (playout buffer
// plus the card's queue, snd_pcm_delay) is sampled. On the null plugin the
// card's queue is what the pacer allows (PlaybackLatency). Reported: the
// median and the maximum in ms, over 3 s per run.
func BenchmarkPlaybackDelay(b *testing.B) {
	var samples []time.Duration
	for range b.N {
		spk := NewSpeaker("bench", 0, false, nil, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- spk.Run(ctx) }()
		in := spk.NewInput()
		rng := rand.New(rand.NewPCG(3, 4))
		frame := make([]int16, media.AudioFrameSamples)
		start := time.Now()
		for i := 1; i <= 150; i++ {
			due := start.Add(time.Duration(i)*media.AudioFrame + time.Duration(rng.IntN(30))*time.Millisecond)
			time.Sleep(time.Until(due))
			in.WritePCM(frame)
			if i > 25 { // after the first half second
				samples = append(samples, spk.Delay())
			}
		}
		in.Close()
		cancel()
		<-done
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	b.ReportMetric(float64(samples[len(samples)/2])/1e6, "median-ms")
	b.ReportMetric(float64(samples[len(samples)-1])/1e6, "max-ms")
}

// fixedDelay is a device that only reports a delay: the benchmark below
// times the door's own work, not a card's.
type fixedDelay time.Duration

func (fixedDelay) transfer(context.Context, []int16) error { return nil }
func (d fixedDelay) delay() time.Duration                  { return time.Duration(d) }
func (fixedDelay) close() error                            { return nil }

// BenchmarkLiveChain is the CPU the door's live audio path costs per
// 10 ms of audio with every processing stage on (speexdsp AEC, NS, AGC and
// the high-pass): for each 20 ms, from writing the resident's frame into
// the speaker's input to the microphone frame being ready for the encoder
// (the mixer, playback gain and limiter, the reference tap, the capture
// gain, the alignment and the canceller), without the card's I/O or the
// Opus codec. The signals are the echo test's (resident talking, echo at
// -6 dB); each iteration runs 10 s (500 frames), and the median and p95
// per 10 ms over all of them are printed.
func BenchmarkLiveChain(b *testing.B) {
	const n = 10 * time.Second
	far := aectest.Speech(1, at(n), aectest.Resident, -20)
	echo := aectest.Convolve(far, aectest.Room(1, at(time.Millisecond), -6))
	toPCM := func(x []float64) []int16 {
		out := make([]int16, len(x))
		for i, v := range x {
			out[i] = int16(max(-32768, min(32767, v*32768)))
		}
		return out
	}
	farPCM, micPCM := toPCM(far), toPCM(echo)
	p, err := aec.New(aec.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	e := NewEcho(p, nil)
	spk := NewSpeaker("bench", 0, false, e, nil)
	in := spk.NewInput()
	defer in.Close()
	mic := newMicrophone(fixedDelay(30*time.Millisecond), 0, false, e)
	limit := media.NewLimiter(media.LimiterCeilingDBFS, media.LimiterLookahead, media.LimiterRelease)
	out := make([]int16, media.AudioFrameSamples)
	var per []time.Duration
	b.ResetTimer()
	for range b.N {
		for off := 0; off+media.AudioFrameSamples <= len(farPCM); off += media.AudioFrameSamples {
			start := time.Now()
			in.WritePCM(farPCM[off : off+media.AudioFrameSamples])
			spk.period(out, limit, fixedDelay(50*time.Millisecond))
			copy(mic.buf, micPCM[off:off+media.AudioFrameSamples])
			mic.process()
			per = append(per, time.Since(start)/2)
		}
	}
	b.StopTimer()
	slices.Sort(per)
	b.ReportMetric(float64(per[len(per)/2].Nanoseconds()), "ns/10ms")
	b.ReportMetric(float64(per[len(per)*95/100].Nanoseconds()), "p95-ns/10ms")
	b.ReportMetric(0, "ns/op")
}
