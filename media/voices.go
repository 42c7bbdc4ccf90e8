package media

import (
	"math"
	"sync"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// AudioLevel is the level a sender wrote into one packet's RFC 6464
// header extension: 0 (loudest) to 127, in -dBov. NoLevel means the
// packet carried none.
type AudioLevel int8

// NoLevel marks a packet without an audio level.
const NoLevel AudioLevel = -1

// AudioLevelExtension returns the header extension ID negotiated for RFC
// 6464 audio levels in a receiver's parameters, or 0 if none was.
func AudioLevelExtension(p webrtc.RTPParameters) uint8 {
	for _, e := range p.HeaderExtensions {
		if e.URI == sdp.AudioLevelURI {
			return uint8(e.ID)
		}
	}
	return 0
}

// LevelOf reads the audio level from a packet's header extension id (0:
// not negotiated); NoLevel if it is absent or malformed.
func LevelOf(h *rtp.Header, id uint8) AudioLevel {
	if id == 0 {
		return NoLevel
	}
	b := h.GetExtension(id)
	if b == nil {
		return NoLevel
	}
	var ext rtp.AudioLevelExtension
	if ext.Unmarshal(b) != nil {
		return NoLevel
	}
	return AudioLevel(ext.Level)
}

// Voice selection: what a mixer feeding one small speaker needs to decode.
const (
	// MaxVoices is how many residents are decoded and mixed at once. A
	// third voice over a door speaker is noise, and decoding is the part
	// of a resident's audio that costs the door CPU (about 30 µs per
	// packet): with four residents talking it grew with every one.
	MaxVoices = 2
	// VoiceGate is the level below which a packet is not decoded: -70
	// dBov is a quiet room after the sender's noise suppression, far
	// below speech (-20 to -40 dBov) and inaudible on a door speaker.
	VoiceGate = 70
	// voiceHangover keeps a voice decoded that long after its last packet
	// above the gate, so the ends of words and short pauses are kept.
	voiceHangover = 400 * time.Millisecond
	// voiceSwitchDB is how much louder a new voice must be to take the
	// place of a selected one, so two similar voices do not flap.
	voiceSwitchDB = 6
)

// voices decides, from the levels senders write into their packets (RFC
// 6464; Chromium, Firefox, Safari and libwebrtc apps all send them), whose
// audio is worth decoding: a voice above the gate, among the MaxVoices
// loudest. Streams without levels are always decoded. Safe for concurrent
// use; every receiver of a Stream shares its voices.
type voices struct {
	max int

	mu   sync.Mutex
	list []*voice
}

// voice is one stream's state in the selection.
type voice struct {
	power    float64   // smoothed mean square of the levels (full scale 1)
	at       time.Time // last level
	loudAt   time.Time // last level above the gate
	selected bool
}

func newVoices(n int) *voices { return &voices{max: n} }

func (vs *voices) add() *voice {
	v := &voice{}
	vs.mu.Lock()
	vs.list = append(vs.list, v)
	vs.mu.Unlock()
	return v
}

func (vs *voices) remove(v *voice) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	for i, x := range vs.list {
		if x == v {
			vs.list = append(vs.list[:i], vs.list[i+1:]...)
			return
		}
	}
}

// active says whether v has been above the gate within the hangover.
func (v *voice) active(now time.Time) bool {
	return !v.loudAt.IsZero() && now.Sub(v.loudAt) < voiceHangover
}

// audible records a packet of v at level and says whether to decode it.
func (vs *voices) audible(v *voice, level AudioLevel, now time.Time) bool {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	ms := math.Pow(10, -float64(level)/10)
	if v.at.IsZero() || now.Sub(v.at) > time.Second {
		v.power = ms
	} else {
		a := 1 - math.Exp(-float64(now.Sub(v.at))/float64(levelTau))
		v.power += a * (ms - v.power)
	}
	v.at = now
	if level < VoiceGate {
		v.loudAt = now
	}
	if !v.active(now) {
		v.selected = false
		return false
	}
	if v.selected {
		return true
	}
	var n int
	var quietest *voice
	for _, x := range vs.list {
		if !x.selected {
			continue
		}
		if !x.active(now) {
			x.selected = false // it stopped sending; its place is free
			continue
		}
		n++
		if quietest == nil || x.power < quietest.power {
			quietest = x
		}
	}
	switch {
	case n < vs.max:
	case dBov(v.power) >= dBov(quietest.power)+voiceSwitchDB:
		quietest.selected = false
	default:
		return false
	}
	v.selected = true
	return true
}
