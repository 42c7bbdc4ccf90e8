package media

import (
	"context"
	"math"
	"time"
)

// Timestamped tone bursts for mouth-to-ear latency (issue 16), the audio
// counterpart of the glass code: a short tone starts at every known
// wall-clock instant, so whoever hears one can tell when it was "spoken".
//
// Burst k starts at Unix time k·BurstPeriod + phase (the door sends with
// phase 0, a resident with BurstPhaseResident, so that the two directions
// never overlap at the door's echo canceller) and lasts BurstLength. Its
// frequency is BurstFreqs[k mod 4]: a receiver that measures the frequency
// knows k modulo 4, so an onset is attributed without ambiguity while the
// latency is below 4 periods (DetectBursts refuses anything past
// BurstMaxLatency). Between bursts there is digital silence: noise
// suppression and gain control adapt to a steady tone, not to 60 ms in a
// second, and the onset after silence is what a detector times.
//
// page/bursts.js in internal/testenv/nodeproc repeats the generator and
// the detector for the resident's page; a change here must be made there
// too (TestBurstDetectorJS runs it over PCM made here).
const (
	BurstPeriod        = time.Second
	BurstLength        = 60 * time.Millisecond
	BurstPhaseResident = 500 * time.Millisecond
	// BurstMaxLatency is the latest an onset may come after its burst's
	// start and still be attributed (half the code's 4-period range).
	BurstMaxLatency = 2 * time.Second
	// BurstAmplitude is the tone's peak (−12 dBFS).
	BurstAmplitude = 0.25
)

// BurstFreqs are the bursts' frequencies by k mod 4: in the voice band
// every codec keeps, 300 Hz apart (the detector's 20 ms window resolves
// 50 Hz).
var BurstFreqs = [4]float64{500, 800, 1100, 1400}

const (
	burstRise  = SampleRate / 1000     // 1 ms raised-cosine onset: a sharp, click-free edge
	burstFall  = 5 * SampleRate / 1000 // 5 ms fade-out
	burstLenS  = int64(BurstLength / time.Millisecond * SampleRate / 1000)
	burstPerS  = int64(BurstPeriod / time.Millisecond * SampleRate / 1000)
	burstBlock = SampleRate / 1000 // the detector's 1 ms block
)

// SampleIndex is the 48 kHz sample of the Unix clock that t falls in.
func SampleIndex(t time.Time) int64 {
	ns := t.UnixNano()
	sec := floorDiv(ns, int64(time.Second))
	return sec*SampleRate + (ns-sec*int64(time.Second))*SampleRate/int64(time.Second)
}

// sampleTime is when absolute sample n starts.
func sampleTime(n int64) time.Time {
	sec := floorDiv(n, SampleRate)
	return time.Unix(sec, (n-sec*SampleRate)*int64(time.Second)/SampleRate)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// BurstSample is the burst signal at absolute sample n (SampleIndex) for
// bursts of the given phase, full scale 1.
func BurstSample(n int64, phase time.Duration) float64 {
	rel := n - int64(phase/time.Millisecond)*SampleRate/1000
	k := floorDiv(rel, burstPerS)
	m := rel - k*burstPerS
	if m >= burstLenS {
		return 0
	}
	env := 1.0
	if m < burstRise {
		env = 0.5 * (1 - math.Cos(math.Pi*float64(m)/burstRise))
	} else if left := burstLenS - m; left < burstFall {
		env = 0.5 * (1 - math.Cos(math.Pi*float64(left)/burstFall))
	}
	f := BurstFreqs[((k%4)+4)%4]
	return BurstAmplitude * env * math.Sin(2*math.Pi*f*float64(m)/SampleRate)
}

// Bursts is an AudioSource of timestamped bursts, 48 kHz mono, delivered
// 20 ms at a time in real time like a microphone: the frame handed over at
// wall time T holds the samples of [T−20 ms, T), so a burst's capture time
// is its start instant and the source adds the framing delay a real
// microphone does.
type Bursts struct {
	phase time.Duration
	buf   []int16
	pace  *pacer
	next  int64 // absolute sample index of the next frame's first sample
}

// NewBursts returns a burst source with the given phase (0 for the door).
func NewBursts(phase time.Duration) *Bursts {
	return &Bursts{phase: phase, buf: make([]int16, AudioFrameSamples), pace: newPacer(AudioFrame), next: -1}
}

// ReadAudio waits for the next 20 ms slot and returns the samples that
// ended at it.
func (b *Bursts) ReadAudio(ctx context.Context) ([]int16, error) {
	now, err := b.pace.wait(ctx)
	if err != nil {
		return nil, err
	}
	end := SampleIndex(now)
	// Frames are contiguous, as a sound card's are; only when the pacer
	// fell behind or skipped (a stalled machine) does the source jump to
	// the wall clock again, so a sample's index stays its capture time
	// within a frame.
	if b.next < 0 || abs64(end-AudioFrameSamples-b.next) > AudioFrameSamples {
		b.next = end - AudioFrameSamples
	}
	b.fill(b.next)
	b.next += AudioFrameSamples
	return b.buf, nil
}

func (b *Bursts) fill(first int64) {
	for i := range b.buf {
		b.buf[i] = int16(math.Round(BurstSample(first+int64(i), b.phase) * math.MaxInt16))
	}
}

func abs64(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// Close stops the source's timer.
func (b *Bursts) Close() error {
	b.pace.stop()
	return nil
}

// BurstOnset is one burst onset a BurstDetector found.
type BurstOnset struct {
	// At is when the onset's first loud sample was heard: the time given
	// with its samples plus its offset among them.
	At time.Time
	// K is the burst's index: it started at Start, Unix K·BurstPeriod +
	// phase. Zero when refused.
	K     int64
	Start time.Time
	// Latency is At − Start.
	Latency time.Duration
	// Freq is the frequency measured (one of BurstFreqs when accepted).
	Freq float64
	// Refused says why the onset was not attributed ("" when it was):
	// "tone unclear" (not one clear burst frequency: noise, speech, two
	// bursts overlapping), "too late" (past BurstMaxLatency, where the
	// code no longer tells bursts apart) or "cut off" (the input jumped
	// in time before the tone could be measured).
	Refused string
}

// Detector thresholds: an onset is the first sample at or above onAmp
// (−26 dBFS, 14 dB under a burst's peak, so gain control and a lossy
// codec may take some level) after at least quietBefore of 1 ms blocks
// whose RMS is under quietRMS (−40 dBFS: comfort noise and a decoder's
// tail stay under it).
const (
	burstOnAmp       = 0.05 * 32768
	burstQuietRMS    = 0.01 * 32768
	burstQuietBlocks = 150 // ms
	// A burst's first cycles may stay under onAmp yet make their blocks
	// loud: an onset may come up to riseBlocks after the quiet ended. Its
	// time is then taken back to the first sample at or above a quarter
	// of onAmp (−38 dBFS) within the last lookBack samples.
	burstRiseBlocks = 10
	burstLookBack   = 3 * SampleRate / 1000
	// The tone is measured over 20 ms starting 2 ms after the onset
	// (past the rise and a codec's transient). One frequency must hold at
	// least half the window's energy and 8 times the next one's.
	burstSkip      = 2 * SampleRate / 1000
	burstWindow    = 20 * SampleRate / 1000
	burstToneShare = 0.5
	burstToneRatio = 8
	// Input whose time jumps by more than this from where the previous
	// samples ended starts afresh (a gap is not silence).
	burstGap = 5 * time.Millisecond
)

// BurstDetector finds burst onsets in a stream of 48 kHz mono PCM and
// attributes each to the burst it belongs to. It is not safe for
// concurrent use.
type BurstDetector struct {
	phase time.Duration

	quiet    int                  // consecutive quiet blocks before the current one
	lastRun  int                  // the quiet run before the current loud stretch
	loudRun  int                  // loud blocks since that run ended
	hist     [burstLookBack]int64 // the last samples' times (ns) …
	histV    [burstLookBack]int16 // … and values, a ring
	histN    int
	blockSum float64 // sum of squares of the current block
	blockN   int
	loud     bool // the current block had a sample at or above onAmp
	// An onset waiting for its tone window.
	pending bool
	onsetAt time.Time
	window  []float64
	skip    int

	end time.Time // when the last sample given ends (zero: none yet)
}

// NewBurstDetector detects bursts of the given phase.
func NewBurstDetector(phase time.Duration) *BurstDetector {
	return &BurstDetector{phase: phase, window: make([]float64, 0, burstWindow)}
}

// Write takes pcm whose first sample was heard at start and returns the
// onsets completed by it (accepted and refused).
func (d *BurstDetector) Write(pcm []int16, start time.Time) []BurstOnset {
	var out []BurstOnset
	if !d.end.IsZero() {
		if gap := start.Sub(d.end); gap > burstGap || gap < -burstGap {
			if d.pending {
				out = append(out, BurstOnset{At: d.onsetAt, Refused: "cut off"})
			}
			d.reset()
		}
	}
	for i, v := range pcm {
		x := float64(v)
		if d.pending {
			if d.skip > 0 {
				d.skip--
			} else {
				d.window = append(d.window, x)
				if len(d.window) == burstWindow {
					out = append(out, d.attribute())
				}
			}
		}
		at := start.Add(time.Duration(float64(i) * float64(time.Second) / SampleRate))
		d.hist[d.histN%burstLookBack], d.histV[d.histN%burstLookBack] = at.UnixNano(), v
		d.histN++
		if math.Abs(x) >= burstOnAmp && !d.loud {
			d.loud = true
			afterQuiet := d.quiet >= burstQuietBlocks || (d.lastRun >= burstQuietBlocks && d.loudRun <= burstRiseBlocks)
			if !d.pending && afterQuiet {
				d.pending = true
				d.onsetAt = d.firstRise(at)
				d.skip = burstSkip
				d.window = d.window[:0]
			}
		}
		d.blockSum += x * x
		d.blockN++
		if d.blockN == burstBlock {
			if !d.loud && math.Sqrt(d.blockSum/burstBlock) < burstQuietRMS {
				d.quiet++
				d.lastRun, d.loudRun = 0, 0
			} else {
				if d.quiet > 0 {
					d.lastRun = d.quiet
				}
				d.quiet = 0
				d.loudRun++
			}
			d.blockSum, d.blockN, d.loud = 0, 0, false
		}
	}
	d.end = start.Add(time.Duration(float64(len(pcm)) * float64(time.Second) / SampleRate))
	return out
}

func (d *BurstDetector) reset() {
	d.quiet, d.lastRun, d.loudRun, d.histN = 0, 0, 0, 0
	d.blockSum, d.blockN, d.loud, d.pending = 0, 0, false, false
	d.window = d.window[:0]
}

// firstRise is the time of the earliest of the last lookBack samples (up
// to the one at at) at or above a quarter of onAmp.
func (d *BurstDetector) firstRise(at time.Time) time.Time {
	n := min(d.histN, burstLookBack)
	for j := n - 1; j >= 0; j-- {
		k := (d.histN - 1 - j) % burstLookBack
		if math.Abs(float64(d.histV[k])) >= burstOnAmp/4 {
			return time.Unix(0, d.hist[k])
		}
	}
	return at
}

// attribute measures the pending onset's tone and names its burst.
func (d *BurstDetector) attribute() BurstOnset {
	d.pending = false
	o := BurstOnset{At: d.onsetAt}
	code, freq, ok := toneCode(d.window)
	o.Freq = freq
	if !ok {
		o.Refused = "tone unclear"
		return o
	}
	// The latest burst start at or before the onset whose k has this
	// code.
	rel := o.At.UnixNano() - int64(d.phase)
	k := floorDiv(rel, int64(BurstPeriod))
	for ((k%4)+4)%4 != int64(code) {
		k--
	}
	start := time.Unix(0, k*int64(BurstPeriod)+int64(d.phase))
	if lat := o.At.Sub(start); lat > BurstMaxLatency {
		o.Refused = "too late"
		o.Latency = lat
		return o
	}
	o.K, o.Start, o.Latency = k, start, o.At.Sub(start)
	return o
}

// toneCode measures w's energy at each of BurstFreqs (Goertzel) and
// returns the code of the one that clearly dominates.
func toneCode(w []float64) (code int, freq float64, ok bool) {
	var total float64
	for _, x := range w {
		total += x * x
	}
	if total == 0 {
		return 0, 0, false
	}
	var pow [4]float64
	for c, f := range BurstFreqs {
		pow[c] = goertzel(w, f)
	}
	best, second := 0, -1
	for c := 1; c < 4; c++ {
		if pow[c] > pow[best] {
			best = c
		}
	}
	for c := range 4 {
		if c != best && (second < 0 || pow[c] > pow[second]) {
			second = c
		}
	}
	// A pure tone on a bin holds (N/2)²·A² of power against N·A²/2 of
	// energy: share 1.
	share := pow[best] * 2 / (float64(len(w)) * total)
	if share < burstToneShare || pow[best] < burstToneRatio*pow[second] {
		return best, BurstFreqs[best], false
	}
	return best, BurstFreqs[best], true
}

// goertzel is |X(f)|² of w at frequency f.
func goertzel(w []float64, f float64) float64 {
	c := 2 * math.Cos(2*math.Pi*f/SampleRate)
	var s1, s2 float64
	for _, x := range w {
		s1, s2 = x+c*s1-s2, s1
	}
	return s1*s1 + s2*s2 - c*s1*s2
}
