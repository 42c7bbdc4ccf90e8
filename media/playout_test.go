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
	p := NewPlayout(20*time.Millisecond, 60*time.Millisecond)
	p.WritePCM([]int16{1, 2, 3})
	p.WritePCM([]int16{4, 5})
	out := make([]int16, 8)
	if n := p.Read(out); n != 5 {
		t.Fatalf("read %d real samples, want 5", n)
	}
	want := []int16{1, 2, 3, 4, 5, 0, 0, 0}
	for i := range want {
		if out[i] != want[i] {
			t.Fatalf("out = %v, want %v", out, want)
		}
	}
	// Wrap the ring many times; order must hold.
	next, expect := int16(0), int16(0)
	for range 1000 {
		in := make([]int16, 700)
		for i := range in {
			in[i] = next
			next++
		}
		p.WritePCM(in)
		got := make([]int16, 700)
		p.Read(got)
		for _, v := range got {
			if v != expect {
				t.Fatalf("got %d, want %d", v, expect)
			}
			expect++
		}
	}
}

func TestApplyGainSaturates(t *testing.T) {
	pcm := []int16{1000, -1000, 30000, -30000}
	ApplyGain(pcm, DBToGain(6))
	if pcm[0] < 1990 || pcm[0] > 2000 || pcm[2] != 32767 || pcm[3] != -32768 {
		t.Fatalf("gain: %v", pcm)
	}
}
