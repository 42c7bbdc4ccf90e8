package media

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/pion/opus"
)

// SilenceDBov is the level reported for digital silence, the floor of the
// RFC 6464 audio level scale (0 to -127 dBov).
const SilenceDBov = -127

// ReceivedAudio is a snapshot of the audio received from residents.
type ReceivedAudio struct {
	Packets      uint64 `json:"packets"`
	Bytes        uint64 `json:"bytes"`
	DecodeErrors uint64 `json:"decode_errors"`
	// Skipped counts packets not decoded: silent, or beyond the MaxVoices
	// loudest residents, by the level their sender wrote (RFC 6464).
	Skipped uint64 `json:"skipped"`
	// Lost counts packets that never came (gaps in the RTP sequence);
	// Concealed the 20 ms frames the decoder filled in for them, Recovered
	// those of them rebuilt from the next packet's in-band FEC.
	Lost      uint64 `json:"lost"`
	Concealed uint64 `json:"concealed"`
	Recovered uint64 `json:"recovered"`
	// Level is the recent signal power in dBov (RFC 6464 §3: 0 dBov is a
	// full-scale square wave; a full-scale sine is -3 dBov), smoothed over
	// about 300 ms. SilenceDBov means silence or nothing received.
	Level      float64   `json:"level_dbov"`
	LastPacket time.Time `json:"last_packet"` // zero if nothing was received
}

// PCMSink receives decoded audio: 48 kHz mono, one packet's worth per call
// (usually 20 ms). WritePCM must not block; the slice is reused after it
// returns. The ALSA speaker implements it.
type PCMSink interface {
	WritePCM(pcm []int16)
}

// PCMInput is one stream's input to a speaker that mixes several (a
// MixerInput): a PCMSink that is closed when the stream ends.
type PCMInput interface {
	PCMSink
	Close()
}

// PauseSink is a PCMSink that wants to know when the silence before the
// next audio was the sender's (or the receiver's) choice rather than the
// network's: a jitter buffer should not grow for it (Playout.SenderPaused).
type PauseSink interface {
	SenderPaused()
}

// Speaker plays residents' voices, each remote stream through an input of
// its own (a Mixer; media/alsa's Speaker).
type Speaker interface {
	NewInput() PCMInput
}

// AudioMeter accumulates what every OpusReceiver decodes. It is safe for
// concurrent use.
type AudioMeter struct {
	mu     sync.Mutex
	snap   ReceivedAudio
	power  float64 // smoothed mean square, full scale = 1
	lastAt time.Time
}

// NewAudioMeter returns an empty meter.
func NewAudioMeter() *AudioMeter {
	return &AudioMeter{snap: ReceivedAudio{Level: SilenceDBov}}
}

// Snapshot returns the counters and level so far.
func (m *AudioMeter) Snapshot() ReceivedAudio {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snap
}

const levelTau = 300 * time.Millisecond

func (m *AudioMeter) add(bytes int, pcm []int16, decodeErr bool, now time.Time) {
	var sum float64
	for _, v := range pcm {
		f := float64(v) / 32768
		sum += f * f
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snap.Packets++
	m.snap.Bytes += uint64(bytes)
	m.snap.LastPacket = now
	if decodeErr {
		m.snap.DecodeErrors++
		return
	}
	if len(pcm) == 0 {
		return
	}
	m.smooth(sum/float64(len(pcm)), time.Duration(len(pcm))*time.Second/SampleRate, now)
}

// addLost counts lost packets and the frames filled in for them.
func (m *AudioMeter) addLost(lost, concealed, recovered int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snap.Lost += uint64(lost)
	m.snap.Concealed += uint64(concealed)
	m.snap.Recovered += uint64(recovered)
}

// addSkipped counts a packet that was not decoded, metering the level its
// sender wrote for it as one 20 ms frame (what browsers send).
func (m *AudioMeter) addSkipped(bytes int, level AudioLevel, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.snap.Packets++
	m.snap.Bytes += uint64(bytes)
	m.snap.Skipped++
	m.snap.LastPacket = now
	m.smooth(math.Pow(10, -float64(level)/10), AudioFrame, now)
}

// smooth folds a mean square ms lasting d into the level. Called with mu
// held.
func (m *AudioMeter) smooth(ms float64, d time.Duration, now time.Time) {
	// Exponential smoothing weighted by the packet's duration, so packet
	// size does not change the time constant.
	a := 1 - math.Exp(-float64(d)/float64(levelTau))
	if m.lastAt.IsZero() || now.Sub(m.lastAt) > time.Second {
		m.power = ms
	} else {
		m.power += a * (ms - m.power)
	}
	m.lastAt = now
	m.snap.Level = dBov(m.power)
}

// dBov converts a mean square (full-scale square wave = 1) to dBov,
// clamped to the RFC 6464 range.
func dBov(ms float64) float64 {
	if ms <= 0 {
		return SilenceDBov
	}
	return math.Max(SilenceDBov, math.Min(0, 10*math.Log10(ms)))
}

// OpusDecoder decodes one Opus stream to 48 kHz mono, returning the number
// of samples written to pcm.
type OpusDecoder interface {
	DecodeToInt16(payload []byte, pcm []int16) (int, error)
}

// LossDecoder is an OpusDecoder that can fill in a lost frame: from the
// in-band FEC of next (the packet after it) when next is not nil, else by
// concealment (libopus; pion/opus cannot).
type LossDecoder interface {
	DecodeLost(next []byte, pcm []int16) (int, error)
}

// maxConceal bounds the frames filled in for one gap: past 100 ms a
// decoder's concealment is a fading buzz, and the playout buffer's own
// prefill after running dry serves the listener better.
const maxConceal = 5

// OpusReceiver decodes one remote Opus stream (one SSRC), feeds the meter
// and passes the PCM on. It is used by one goroutine (the track's reader).
// A receiver made by a Stream decodes only what its voice selection lets
// through (see MaxVoices and VoiceGate); Close takes it out of that.
type OpusReceiver struct {
	meter  *AudioMeter
	sink   PCMSink
	dec    OpusDecoder
	pcm    []int16
	voices *voices // nil: decode everything
	voice  *voice
	input  PCMInput // the speaker's input this receiver owns, or nil

	seq     uint16 // the last RTP sequence number written (WriteRTP)
	ts      uint32 // and its RTP timestamp
	haveSeq bool
	frame   int // samples of the last decoded frame: what a lost one fills
}

// NewOpusReceiver returns a receiver decoding to 48 kHz mono with the
// pure-Go decoder of github.com/pion/opus, which handles the SILK, hybrid
// and CELT modes browsers send. sink may be nil.
func NewOpusReceiver(meter *AudioMeter, sink PCMSink) (*OpusReceiver, error) {
	dec, err := newPionOpus()
	if err != nil {
		return nil, fmt.Errorf("new opus decoder: %w", err)
	}
	return NewOpusReceiverWith(meter, sink, dec), nil
}

func newPionOpus() (OpusDecoder, error) {
	dec, err := opus.NewDecoderWithOutput(SampleRate, 1)
	if err != nil {
		return nil, err
	}
	return &dec, nil
}

// NewOpusReceiverWith returns a receiver decoding with dec.
func NewOpusReceiverWith(meter *AudioMeter, sink PCMSink, dec OpusDecoder) *OpusReceiver {
	// 120 ms is the longest Opus packet (RFC 6716 §3.2.5).
	return &OpusReceiver{meter: meter, sink: sink, dec: dec, pcm: make([]int16, SampleRate*120/1000), frame: AudioFrameSamples}
}

// NewOpusReceiver returns a receiver for one resident's Opus stream using
// the stream's configured decoder (Encoders.DecodeOpus; libopus in the
// daemon, several times cheaper than the pure-Go one, which matters with
// several residents talking), else pion/opus. It plays to an input of its
// own on spk (may be nil) and joins the stream's voice selection; Close
// leaves both.
func (s *Stream) NewOpusReceiver(meter *AudioMeter, spk Speaker) (*OpusReceiver, error) {
	newDec := newPionOpus
	if s.cfg.Encoders.DecodeOpus != nil {
		newDec = s.cfg.Encoders.DecodeOpus
	}
	dec, err := newDec()
	if err != nil {
		return nil, fmt.Errorf("new opus decoder: %w", err)
	}
	var in PCMInput
	var sink PCMSink
	if spk != nil {
		in = spk.NewInput()
		sink = in
	}
	r := NewOpusReceiverWith(meter, sink, dec)
	r.voices, r.voice, r.input = s.voices, s.voices.add(), in
	return r, nil
}

// WriteOpus handles one RTP payload received at now; level is what the
// sender wrote in the packet's header extension, or NoLevel. It knows no
// sequence numbers, so it cannot tell a lost packet: WriteRTP can.
func (r *OpusReceiver) WriteOpus(payload []byte, level AudioLevel, now time.Time) error {
	return r.write(payload, level, now, 0)
}

// WriteRTP is WriteOpus for the packet with RTP sequence number seq and
// timestamp ts. A packet that follows the last without a gap in sequence
// numbers but more than a frame later in RTP time ends a pause the sender
// made on purpose (Opus DTX sends nothing while nobody speaks): the sink
// is told (PauseSink), so that its jitter buffer does not grow for it. A
// gap since the last one is filled in before the packet's audio, so the
// speaker's playout keeps its level instead of running dry: the last lost
// frame from this packet's in-band FEC (which browsers and Opus senders
// with useinbandfec=1 carry), earlier ones by libopus's concealment, at
// most maxConceal frames. A duplicate or a packet older than the last
// (reordered past its place) is dropped: its time was filled in already.
// Concealment needs a LossDecoder; with another decoder gaps are only
// counted.
func (r *OpusReceiver) WriteRTP(seq uint16, ts uint32, payload []byte, level AudioLevel, now time.Time) error {
	lost := 0
	if r.haveSeq {
		d := seq - r.seq // modulo 2^16: wrap-around is just the next packet
		if d == 0 || d >= 1<<15 {
			return nil
		}
		lost = int(d) - 1
		// Opus's RTP clock is 48 kHz whatever the audio (RFC 7587), the
		// rate r.frame counts in; a jump backwards is a new source.
		if jump := ts - r.ts; lost == 0 && jump > uint32(r.frame) && jump < 1<<31 {
			r.paused()
		}
	}
	r.seq, r.ts, r.haveSeq = seq, ts, true
	return r.write(payload, level, now, lost)
}

// paused tells the sink that the silence before what comes next was
// chosen, not lost.
func (r *OpusReceiver) paused() {
	if ps, ok := r.sink.(PauseSink); ok {
		ps.SenderPaused()
	}
}

func (r *OpusReceiver) write(payload []byte, level AudioLevel, now time.Time, lost int) error {
	if len(payload) == 0 {
		return nil
	}
	if level != NoLevel && r.voices != nil && !r.voices.audible(r.voice, level, now) {
		// Silent, or a third voice: not decoding it is what keeps a
		// household's listeners from costing the door CPU each. The
		// decoder picks up again from the next packet it gets; what was
		// lost before a silent packet is left silent.
		r.meter.addSkipped(len(payload), level, now)
		r.paused() // the speaker running dry meanwhile is our choice
		if lost > 0 {
			r.meter.addLost(lost, 0, 0)
		}
		return nil
	}
	if lost > 0 {
		r.conceal(lost, payload)
	}
	n, err := r.dec.DecodeToInt16(payload, r.pcm)
	if err != nil {
		r.meter.add(len(payload), nil, true, now)
		return fmt.Errorf("decode opus: %w", err)
	}
	pcm := r.pcm[:n]
	if n > 0 {
		r.frame = n
	}
	r.meter.add(len(payload), pcm, false, now)
	if r.sink != nil {
		r.sink.WritePCM(pcm)
	}
	return nil
}

// conceal fills in lost frames before next: concealment, then the last
// one from next's FEC.
func (r *OpusReceiver) conceal(lost int, next []byte) {
	ld, ok := r.dec.(LossDecoder)
	if !ok {
		r.meter.addLost(lost, 0, 0)
		return
	}
	fill := min(lost, maxConceal)
	concealed, recovered := 0, 0
	for i := range fill {
		var from []byte
		if i == fill-1 {
			from = next
		}
		n, err := ld.DecodeLost(from, r.pcm[:min(r.frame, len(r.pcm))])
		if err != nil || n == 0 {
			continue
		}
		concealed++
		if from != nil {
			recovered++
		}
		if r.sink != nil {
			r.sink.WritePCM(r.pcm[:n])
		}
	}
	r.meter.addLost(lost, concealed, recovered)
}

// Close takes the receiver out of its stream's voice selection, so a
// resident who left never holds a voice's place, and out of the speaker's
// mix.
func (r *OpusReceiver) Close() {
	if r.voices != nil {
		r.voices.remove(r.voice)
	}
	if r.input != nil {
		r.input.Close()
	}
}
