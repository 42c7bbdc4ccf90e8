//go:build noaecwebrtc

package aec

import (
	"errors"
	"time"
)

const webrtcBuilt = false

// webrtcEngine stands in for WebRTC's canceller in builds without it (the
// tag noaecwebrtc: board builds); New reports it missing.
type webrtcEngine struct{}

func newWebRTC(Options) (*webrtcEngine, error) {
	return nil, errors.New("built without webrtc-audio-processing (tag noaecwebrtc)")
}

func (*webrtcEngine) far([]int16) error                 { return nil }
func (*webrtcEngine) near([]int16, time.Duration) error { return nil }
func (*webrtcEngine) close()                            {}
