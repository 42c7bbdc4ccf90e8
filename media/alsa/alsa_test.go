package alsa

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/codec"
)

// testDir holds the ALSA configuration every test of this package uses and
// the files behind its PCMs. alsa-lib reads its configuration once per
// process, so it is written once, in TestMain, and names one PCM per use.
var testDir string

// asoundConf defines, for each name, a PCM whose playback is written to
// NAME.out.raw and whose capture reads NAME.in.raw, both over the null
// plugin: real alsa-lib code paths without a sound card. It replaces the
// system configuration entirely (ALSA_CONFIG_PATH), so nothing on the
// machine running the tests leaks in.
func asoundConf(dir string, names ...string) string {
	conf := ""
	for _, n := range names {
		conf += fmt.Sprintf(`pcm.%[1]s {
	type asym
	playback.pcm { type file; slave.pcm { type null }; file "%[2]s/%[1]s.out.raw"; format "raw" }
	capture.pcm { type file; slave.pcm { type null }; file "/dev/null"; infile "%[2]s/%[1]s.in.raw"; format "raw" }
}
`, n, dir)
	}
	return conf
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "alsa-test")
	if err != nil {
		panic(err)
	}
	testDir = dir
	conf := filepath.Join(dir, "asound.conf")
	if err := os.WriteFile(conf, []byte(asoundConf(dir, "mic", "micgain", "micmute", "spk", "spkmute", "spkmix", "bench", "echotap")), 0o600); err != nil {
		panic(err)
	}
	os.Setenv("ALSA_CONFIG_PATH", conf)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// sine returns d of a freq Hz sine at amp (of full scale), 48 kHz mono.
func sine(freq, amp float64, d time.Duration) []int16 {
	n := int(d * media.SampleRate / time.Second)
	out := make([]int16, n)
	for i := range out {
		out[i] = int16(amp * 32767 * math.Sin(2*math.Pi*freq*float64(i)/media.SampleRate))
	}
	return out
}

func writeRaw(t *testing.T, path string, pcm []int16) {
	t.Helper()
	b := make([]byte, 2*len(pcm))
	for i, v := range pcm {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(v))
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func readRaw(t *testing.T, path string) []int16 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]int16, len(b)/2)
	for i := range out {
		out[i] = int16(binary.LittleEndian.Uint16(b[2*i:]))
	}
	return out
}

func rmsDBFS(pcm []int16) float64 {
	var sum float64
	for _, v := range pcm {
		f := float64(v) / 32768
		sum += f * f
	}
	if sum == 0 {
		return math.Inf(-1)
	}
	return 10 * math.Log10(sum/float64(len(pcm)))
}

// TestMicrophoneToOpus feeds a 1 kHz tone at -12 dBFS peak (-15 dBov mean
// power) into capture and checks what comes out of the Opus path: packets
// every 20 ms, paced in real time, decoding to the tone's level (shifted by
// the configured gain), or to silence when muted.
func TestMicrophoneToOpus(t *testing.T) {
	for _, tc := range []struct {
		pcm    string
		gainDB float64
		mute   bool
		want   float64 // dBov
	}{
		{"mic", 0, false, -15},
		{"micgain", 6, false, -9},
		{"micmute", 0, true, media.SilenceDBov},
	} {
		t.Run(tc.pcm, func(t *testing.T) {
			writeRaw(t, filepath.Join(testDir, tc.pcm+".in.raw"), sine(1000, 0.25, 3*time.Second))
			mic, err := OpenMicrophone(tc.pcm, tc.gainDB, tc.mute, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer mic.Close()
			enc, err := codec.NewOpus(media.AudioEncoderConfig{Bitrate: 32000})
			if err != nil {
				t.Fatal(err)
			}
			defer enc.Close()
			meter := media.NewAudioMeter()
			rx, err := media.NewOpusReceiver(meter, nil)
			if err != nil {
				t.Fatal(err)
			}
			const frames = 50
			start := time.Now()
			for range frames {
				pcm, err := mic.ReadAudio(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				pkt, err := enc.Encode(pcm)
				if err != nil {
					t.Fatal(err)
				}
				if len(pkt) == 0 {
					t.Fatal("empty opus packet")
				}
				if err := rx.WriteOpus(pkt, media.NoLevel, time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			took := time.Since(start)
			// The null plugin has no clock; the microphone must keep real
			// time itself or the encoder would run flat out.
			if took < frames*media.AudioFrame*9/10 {
				t.Errorf("%d frames read in %v: not paced", frames, took)
			}
			got := meter.Snapshot()
			if got.Packets != frames {
				t.Errorf("%d packets, want %d", got.Packets, frames)
			}
			if tc.mute && got.Level > -70 {
				// Silence goes as DTX frames of a byte or two, which the
				// decoder fills with a faint comfort noise (-77 dBov
				// here; -90 before DTX).
				t.Errorf("muted microphone at %.1f dBov", got.Level)
			}
			if !tc.mute && math.Abs(got.Level-tc.want) > 1.5 {
				t.Errorf("level %.1f dBov, want %.1f", got.Level, tc.want)
			}
			t.Logf("%d packets in %v, level %.1f dBov", got.Packets, took.Round(time.Millisecond), got.Level)
		})
	}
}

// TestSpeakerPlaysToFile writes a tone into the speaker the way the peers
// do (20 ms at a time, never blocking) and checks that it lands, non-silent
// and at the right level after gain, in the file the playback PCM writes;
// muted, the file holds silence.
func TestSpeakerPlaysToFile(t *testing.T) {
	for _, tc := range []struct {
		pcm    string
		gainDB float64
		mute   bool
	}{
		{"spk", -6, false},
		{"spkmute", 0, true},
	} {
		t.Run(tc.pcm, func(t *testing.T) {
			out := filepath.Join(testDir, tc.pcm+".out.raw")
			spk := NewSpeaker(tc.pcm, tc.gainDB, tc.mute, nil, nil)
			play(t, spk, sine(440, 0.5, time.Second))
			pcm := readRaw(t, out)
			if len(pcm) < media.SampleRate/2 {
				t.Fatalf("only %d samples played", len(pcm))
			}
			// The loudest second of the file is the tone.
			best := math.Inf(-1)
			for i := 0; i+media.AudioFrameSamples <= len(pcm); i += media.AudioFrameSamples {
				best = max(best, rmsDBFS(pcm[i:i+media.AudioFrameSamples]))
			}
			want := 20*math.Log10(0.5) - 3 + tc.gainDB // sine RMS is 3 dB below its peak
			if tc.mute {
				if !math.IsInf(best, -1) {
					t.Fatalf("muted speaker played %.1f dBFS", best)
				}
				return
			}
			if math.Abs(best-want) > 1 {
				t.Fatalf("played at %.1f dBFS, want %.1f", best, want)
			}
			st := spk.Stats()
			t.Logf("%d samples in file, tone at %.1f dBFS; playout: max level %v, %d underflows, dropped %d",
				len(pcm), best, st.MaxLevel, st.Underflows, st.Dropped)
		})
	}
}

// play runs spk and feeds each voice, one input each, in real time, 20 ms
// at a time (as a network would), then stops the speaker once it had time
// to play what it holds.
func play(t *testing.T, spk *Speaker, voices ...[]int16) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- spk.Run(ctx) }()
	ins := make([]media.PCMInput, len(voices))
	for i := range voices {
		ins[i] = spk.NewInput()
	}
	tick := time.NewTicker(media.AudioFrame)
	for i := 0; i+media.AudioFrameSamples <= len(voices[0]); i += media.AudioFrameSamples {
		<-tick.C
		for j, v := range voices {
			ins[j].WritePCM(v[i : i+media.AudioFrameSamples])
		}
	}
	tick.Stop()
	time.Sleep(200 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, in := range ins {
		in.Close()
	}
}

// goertzelAmp is the amplitude (of full scale) of the freq Hz component
// of pcm.
func goertzelAmp(pcm []int16, freq float64) float64 {
	w := 2 * math.Pi * freq / media.SampleRate
	c := 2 * math.Cos(w)
	var s1, s2 float64
	for _, v := range pcm {
		s0 := float64(v)/32768 + c*s1 - s2
		s2, s1 = s1, s0
	}
	p := s1*s1 + s2*s2 - c*s1*s2
	return 2 * math.Sqrt(p) / float64(len(pcm))
}

// Two residents talking at once, through real alsa-lib: both voices are
// heard, together, for as long as they spoke (not one after the other, and
// not cut by an overflowing buffer).
func TestSpeakerMixesResidents(t *testing.T) {
	out := filepath.Join(testDir, "spkmix.out.raw")
	spk := NewSpeaker("spkmix", 0, false, nil, nil)
	play(t, spk, sine(440, 0.3, time.Second), sine(1000, 0.3, time.Second))
	pcm := readRaw(t, out)
	// Each 20 ms frame is judged on its own: the limiter's 2 ms
	// lookahead shifts the voices off the frame grid, and a playout
	// underflow (the real-time feeder is late) pads a period of silence in
	// the middle, so frames are not all whole; a frame with both tones is
	// voice, a frame with one of them alone would be the residents heard
	// one after the other.
	voiced, alone := 0, 0
	var amp [2]float64
	for i := 0; i+media.AudioFrameSamples <= len(pcm); i += media.AudioFrameSamples {
		f := pcm[i : i+media.AudioFrameSamples]
		a, b := goertzelAmp(f, 440), goertzelAmp(f, 1000)
		switch {
		case a > 0.15 && b > 0.15:
			voiced++
			amp[0], amp[1] = amp[0]+a, amp[1]+b
		case a > 0.15 || b > 0.15:
			alone++
		}
	}
	// One second of talk is 50 frames; a little jitter at the start and
	// end may cost a frame or two.
	if voiced < 45 || voiced > 52 {
		t.Fatalf("%d frames of voice played, want about 50", voiced)
	}
	if alone > 0 {
		t.Errorf("%d frames with one resident alone: the voices were not mixed", alone)
	}
	for i, f := range []float64{440, 1000} {
		if a := amp[i] / float64(voiced); a < 0.25 || a > 0.35 {
			t.Errorf("%v Hz at %.2f of full scale, want 0.3", f, a)
		}
	}
	if st := spk.Stats(); st.Dropped > 2*media.AudioFrameSamples {
		t.Errorf("dropped %d samples", st.Dropped)
	}
}

func TestOpenMissingDevice(t *testing.T) {
	if _, err := OpenMicrophone("no_such_pcm", 0, false, nil); err == nil {
		t.Fatal("opened a PCM that does not exist")
	}
}
