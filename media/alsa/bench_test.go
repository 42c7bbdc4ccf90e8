package alsa

import (
	"context"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/doorbell/intercom/media"
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
