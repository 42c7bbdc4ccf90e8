package alsa

import (
	"testing"
	"time"

	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/aec"
	"github.com/doorbell/intercom/media/codec"
)

// TestBurstsThroughDoorChain: the mouth-to-ear bursts survive the door's
// whole microphone path: capture gain, the echo canceller, noise
// suppression, gain control and high-pass (every stage on, while the
// speaker plays the resident's bursts half a period later, as in a call),
// then the door's Opus encoder (FEC, DTX) and the libopus decoder a
// receiver would use. Each burst must still be found and attributed, late
// only by the chain's own delay.
func TestBurstsThroughDoorChain(t *testing.T) {
	p, err := aec.New(aec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	e := NewEcho(p, nil)
	spk := NewSpeaker("bench", 0, false, e, nil)
	in := spk.NewInput()
	defer in.Close()
	mic := newMicrophone(fixedDelay(20*time.Millisecond), 0, false, e)
	limit := media.NewLimiter(media.LimiterCeilingDBFS, media.LimiterLookahead, media.LimiterRelease)
	enc, err := codec.NewOpus(media.AudioEncoderConfig{Bitrate: 32_000})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	dec, err := codec.NewOpusDecoder()
	if err != nil {
		t.Fatal(err)
	}

	first := media.SampleIndex(time.UnixMilli(1_765_061_000_000).Add(-400 * time.Millisecond))
	processed := media.NewBurstDetector(0)
	decoded := media.NewBurstDetector(0)
	var afterAEC, afterOpus []media.BurstOnset
	out := make([]int16, media.AudioFrameSamples)
	pcm := make([]int16, media.AudioFrameSamples)
	resident := make([]int16, media.AudioFrameSamples)
	const seconds = 12
	for f := range seconds * 50 {
		n0 := first + int64(f*media.AudioFrameSamples)
		for i := range resident {
			resident[i] = int16(media.BurstSample(n0+int64(i), media.BurstPhaseResident) * 32767)
			mic.buf[i] = int16(media.BurstSample(n0+int64(i), 0) * 32767)
		}
		in.WritePCM(resident)
		spk.period(out, limit, fixedDelay(40*time.Millisecond))
		mic.process()
		at := sampleAt(n0)
		afterAEC = append(afterAEC, processed.Write(mic.buf, at)...)
		pkt, err := enc.Encode(mic.buf)
		if err != nil {
			t.Fatal(err)
		}
		n, err := dec.DecodeToInt16(pkt, pcm)
		if err != nil {
			t.Fatal(err)
		}
		afterOpus = append(afterOpus, decoded.Write(pcm[:n], at)...)
	}
	for _, c := range []struct {
		name   string
		onsets []media.BurstOnset
		most   time.Duration
	}{
		// The processing delays the microphone by one of its 10 ms
		// frames (measured: 10.6–10.8 ms with the detector's bias).
		{"processed", afterAEC, 12 * time.Millisecond},
		// Plus Opus's algorithmic delay (6.5 ms): 16.8–16.9 ms.
		{"opus", afterOpus, 19 * time.Millisecond},
	} {
		ok := 0
		var lat []time.Duration
		for _, o := range c.onsets {
			if o.Refused != "" {
				t.Errorf("%s: burst refused: %+v", c.name, o)
				continue
			}
			ok++
			lat = append(lat, o.Latency)
			if o.Latency < 0 || o.Latency > c.most {
				t.Errorf("%s: burst %d late by %v", c.name, o.K, o.Latency)
			}
		}
		// The first second lets the canceller and gain control settle.
		if ok < seconds-2 {
			t.Errorf("%s: %d bursts attributed of %d", c.name, ok, seconds)
		}
		t.Logf("%s: %d bursts, latencies %v", c.name, ok, lat)
	}
}

func sampleAt(n int64) time.Time {
	sec := n / media.SampleRate
	return time.Unix(sec, (n-sec*media.SampleRate)*int64(time.Second)/media.SampleRate)
}
