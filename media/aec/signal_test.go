package aec

import "github.com/doorbell/intercom/media/aec/aectest"

// The signals come from aectest, which media/alsa's live-path test shares;
// these names keep the tests of this package short.
var (
	farTalker  = aectest.Resident
	nearTalker = aectest.Visitor
	speech     = aectest.Speech
	room       = aectest.Room
	convolve   = aectest.Convolve
	noise      = aectest.Noise
	energy     = aectest.Energy
)

func toPCM(x []float64) []int16 {
	out := make([]int16, len(x))
	for i, v := range x {
		out[i] = clamp16(v * 32767)
	}
	return out
}

// libraries are the libraries this build has: WebRTC's is left out of
// board builds (tag noaecwebrtc).
func libraries() []Library {
	if webrtcBuilt {
		return []Library{WebRTC, Speex}
	}
	return []Library{Speex}
}
