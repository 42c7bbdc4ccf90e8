package codec

import (
	"math"
	"testing"
	"time"

	"github.com/pion/opus"

	"github.com/doorbell/intercom/media"
)

// toneFrames encodes n 20 ms frames of a 440 Hz tone with libopus.
func toneFrames(t testing.TB, n int) [][]byte {
	t.Helper()
	enc, err := NewOpus(media.AudioEncoderConfig{Bitrate: 32_000})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var out [][]byte
	pcm := make([]int16, media.AudioFrameSamples)
	for f := range n {
		for i := range pcm {
			s := f*len(pcm) + i
			pcm[i] = int16(8000 * math.Sin(2*math.Pi*440*float64(s)/media.SampleRate))
		}
		b, err := enc.Encode(pcm)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, append([]byte(nil), b...))
	}
	return out
}

func rms(pcm []int16) float64 {
	var sum float64
	for _, v := range pcm {
		sum += float64(v) * float64(v)
	}
	return math.Sqrt(sum / float64(len(pcm)))
}

// TestOpusDecoder: libopus decodes what libopus encoded back to a tone of
// about the same power, 20 ms per packet, and refuses garbage.
func TestOpusDecoder(t *testing.T) {
	dec, err := NewOpusDecoder()
	if err != nil {
		t.Fatal(err)
	}
	pcm := make([]int16, media.SampleRate*120/1000)
	var last float64
	for _, pkt := range toneFrames(t, 25) {
		n, err := dec.DecodeToInt16(pkt, pcm)
		if err != nil {
			t.Fatal(err)
		}
		if n != media.AudioFrameSamples {
			t.Fatalf("decoded %d samples, want %d", n, media.AudioFrameSamples)
		}
		last = rms(pcm[:n])
	}
	if want := 8000 / math.Sqrt2; last < 0.7*want || last > 1.3*want {
		t.Errorf("tone decoded at RMS %.0f, want about %.0f", last, want)
	}
	// A TOC byte announcing a frame length the packet cannot hold.
	if _, err := dec.DecodeToInt16([]byte{0xff, 0xff, 0xff}, pcm); err == nil {
		t.Error("malformed packet decoded")
	}
}

// BenchmarkOpusDecode compares what receiving one resident's 20 ms
// packet (32 kb/s tone) costs with each decoder, meter included.
func BenchmarkOpusDecode(b *testing.B) {
	pkts := toneFrames(b, 50)
	pion, err := opus.NewDecoderWithOutput(media.SampleRate, 1)
	if err != nil {
		b.Fatal(err)
	}
	lib, err := NewOpusDecoder()
	if err != nil {
		b.Fatal(err)
	}
	for name, dec := range map[string]media.OpusDecoder{"libopus": lib, "pion-opus": &pion} {
		b.Run(name, func(b *testing.B) {
			rx := media.NewOpusReceiverWith(media.NewAudioMeter(), nil, dec)
			now := time.Now()
			for i := 0; b.Loop(); i++ {
				if err := rx.WriteOpus(pkts[i%len(pkts)], media.NoLevel, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
