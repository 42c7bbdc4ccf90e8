package aec

import (
	"slices"
	"testing"
	"time"
)

// BenchmarkFrame measures the CPU one 10 ms frame costs with every stage
// on (AEC, NS, AGC, high-pass), per library: the time from handing the
// frame's reference to Far to Near returning the cleaned microphone frame.
// Each iteration processes the double-talk scenario's 18 s (1800 frames)
// and the benchmark prints the median and p95 per frame over all of them,
// so -benchtime=1x already gives a stable figure.
func BenchmarkFrame(b *testing.B) {
	sc := scenario{delay: 60 * time.Millisecond, seed: 1}
	sig := newSource(sc.seed).delayed(sc.delay)
	mic := make([]float64, len(sig.echo))
	for i := range mic {
		mic[i] = sig.echo[i] + sig.near[i]
	}
	far, near := toPCM(sig.far), toPCM(mic)
	for _, lib := range libraries() {
		b.Run(string(lib), func(b *testing.B) {
			p, err := New(Options{Library: lib, Delay: sc.delay})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			frame := make([]int16, FrameSamples)
			var per []time.Duration
			b.ResetTimer()
			for range b.N {
				for off := 0; off+FrameSamples <= len(near); off += FrameSamples {
					copy(frame, near[off:off+FrameSamples])
					start := time.Now()
					if err := p.Far(far[off : off+FrameSamples]); err != nil {
						b.Fatal(err)
					}
					if err := p.Near(frame); err != nil {
						b.Fatal(err)
					}
					per = append(per, time.Since(start))
				}
			}
			b.StopTimer()
			slices.Sort(per)
			b.ReportMetric(float64(per[len(per)/2].Nanoseconds()), "ns/frame")
			b.ReportMetric(float64(per[len(per)*95/100].Nanoseconds()), "p95-ns/frame")
			b.ReportMetric(0, "ns/op")
		})
	}
}
