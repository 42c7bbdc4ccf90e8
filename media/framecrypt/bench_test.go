package framecrypt

import (
	"slices"
	"testing"
	"time"
)

// benchBatches and benchBatch: every op times benchBatches batches of
// benchBatch calls and reports the median batch's time per call, steadier
// than the mean on a shared machine, so `make bench`'s -benchtime=1x gives
// a usable number too.
const (
	benchBatches = 31
	benchBatch   = 64
)

func medianPerCall(b *testing.B, call func()) time.Duration {
	b.Helper()
	var per []time.Duration
	for b.Loop() {
		for range benchBatches {
			start := time.Now()
			for range benchBatch {
				call()
			}
			per = append(per, time.Since(start)/benchBatch)
		}
	}
	slices.Sort(per)
	return per[len(per)/2]
}

func report(b *testing.B, d time.Duration, size int) {
	b.ReportMetric(float64(d.Nanoseconds()), "median-ns/frame")
	if size > 0 {
		b.ReportMetric(float64(size)/d.Seconds()/1e6, "median-MB/s")
	}
}

// BenchmarkEncrypt measures one Encrypt per frame, which is the whole cost
// of encryption whatever the number of subscribers (the SFU forwards the
// same bytes to each): a 720p-sized H.264 key frame (30 KB) and delta frame
// (5 KB), a VP8 key frame of the same size, and a 100-byte Opus packet.
// "second" encrypts one second of the door's media, 30 fps video with one
// key frame and 50 Opus packets, and reports it as CPU time per second
// (cpu-ms/s; 10 is 1 % of one core).
func BenchmarkEncrypt(b *testing.B) {
	ring := ringWith(b, 3)
	cases := []struct {
		name  string
		codec Codec
		frame []byte
	}{
		{"h264-key-30KB", H264, h264Key(30000, 1)},
		{"h264-delta-5KB", H264, h264Delta(5000, 2)},
		{"vp8-key-30KB", VP8, vp8Frame(true, 30000, 3)},
		{"opus-100B", Opus, opusFrame(100, 4)},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			enc := NewEncryptor(ring, tc.codec)
			d := medianPerCall(b, func() {
				if _, err := enc.Encrypt(tc.frame); err != nil {
					b.Fatal(err)
				}
			})
			report(b, d, len(tc.frame))
		})
	}
	b.Run("second", func(b *testing.B) {
		video, audio := NewEncryptor(ring, H264), NewEncryptor(ring, Opus)
		key, delta, opus := cases[0].frame, cases[1].frame, cases[3].frame
		d := medianPerCall(b, func() {
			must := func(_ []byte, err error) {
				if err != nil {
					b.Fatal(err)
				}
			}
			must(video.Encrypt(key))
			for range 29 {
				must(video.Encrypt(delta))
			}
			for range 50 {
				must(audio.Encrypt(opus))
			}
		})
		b.ReportMetric(float64(d.Microseconds())/1e3, "cpu-ms/s")
	})
}

// BenchmarkDecrypt measures decrypting a resident's 100-byte Opus packet
// (the door decrypts every resident it plays) and a 5 KB H.264 delta frame.
func BenchmarkDecrypt(b *testing.B) {
	ring := ringWith(b, 3)
	for _, tc := range []struct {
		name  string
		codec Codec
		frame []byte
	}{
		{"opus-100B", Opus, opusFrame(100, 4)},
		{"h264-delta-5KB", H264, h264Delta(5000, 2)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			enc, err := NewEncryptor(ring, tc.codec).Encrypt(tc.frame)
			if err != nil {
				b.Fatal(err)
			}
			dec := NewDecryptor(ring, tc.codec)
			d := medianPerCall(b, func() {
				if _, err := dec.Decrypt(enc); err != nil {
					b.Fatal(err)
				}
			})
			report(b, d, len(tc.frame))
		})
	}
}
