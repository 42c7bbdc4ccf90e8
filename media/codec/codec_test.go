package codec

import (
	"bytes"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/doorbell/intercom/media"
)

var vga = media.VideoEncoderConfig{
	VideoFormat:      media.VideoFormat{Width: 640, Height: 480, FPS: 15},
	Bitrate:          600_000,
	KeyFrameInterval: 3 * time.Second,
}

// nalTypes lists the NAL unit types of an Annex B access unit.
func nalTypes(b []byte) (types []byte, sps []byte) {
	for i := 0; i+3 < len(b); i++ {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			t := b[i+3] & 0x1f
			types = append(types, t)
			if t == 7 && sps == nil && i+6 < len(b) {
				sps = b[i+4 : i+7]
			}
			i += 2
		}
	}
	return types, sps
}

func TestVideoEncoders(t *testing.T) {
	for _, tc := range []struct {
		codec media.Codec
		new   func(media.VideoEncoderConfig) (media.VideoEncoder, error)
	}{
		{media.H264, NewH264},
		{media.VP8, NewVP8},
	} {
		t.Run(string(tc.codec), func(t *testing.T) {
			pat, err := media.NewTestPattern(vga.VideoFormat)
			if err != nil {
				t.Fatal(err)
			}
			enc, err := tc.new(vga)
			if err != nil {
				t.Fatal(err)
			}
			if got := Live(tc.codec); got != 1 {
				t.Errorf("Live(%s) = %d, want 1", tc.codec, got)
			}
			start := time.Now()
			var keys []int
			for i := 0; i < 20; i++ {
				now := start.Add(time.Duration(i) * vga.Interval())
				data, err := enc.Encode(pat.Render(now).Image, i == 10)
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if len(data) == 0 {
					continue
				}
				if media.IsKeyFrame(tc.codec, data) {
					keys = append(keys, i)
				}
				if tc.codec == media.H264 && i == 0 {
					types, sps := nalTypes(data)
					t.Logf("first access unit: %d bytes, NAL types %v, SPS %x", len(data), types, sps)
					if sps == nil || sps[0] != 66 {
						t.Errorf("SPS profile = %x, want profile_idc 66 (baseline)", sps)
					} else if sps[1]&0x40 == 0 {
						t.Errorf("SPS constraint flags %08b: constraint_set1 (constrained baseline) missing", sps[1])
					}
				}
			}
			if len(keys) != 2 || keys[0] != 0 || keys[1] != 10 {
				t.Errorf("keyframes at %v, want [0 10]", keys)
			}
			if err := enc.Close(); err != nil {
				t.Fatal(err)
			}
			if err := enc.Close(); err != nil {
				t.Fatalf("second close: %v", err)
			}
			if got := Live(tc.codec); got != 0 {
				t.Errorf("Live(%s) after close = %d", tc.codec, got)
			}
		})
	}
}

func TestOpus(t *testing.T) {
	enc, err := NewOpus(media.AudioEncoderConfig{Bitrate: 32_000})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	tone := media.NewTone(440, 0.25)
	total := 0
	for i := 0; i < 50; i++ {
		data, err := enc.Encode(tone.Next())
		if err != nil {
			t.Fatal(err)
		}
		if len(data) == 0 {
			t.Fatalf("frame %d: empty", i)
		}
		total += len(data)
	}
	// 50 frames are one second: the size tells the bitrate.
	if kbps := total * 8 / 1000; kbps < 16 || kbps > 48 {
		t.Errorf("opus bitrate %d kb/s, want about 32", kbps)
	}
	if _, err := enc.Encode(make([]int16, 100)); err == nil {
		t.Error("short frame accepted")
	}
}

func benchVideo(b *testing.B, newEnc func(media.VideoEncoderConfig) (media.VideoEncoder, error), noisy bool) {
	// Sensor-like noise (media.NoisyTestPattern) makes the encoder work as
	// it would on a camera: the bare pattern is nearly static and flatters
	// it.
	var render func(time.Time) *media.Frame
	if noisy {
		pat, err := media.NewNoisyTestPattern(vga.VideoFormat)
		if err != nil {
			b.Fatal(err)
		}
		render = pat.Render
	} else {
		pat, err := media.NewTestPattern(vga.VideoFormat)
		if err != nil {
			b.Fatal(err)
		}
		render = pat.Render
	}
	enc, err := newEnc(vga)
	if err != nil {
		b.Fatal(err)
	}
	defer enc.Close()
	start := time.Now()
	bytes := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f := render(start.Add(time.Duration(i) * vga.Interval()))
		data, err := enc.Encode(f.Image, false)
		if err != nil {
			b.Fatal(err)
		}
		bytes += len(data)
	}
	b.ReportMetric(float64(bytes)*8*float64(vga.FPS)/float64(b.N)/1000, "kbps")
}

// The benchmarks include rendering the pattern (about 0.1 ms, see
// media.BenchmarkTestPattern).
func BenchmarkH264VGA(b *testing.B)      { benchVideo(b, NewH264, false) }
func BenchmarkVP8VGA(b *testing.B)       { benchVideo(b, NewVP8, false) }
func BenchmarkH264VGANoisy(b *testing.B) { benchVideo(b, NewH264, true) }
func BenchmarkVP8VGANoisy(b *testing.B)  { benchVideo(b, NewVP8, true) }

func BenchmarkOpus20ms(b *testing.B) {
	enc, err := NewOpus(media.AudioEncoderConfig{Bitrate: 32_000})
	if err != nil {
		b.Fatal(err)
	}
	defer enc.Close()
	tone := media.NewTone(440, 0.25)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := enc.Encode(tone.Next()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkH264Start(b *testing.B) {
	for i := 0; i < b.N; i++ {
		enc, err := NewH264(vga)
		if err != nil {
			b.Fatal(err)
		}
		enc.Close()
	}
}

func BenchmarkVP8Start(b *testing.B) {
	for i := 0; i < b.N; i++ {
		enc, err := NewVP8(vga)
		if err != nil {
			b.Fatal(err)
		}
		enc.Close()
	}
}

type pcmCollector struct{ samples int }

func (p *pcmCollector) WritePCM(pcm []int16) { p.samples += len(pcm) }

// TestOpusRoundTrip decodes libopus's output with the pure-Go decoder the
// receiver uses.
func TestOpusRoundTrip(t *testing.T) {
	enc, err := NewOpus(media.AudioEncoderConfig{Bitrate: 32_000})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	m := media.NewAudioMeter()
	sink := &pcmCollector{}
	rx, err := media.NewOpusReceiver(m, sink)
	if err != nil {
		t.Fatal(err)
	}
	tone := media.NewTone(440, 0.25)
	now := time.Now()
	for i := 0; i < 50; i++ {
		data, err := enc.Encode(tone.Next())
		if err != nil {
			t.Fatal(err)
		}
		now = now.Add(media.AudioFrame)
		if err := rx.WriteOpus(data, media.NoLevel, now); err != nil {
			t.Fatal(err)
		}
	}
	s := m.Snapshot()
	if sink.samples != 50*media.AudioFrameSamples {
		t.Errorf("sink got %d samples", sink.samples)
	}
	if s.Level < -18 || s.Level > -12 {
		t.Errorf("level %.1f dBov, want about -15", s.Level)
	}
}

// speechLike is a voiced sound as the door's microphone hears a visitor:
// a 140 Hz pitch with harmonics under a syllable-rate envelope.
func speechLike(frame int) []int16 {
	pcm := make([]int16, media.AudioFrameSamples)
	for i := range pcm {
		n := frame*len(pcm) + i
		t := float64(n) / media.SampleRate
		env := 0.5 + 0.5*math.Sin(2*math.Pi*4*t)
		v := 0.0
		for h := 1; h <= 6; h++ {
			v += math.Sin(2*math.Pi*140*float64(h)*t) / float64(h)
		}
		pcm[i] = int16(6000 * env * v)
	}
	return pcm
}

// TestOpusFECAndDTX: the door's encoder runs with in-band FEC and DTX, as
// its settings read back say; a lost frame decoded from the next packet's
// FEC is much closer to what was said than concealment without it; and a
// pause costs a byte or two a frame instead of the full rate.
func TestOpusFECAndDTX(t *testing.T) {
	enc, err := NewOpus(media.AudioEncoderConfig{Bitrate: 32_000})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	oe := enc.(*opusEncoder)
	for _, c := range []struct {
		what      string
		req, want int
	}{{"in-band FEC", opusGetInbandFEC, 1}, {"DTX", opusGetDTX, 1}, {"expected loss", opusGetPacketLoss, opusExpectedLossPerc}, {"complexity", opusGetComplexity, opusComplexity}} {
		if got, err := oe.setting(c.req); err != nil || got != c.want {
			t.Errorf("%s = %d (%v), want %d", c.what, got, err, c.want)
		}
	}
	var packets [][]byte
	var said [][]int16
	for f := range 100 {
		pcm := speechLike(f)
		data, err := enc.Encode(pcm)
		if err != nil {
			t.Fatal(err)
		}
		packets, said = append(packets, bytes.Clone(data)), append(said, pcm)
	}
	// Frame 60 is lost: two decoders that got the same packets before it.
	const lost = 60
	errOf := func(useFEC bool) float64 {
		d, err := NewOpusDecoder()
		if err != nil {
			t.Fatal(err)
		}
		dec := d.(*opusDecoder)
		pcm := make([]int16, media.AudioFrameSamples)
		for f := range lost {
			if _, err := dec.DecodeToInt16(packets[f], pcm); err != nil {
				t.Fatal(err)
			}
		}
		var next []byte
		if useFEC {
			next = packets[lost+1]
		}
		if n, err := dec.DecodeLost(next, pcm); err != nil || n != media.AudioFrameSamples {
			t.Fatalf("lost frame: %d samples, %v", n, err)
		}
		// libopus delays its output by a few ms: compare with the best
		// alignment within 10 ms.
		best := math.Inf(1)
		for lag := 0; lag <= 480; lag += 8 {
			var e, s float64
			for i := lag; i < len(pcm); i++ {
				ref := float64(said[lost][i-lag])
				diff := float64(pcm[i]) - ref
				e, s = e+diff*diff, s+ref*ref
			}
			best = math.Min(best, e/s)
		}
		return 10 * math.Log10(best)
	}
	withFEC, without := errOf(true), errOf(false)
	t.Logf("lost frame's error against what was said: %.1f dB with FEC, %.1f dB concealed", withFEC, without)
	if withFEC > without-3 {
		t.Errorf("FEC %.1f dB, concealment %.1f dB: the next packet carried no usable copy", withFEC, without)
	}
	// A pause: DTX frames after the encoder notices the silence.
	quiet := 0
	for range 50 {
		data, err := enc.Encode(make([]int16, media.AudioFrameSamples))
		if err != nil {
			t.Fatal(err)
		}
		if len(data) <= 2 {
			quiet++
		}
	}
	if quiet < 30 {
		t.Errorf("%d of 50 silent frames were DTX frames (≤ 2 bytes)", quiet)
	}
}

// BenchmarkOpus20msSpeech is BenchmarkOpus20ms with a voiced input, which
// the encoder codes as speech (SILK or hybrid), as it will the visitor.
func BenchmarkOpus20msSpeech(b *testing.B) {
	enc, err := NewOpus(media.AudioEncoderConfig{Bitrate: 32_000})
	if err != nil {
		b.Fatal(err)
	}
	defer enc.Close()
	frames := make([][]int16, 50)
	for i := range frames {
		frames[i] = speechLike(i)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := enc.Encode(frames[i%len(frames)]); err != nil {
			b.Fatal(err)
		}
	}
}

// pcmCount is a speaker input that keeps what it was given.
type pcmCount struct{ pcm []int16 }

func (c *pcmCount) WritePCM(pcm []int16) { c.pcm = append(c.pcm, pcm...) }

// TestOpusReceiverConceals: a resident's lost packets are filled in, so
// the speaker gets a frame for every frame sent: the last lost one rebuilt
// from the next packet's FEC, earlier ones concealed, at most five per
// gap; duplicates and late packets are dropped, and the sequence number's
// wrap-around is no gap.
func TestOpusReceiverConceals(t *testing.T) {
	enc, err := NewOpus(media.AudioEncoderConfig{Bitrate: 32_000})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var packets [][]byte
	for f := range 60 {
		data, err := enc.Encode(speechLike(f))
		if err != nil {
			t.Fatal(err)
		}
		packets = append(packets, bytes.Clone(data))
	}
	for _, tc := range []struct {
		name       string
		first      uint16
		drop       []int // frames never delivered
		dup        []int // frames delivered twice, the second time after the next
		wantFrames int   // 20 ms frames the speaker gets
		lost, conc int
		recovered  int
	}{
		{name: "none", first: 100, wantFrames: 60},
		{name: "one", first: 100, drop: []int{30}, wantFrames: 60, lost: 1, conc: 1, recovered: 1},
		{name: "three", first: 100, drop: []int{20, 21, 22}, wantFrames: 60, lost: 3, conc: 3, recovered: 1},
		{name: "wrap", first: 65530, drop: []int{7}, wantFrames: 60, lost: 1, conc: 1, recovered: 1},
		{name: "long gap", first: 100, drop: []int{10, 11, 12, 13, 14, 15, 16, 17}, wantFrames: 57, lost: 8, conc: 5, recovered: 1},
		{name: "duplicates", first: 100, dup: []int{5, 40}, wantFrames: 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dec, err := NewOpusDecoder()
			if err != nil {
				t.Fatal(err)
			}
			m, sink := media.NewAudioMeter(), &pcmCount{}
			rx := media.NewOpusReceiverWith(m, sink, dec)
			now := time.Now()
			for f, p := range packets {
				if slices.Contains(tc.drop, f) {
					continue
				}
				if err := rx.WriteRTP(tc.first+uint16(f), uint32(960*f), p, media.NoLevel, now); err != nil {
					t.Fatal(err)
				}
				if slices.Contains(tc.dup, f-1) {
					_ = rx.WriteRTP(tc.first+uint16(f-1), uint32(960*(f-1)), packets[f-1], media.NoLevel, now) // late
					_ = rx.WriteRTP(tc.first+uint16(f), uint32(960*f), p, media.NoLevel, now)                  // again
				}
			}
			st := m.Snapshot()
			if got := len(sink.pcm) / media.AudioFrameSamples; got != tc.wantFrames || len(sink.pcm)%media.AudioFrameSamples != 0 {
				t.Errorf("speaker got %d samples (%d frames), want %d frames", len(sink.pcm), got, tc.wantFrames)
			}
			if int(st.Lost) != tc.lost || int(st.Concealed) != tc.conc || int(st.Recovered) != tc.recovered {
				t.Errorf("lost %d, concealed %d, recovered %d; want %d, %d, %d", st.Lost, st.Concealed, st.Recovered, tc.lost, tc.conc, tc.recovered)
			}
		})
	}
}
