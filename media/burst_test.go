package media

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"
)

// burstPCM is the burst signal of the given phase from absolute sample
// first, n samples, with white noise of the given RMS (full scale 1) added.
func burstPCM(first int64, n int, phase time.Duration, noise float64, rng *rand.Rand) []int16 {
	out := make([]int16, n)
	for i := range out {
		v := BurstSample(first+int64(i), phase)
		if noise > 0 {
			v += rng.NormFloat64() * noise
		}
		out[i] = int16(max(min(math.Round(v*32767), 32767), -32768))
	}
	return out
}

// feed gives pcm to d in 20 ms chunks, each stamped as heard latency after
// the sample's own time.
func feed(d *BurstDetector, pcm []int16, first int64, latency time.Duration) []BurstOnset {
	var out []BurstOnset
	for off := 0; off < len(pcm); off += AudioFrameSamples {
		end := min(off+AudioFrameSamples, len(pcm))
		at := sampleTime(first + int64(off)).Add(latency)
		out = append(out, d.Write(pcm[off:end], at)...)
	}
	return out
}

// The first sample at or above the onset threshold comes this long after
// a burst's start (the 1 ms rise times the slowest tone's first quarter
// cycle): the detector's own bias.
const burstBias = 700 * time.Microsecond

func TestBurstDetector(t *testing.T) {
	t0 := time.UnixMilli(1_765_061_000_000).Add(-300 * time.Millisecond)
	first := SampleIndex(t0)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name    string
		phase   time.Duration
		latency time.Duration
		noise   float64 // RMS, full scale 1
		want    int     // onsets attributed (of 10 bursts)
		refused map[string]int
	}{
		{name: "clean", latency: 123 * time.Millisecond, want: 10},
		{name: "resident phase", phase: BurstPhaseResident, latency: 37 * time.Millisecond, want: 10},
		{name: "noise -50 dBFS", latency: 480 * time.Millisecond, noise: 0.00316, want: 10},
		{name: "latency past a period", latency: 1700 * time.Millisecond, want: 10},
		// Past BurstMaxLatency the code no longer tells bursts apart
		// safely: refused, never attributed to a wrong burst.
		{name: "too late", latency: 2500 * time.Millisecond, want: 0, refused: map[string]int{"too late": 10}},
		// Noise above the quiet threshold: no onset after silence, so
		// nothing is reported at all.
		{name: "noise -30 dBFS", latency: 100 * time.Millisecond, noise: 0.0316, want: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := 10 * SampleRate
			pcm := burstPCM(first, n, tc.phase, tc.noise, rng)
			got := feed(NewBurstDetector(tc.phase), pcm, first, tc.latency)
			ok := 0
			refused := map[string]int{}
			for _, o := range got {
				if o.Refused != "" {
					refused[o.Refused]++
					continue
				}
				ok++
				if d := o.Latency - tc.latency; d < 0 || d > burstBias {
					t.Errorf("burst %d: latency %v, want %v + [0, %v]", o.K, o.Latency, tc.latency, burstBias)
				}
				if want := BurstFreqs[o.K%4]; o.Freq != want {
					t.Errorf("burst %d: frequency %v, want %v", o.K, o.Freq, want)
				}
				if o.Start.UnixNano() != o.K*int64(BurstPeriod)+int64(tc.phase) {
					t.Errorf("burst %d starts at %v", o.K, o.Start)
				}
			}
			if ok != tc.want {
				t.Errorf("%d onsets attributed, want %d (refused %v)", ok, tc.want, refused)
			}
			for r, n := range tc.refused {
				if refused[r] != n {
					t.Errorf("refused %q: %d, want %d (all %v)", r, refused[r], n, refused)
				}
			}
		})
	}
}

// TestBurstDetectorRefuses: what is not a clean burst of this phase is
// refused, not attributed.
func TestBurstDetectorRefuses(t *testing.T) {
	t0 := time.UnixMilli(1_765_061_000_000)
	first := SampleIndex(t0)
	rng := rand.New(rand.NewPCG(3, 4))
	t.Run("noise bursts", func(t *testing.T) {
		// Speech-like: bursts of noise after silence.
		pcm := make([]int16, 5*SampleRate)
		for b := range 5 {
			for i := b*SampleRate + 1000; i < b*SampleRate+1000+3000; i++ {
				pcm[i] = int16(rng.NormFloat64() * 6000)
			}
		}
		for _, o := range feed(NewBurstDetector(0), pcm, first, 0) {
			if o.Refused != "tone unclear" {
				t.Errorf("noise burst: %+v", o)
			}
		}
	})
	t.Run("two bursts at once", func(t *testing.T) {
		// Both directions' bursts mixed, aligned: two frequencies.
		a := burstPCM(first, 4*SampleRate, 0, 0, rng)
		b := burstPCM(first+SampleRate/2+SampleRate, 4*SampleRate, BurstPhaseResident, 0, rng)
		for i := range a {
			a[i] = a[i]/2 + b[i]/2
		}
		got := feed(NewBurstDetector(0), a, first, 50*time.Millisecond)
		if len(got) == 0 {
			t.Fatal("no onset seen")
		}
		for _, o := range got {
			if o.Refused != "tone unclear" {
				t.Errorf("mixed bursts: %+v", o)
			}
		}
	})
	t.Run("misaligned", func(t *testing.T) {
		// Bursts of the door's phase read as the resident's: their code
		// names a burst 3.5 periods back, which is too late.
		pcm := burstPCM(first, 6*SampleRate, 0, 0, rng)
		got := feed(NewBurstDetector(BurstPhaseResident), pcm, first, 20*time.Millisecond)
		if len(got) == 0 {
			t.Fatal("no onset seen")
		}
		for _, o := range got {
			if o.Refused == "" {
				t.Errorf("misaligned burst attributed: %+v", o)
			}
		}
	})
	t.Run("gap", func(t *testing.T) {
		// The input jumps in time during a burst's tone window.
		d := NewBurstDetector(0)
		from := first - SampleRate/2 // half a second before the burst at t0
		pcm := burstPCM(from, SampleRate, 0, 0, rng)
		at := sampleTime(from).Add(10 * time.Millisecond)
		got := d.Write(pcm[:SampleRate/2+200], at)
		got = append(got, d.Write(pcm[SampleRate/2+200:], at.Add(time.Second))...)
		if len(got) != 1 || got[0].Refused != "cut off" {
			t.Errorf("burst cut by a gap: %+v", got)
		}
	})
}

// TestBurstsSource: the source's frames hold the burst signal of the
// samples that ended at the slot it returned them at, contiguous, and after
// a stall it takes up the wall clock again. On synctest's clock, so the
// machine's load cannot make a frame late (it did under -race).
func TestBurstsSource(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := NewBursts(0)
		defer b.Close()
		ctx := t.Context()
		det := NewBurstDetector(0)
		var got []BurstOnset
		prev := int64(-1)
		read := func() (int64, []int16) {
			pcm, err := b.ReadAudio(ctx)
			if err != nil {
				t.Fatal(err)
			}
			first := b.next - AudioFrameSamples
			// Handed over when its last sample was "captured".
			if lag := time.Now().Sub(sampleTime(first + AudioFrameSamples)); lag < -time.Millisecond || lag > time.Millisecond {
				t.Errorf("frame handed over %v after its end", lag)
			}
			return first, pcm
		}
		for range 160 { // 3.2 s
			first, pcm := read()
			if prev >= 0 && first != prev+AudioFrameSamples {
				t.Errorf("source jumped from %d to %d", prev, first)
			}
			prev = first
			// Stamped with its own capture time, every onset has latency ≈ 0.
			got = append(got, det.Write(pcm, sampleTime(first))...)
		}
		if len(got) < 3 {
			t.Fatalf("%d onsets in 3.2 s", len(got))
		}
		for _, o := range got {
			if o.Refused != "" || o.Latency < 0 || o.Latency > burstBias {
				t.Errorf("onset %+v", o)
			}
		}
		// A stalled machine: the next frame is the wall clock's again.
		time.Sleep(300 * time.Millisecond)
		if first, _ := read(); first <= prev+AudioFrameSamples {
			t.Errorf("after a 300 ms stall the source went on from %d to %d", prev, first)
		}
	})
}

// FuzzBurstDetector: any PCM at any times never panics, and whatever it
// attributes has a latency within bounds and its burst's frequency.
func FuzzBurstDetector(f *testing.F) {
	seed := burstPCM(SampleIndex(time.UnixMilli(1_765_061_000_000))-2400, SampleRate/2, 0, 0, nil)
	buf := make([]byte, 2*len(seed))
	for i, v := range seed {
		binary.LittleEndian.PutUint16(buf[2*i:], uint16(v))
	}
	f.Add(buf, int64(1_765_061_000_000_000_000), uint16(960))
	f.Add([]byte{1, 2, 3}, int64(-5), uint16(0))
	f.Fuzz(func(t *testing.T, raw []byte, startNs int64, chunk uint16) {
		pcm := make([]int16, len(raw)/2)
		for i := range pcm {
			pcm[i] = int16(binary.LittleEndian.Uint16(raw[2*i:]))
		}
		// Quiet before, so the input can make an onset.
		d := NewBurstDetector(0)
		d.quiet = burstQuietBlocks
		step := max(int(chunk)%4000, 1)
		at := time.Unix(0, startNs)
		for off := 0; off < len(pcm); off += step {
			end := min(off+step, len(pcm))
			for _, o := range d.Write(pcm[off:end], at) {
				if o.Refused != "" {
					continue
				}
				if o.Latency < 0 || o.Latency > BurstMaxLatency || o.Freq != BurstFreqs[((o.K%4)+4)%4] {
					t.Fatalf("attributed %+v", o)
				}
			}
			at = at.Add(time.Duration(end-off) * time.Second / SampleRate)
		}
	})
}
