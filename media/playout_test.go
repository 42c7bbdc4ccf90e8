package media

import (
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

// TestPlayoutDelayStaysBoundedForAnHour plays an hour-long call in
// simulated time: the resident's packets are sent by a clock 300 ppm faster
// than the sound card's, arrive with up to 60 ms of jitter and now and then
// in bursts after a stall. The delay the buffer adds must never exceed its
// bound, and must be no larger in the last minute than in the first ones.
func TestPlayoutDelayStaysBoundedForAnHour(t *testing.T) {
	const (
		target = 40 * time.Millisecond
		bound  = 120 * time.Millisecond
		hour   = time.Hour
		ppm    = 300
	)
	p := NewPlayout(target, bound)
	rng := rand.New(rand.NewPCG(1, 2))
	sendPeriod := AudioFrame - AudioFrame*ppm/1_000_000
	frame := make([]int16, AudioFrameSamples)
	for i := range frame {
		frame[i] = 1000
	}
	out := make([]int16, AudioFrameSamples)

	// Arrival times of every packet, then a merge with the card's pulls.
	var arrivals []time.Duration
	for sent := time.Duration(0); sent < hour; sent += sendPeriod {
		j := time.Duration(rng.IntN(60)) * time.Millisecond
		if rng.IntN(3000) == 0 {
			j += 500 * time.Millisecond // a stall, then a burst
		}
		arrivals = append(arrivals, sent+j)
	}
	sort.Slice(arrivals, func(i, j int) bool { return arrivals[i] < arrivals[j] })
	var early, late time.Duration
	a := 0
	for now := time.Duration(0); now < hour; now += AudioFrame {
		for a < len(arrivals) && arrivals[a] <= now {
			p.WritePCM(frame)
			a++
		}
		lvl := p.Level()
		if lvl > bound {
			t.Fatalf("at %v the buffer holds %v, above its bound %v", now, lvl, bound)
		}
		switch {
		case now < 5*time.Minute:
			early = max(early, lvl)
		case now > hour-time.Minute:
			late = max(late, lvl)
		}
		p.Read(out)
	}
	st := p.Stats()
	t.Logf("max delay first 5 min %v, last minute %v; dropped %v in %d events; %d underflows",
		early, late, durationOf(int(st.Dropped)), st.DropEvents, st.Underflows)
	if late > bound || st.MaxLevel > bound {
		t.Fatalf("delay crept: last minute %v, max %v", late, st.MaxLevel)
	}
	if st.DropEvents == 0 {
		t.Fatal("a faster sender never hit the bound: the test does not test it")
	}
}

func TestPlayoutOrderAndSilence(t *testing.T) {
	p := NewPlayout(AudioFrame, 3*AudioFrame)
	out := make([]int16, AudioFrameSamples)
	// Prefill: less than the target plays nothing.
	p.WritePCM(make([]int16, AudioFrameSamples/2))
	if n := p.Read(out); n != 0 {
		t.Fatalf("read %d real samples while prefilling, want 0", n)
	}
	// Loud samples (the buffer never trims those), in order, across many
	// wraps of the ring; a short write is padded with silence.
	next, expect := 0, 0
	loud := func(i int) int16 { return int16(2000 + i%20000) }
	write := func(k int) {
		in := make([]int16, k)
		for i := range in {
			in[i] = loud(next)
			next++
		}
		p.WritePCM(in)
	}
	p = NewPlayout(AudioFrame, 3*AudioFrame)
	write(AudioFrameSamples)
	for range 1000 {
		write(700)
		got := make([]int16, 700)
		if n := p.Read(got); n != 700 {
			t.Fatalf("read %d, want 700", n)
		}
		for _, v := range got {
			if v != loud(expect) {
				t.Fatalf("got %d, want %d", v, loud(expect))
			}
			expect++
		}
	}
	long := make([]int16, p.Stats().Bound*SampleRate/time.Second)
	n := p.Read(long)
	if n != next-expect || long[n-1] != loud(next-1) || long[n] != 0 || long[len(long)-1] != 0 {
		t.Fatalf("last read %d of %d held, ends %d %d %d", n, next-expect, long[n-1], long[n], long[len(long)-1])
	}
}

// arrive plays d of a call: 20 ms frames sent on time arrive up to
// jitter late (uniformly, seeded), the card reads a period every 20 ms.
// talk gives frame i's value; played sees each period's first sample.
func arrive(p *Playout, d, jitter time.Duration, seed uint64, talk func(i int) int16, played func(v int16)) {
	rng := rand.New(rand.NewPCG(seed, 7))
	var arrivals []time.Duration
	for sent := time.Duration(0); sent < d; sent += AudioFrame {
		j := time.Duration(0)
		if jitter > 0 {
			j = time.Duration(rng.Int64N(int64(jitter)))
		}
		arrivals = append(arrivals, sent+j)
	}
	sort.Slice(arrivals, func(i, j int) bool { return arrivals[i] < arrivals[j] })
	out := make([]int16, AudioFrameSamples)
	a := 0
	for now := time.Duration(0); now < d; now += AudioFrame {
		for a < len(arrivals) && arrivals[a] <= now {
			p.WritePCM(constFrame(talk(a)))
			a++
		}
		p.Read(out)
		if played != nil {
			played(out[0])
		}
	}
}

// TestPlayoutAdaptsToJitter: a link with 80 ms of jitter runs a buffer
// that starts at one period dry; it raises its target until it (almost)
// stops running dry, without exceeding its bound.
func TestPlayoutAdaptsToJitter(t *testing.T) {
	p := NewPlayout(AudioFrame, 120*time.Millisecond)
	speech := func(int) int16 { return 3000 }
	arrive(p, 30*time.Second, 80*time.Millisecond, 1, speech, nil)
	early := p.Stats()
	if early.Underflows == 0 || early.Target <= AudioFrame {
		t.Fatalf("a jittery link never ran the buffer dry or raised its target: %+v", early)
	}
	arrive(p, 60*time.Second, 80*time.Millisecond, 2, speech, nil)
	late := p.Stats()
	// Uniform jitter has a tail: a rare underflow may stay (each one
	// raises the target), a few a minute at most.
	if n := late.Underflows - early.Underflows; n > 3 {
		t.Errorf("still running dry: %d underflows in the next minute, %d in the first 30 s (target %v)",
			n, early.Underflows, late.Target)
	}
	if late.MaxLevel > late.Bound || late.Target > late.Bound-AudioFrame {
		t.Errorf("level %v or target %v beyond the bound %v", late.MaxLevel, late.Target, late.Bound)
	}
	t.Logf("target %v after 30 s (%d underflows), %v after 90 s; max level %v", early.Target, early.Underflows, late.Target, late.MaxLevel)
}

// TestPlayoutShrinksWhenJitterGoes: once the link is steady again the
// buffer lets its reserve go, only from pauses in speech: every loud
// frame written is played, and the delay comes back to a period or two.
func TestPlayoutShrinksWhenJitterGoes(t *testing.T) {
	p := NewPlayout(AudioFrame, 120*time.Millisecond)
	// Speech: 1.4 s of talk, 0.6 s of pause.
	talk := func(i int) int16 {
		if i%100 < 70 {
			return 5000
		}
		return 20
	}
	var loudWritten, loudPlayed int
	count := func(i int) int16 {
		v := talk(i)
		if v > quietPeak {
			loudWritten++
		}
		return v
	}
	played := func(v int16) {
		if v > quietPeak {
			loudPlayed++
		}
	}
	arrive(p, 20*time.Second, 100*time.Millisecond, 3, count, played)
	jittery := p.Stats()
	arrive(p, 60*time.Second, 0, 4, count, played)
	steady := p.Stats()
	if jittery.Target <= AudioFrame || jittery.MaxLevel < 60*time.Millisecond {
		t.Fatalf("target %v, most held %v on a link with 100 ms of jitter: want both raised", jittery.Target, jittery.MaxLevel)
	}
	if steady.Target > 2*AudioFrame || steady.Level > 2*AudioFrame || steady.Trimmed == 0 {
		t.Errorf("after a minute of a steady link: target %v, level %v, trimmed %v; want the reserve let go",
			steady.Target, steady.Level, durationOf(int(steady.Trimmed)))
	}
	if steady.Underflows != jittery.Underflows {
		t.Errorf("letting the reserve go ran it dry: %d underflows, %d before", steady.Underflows, jittery.Underflows)
	}
	// Every loud frame written was played whole (one period each here,
	// minus what still waits in the buffer).
	if held := int(steady.Level / AudioFrame); loudPlayed+held < loudWritten || steady.Dropped != 0 {
		t.Errorf("played %d loud periods of %d written (%d held), dropped %d samples: speech was cut",
			loudPlayed, loudWritten, held, steady.Dropped)
	}
	t.Logf("target %v (level %v) on the jittery link, %v (level %v) a minute after; trimmed %v",
		jittery.Target, jittery.Level, steady.Target, steady.Level, durationOf(int(steady.Trimmed)))
}

func TestApplyGainSaturates(t *testing.T) {
	pcm := []int16{1000, -1000, 30000, -30000}
	ApplyGain(pcm, DBToGain(6))
	if pcm[0] < 1990 || pcm[0] > 2000 || pcm[2] != 32767 || pcm[3] != -32768 {
		t.Fatalf("gain: %v", pcm)
	}
}

// TestPlayoutIgnoresSenderPauses: a resident who talks in spurts with
// DTX pauses between them runs the buffer dry at every pause. Told that
// the sender paused (SenderPaused), it keeps its target: no delay grows
// from pauses in speech. Untold (the control), every pause raises it.
func TestPlayoutIgnoresSenderPauses(t *testing.T) {
	run := func(told bool) PlayoutStats {
		p := NewPlayout(AudioFrame, 120*time.Millisecond)
		frame, out := make([]int16, AudioFrameSamples), make([]int16, AudioFrameSamples)
		for i := range frame {
			frame[i] = 3000
		}
		for range 10 {
			for range 50 { // a second of speech, each frame on time
				p.WritePCM(frame)
				p.Read(out)
			}
			for range 25 { // half a second of DTX: nothing arrives
				p.Read(out)
			}
			if told {
				p.SenderPaused()
			}
		}
		p.WritePCM(frame)
		return p.Stats()
	}
	told, untold := run(true), run(false)
	if told.Target != AudioFrame || told.Underflows != 0 || told.Pauses != 10 {
		t.Errorf("pauses told: target %v, %d underflows, %d pauses; want %v, 0, 10", told.Target, told.Underflows, told.Pauses, AudioFrame)
	}
	if untold.Target <= 3*AudioFrame || untold.Underflows != 10 || untold.Pauses != 0 {
		t.Errorf("control, pauses untold: target %v, %d underflows, %d pauses; want the target raised at each of 10", untold.Target, untold.Underflows, untold.Pauses)
	}
}

// TestPlayoutPauseAfterAudioIsJitter: SenderPaused takes back only a dry
// spell with nothing written since; audio that came late and was written
// before it keeps the raise.
func TestPlayoutPauseAfterAudioIsJitter(t *testing.T) {
	p := NewPlayout(AudioFrame, 120*time.Millisecond)
	frame, out := make([]int16, AudioFrameSamples), make([]int16, AudioFrameSamples)
	p.WritePCM(frame)
	p.Read(out)
	p.Read(out) // dry: late audio
	p.WritePCM(frame)
	p.SenderPaused()
	if s := p.Stats(); s.Target != 2*AudioFrame || s.Underflows != 1 || s.Pauses != 0 {
		t.Errorf("late audio then a pause: target %v, %d underflows, %d pauses; want the raise kept", s.Target, s.Underflows, s.Pauses)
	}
}
