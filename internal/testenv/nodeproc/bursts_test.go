package nodeproc

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/codec"
)

// TestBurstDetectorJS runs page/bursts.js's signal and detector in node
// over PCM the Go side made (media.BurstSample; clean, with noise, through
// the door's Opus encoder and libopus's decoder, refusals): it must find
// the onsets media.BurstDetector finds, at the same times, and refuse the
// same ones.
func TestBurstDetectorJS(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("needs node")
	}
	type stream struct {
		Name    string
		Phase   float64 // ms
		PCM     []int16
		StartMs []float64 // per 20 ms chunk
		Want    []media.BurstOnset
	}
	rng := rand.New(rand.NewPCG(5, 6))
	t0 := time.UnixMilli(1_765_061_000_000).Add(-300 * time.Millisecond)
	first := media.SampleIndex(t0)
	var streams []stream
	add := func(name string, phase time.Duration, pcm []int16, latency time.Duration, jump int) {
		det := media.NewBurstDetector(phase)
		s := stream{Name: name, Phase: float64(phase / time.Millisecond), PCM: pcm}
		for c, off := 0, 0; off < len(pcm); c, off = c+1, off+media.AudioFrameSamples {
			at := t0.Add(time.Duration(off)*time.Second/media.SampleRate + latency)
			if jump > 0 && c >= jump {
				at = at.Add(time.Second) // the input jumps in time
			}
			s.StartMs = append(s.StartMs, float64(at.UnixNano())/1e6)
			s.Want = append(s.Want, det.Write(pcm[off:min(off+media.AudioFrameSamples, len(pcm))], at)...)
		}
		if len(s.Want) == 0 {
			t.Fatalf("%s: the Go detector found nothing", name)
		}
		streams = append(streams, s)
	}
	signal := func(phase time.Duration, n int, noise float64) []int16 {
		out := make([]int16, n)
		for i := range out {
			v := media.BurstSample(first+int64(i), phase) + rng.NormFloat64()*noise
			out[i] = int16(max(min(math.Round(v*32767), 32767), -32768))
		}
		return out
	}
	add("clean", 0, signal(0, 5*media.SampleRate, 0), 87*time.Millisecond, 0)
	add("resident", media.BurstPhaseResident, signal(media.BurstPhaseResident, 5*media.SampleRate, 0), 1234*time.Millisecond, 0)
	add("noise", 0, signal(0, 5*media.SampleRate, 0.003), 300*time.Millisecond, 0)
	add("too late", 0, signal(0, 5*media.SampleRate, 0), 2600*time.Millisecond, 0)
	add("misaligned", media.BurstPhaseResident, signal(0, 5*media.SampleRate, 0), 10*time.Millisecond, 0)
	add("gap", 0, signal(0, 5*media.SampleRate, 0), 10*time.Millisecond, 66)
	noisy := make([]int16, 4*media.SampleRate)
	for b := range 4 {
		for i := b*media.SampleRate + 14400; i < b*media.SampleRate+17400; i++ {
			noisy[i] = int16(rng.NormFloat64() * 6000)
		}
	}
	add("noise bursts", 0, noisy, 0, 0)
	// Through the door's Opus encoder (FEC, DTX) and libopus.
	enc, err := codec.NewOpus(media.AudioEncoderConfig{Bitrate: 32_000})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	dec, err := codec.NewOpusDecoder()
	if err != nil {
		t.Fatal(err)
	}
	src := signal(0, 5*media.SampleRate, 0.0005)
	coded := make([]int16, 0, len(src))
	buf := make([]int16, media.AudioFrameSamples)
	for off := 0; off+media.AudioFrameSamples <= len(src); off += media.AudioFrameSamples {
		pkt, err := enc.Encode(src[off : off+media.AudioFrameSamples])
		if err != nil {
			t.Fatal(err)
		}
		n, err := dec.DecodeToInt16(pkt, buf)
		if err != nil {
			t.Fatal(err)
		}
		coded = append(coded, buf[:n]...)
	}
	add("opus", 0, coded, 40*time.Millisecond, 0)

	// The signal itself, sample by sample, at a few places.
	type sample struct {
		N     int64
		Phase float64
		Want  float64
	}
	var samples []sample
	for _, n := range []int64{first, first + 300*48, first + 300*48 + 17, first + 1300*48 + 2000, first + 800*48 + 5} {
		for _, ph := range []time.Duration{0, media.BurstPhaseResident} {
			samples = append(samples, sample{n, float64(ph / time.Millisecond), media.BurstSample(n, ph)})
		}
	}

	in, err := json.Marshal(map[string]any{"streams": streams, "samples": samples})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "in.json"), in, 0o600); err != nil {
		t.Fatal(err)
	}
	lib, err := filepath.Abs("page/bursts.js")
	if err != nil {
		t.Fatal(err)
	}
	script := `
import { readFileSync } from "node:fs";
import { BurstDetector, burstSample } from ` + jsString("file://"+lib) + `;
const input = JSON.parse(readFileSync(process.argv[2], "utf8"));
const samples = input.samples.map((s) => burstSample(s.N, s.Phase));
const streams = input.streams.map((s) => {
  const det = new BurstDetector(s.Phase);
  const out = [];
  s.StartMs.forEach((t, c) => out.push(...det.write(s.PCM.slice(c * 960, (c + 1) * 960), t)));
  return out;
});
console.log(JSON.stringify({ samples, streams }));
`
	mjs := filepath.Join(dir, "bursts.mjs")
	if err := os.WriteFile(mjs, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	outb, err := exec.Command("node", mjs, filepath.Join(dir, "in.json")).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, outb)
	}
	type onset struct {
		AtMs      float64 `json:"atMs"`
		K         int64   `json:"k"`
		LatencyMs float64 `json:"latencyMs"`
		Freq      float64 `json:"freq"`
		Refused   string  `json:"refused"`
	}
	var got struct {
		Samples []float64 `json:"samples"`
		Streams [][]onset `json:"streams"`
	}
	if err := json.Unmarshal(outb, &got); err != nil {
		t.Fatalf("node said %s: %v", outb, err)
	}
	for i, s := range samples {
		if math.Abs(got.Samples[i]-s.Want) > 1e-9 {
			t.Errorf("burstSample(%d, %v) = %v, Go %v", s.N, s.Phase, got.Samples[i], s.Want)
		}
	}
	for i, s := range streams {
		g := got.Streams[i]
		if len(g) != len(s.Want) {
			t.Errorf("%s: bursts.js found %d onsets, Go %d: %+v", s.Name, len(g), len(s.Want), g)
			continue
		}
		accepted := 0
		for j, w := range s.Want {
			wantMs := float64(w.At.UnixNano()) / 1e6
			if g[j].Refused != w.Refused || g[j].K != w.K || math.Abs(g[j].AtMs-wantMs) > 0.01 {
				t.Errorf("%s: onset %d: bursts.js %+v, Go %+v", s.Name, j, g[j], w)
			}
			if w.Refused == "" {
				accepted++
				if math.Abs(g[j].LatencyMs-float64(w.Latency)/1e6) > 0.01 {
					t.Errorf("%s: onset %d: latency %v ms, Go %v", s.Name, j, g[j].LatencyMs, w.Latency)
				}
			}
		}
		t.Logf("%s: %d onsets, %d attributed", s.Name, len(g), accepted)
	}
}
