// WebRTC's canceller is built only for comparison (the door runs Speex):
// board builds leave it out with the tag noaecwebrtc, which spares them
// the C++ library (Buildroot ships webrtc-audio-processing 1.3, whose API
// this shim does not build against) and its 658 KB.

//go:build !noaecwebrtc

package aec

/*
#cgo pkg-config: webrtc-audio-processing
#cgo CXXFLAGS: -std=c++11
#include <stdlib.h>
#include "webrtc_shim.h"
*/
import "C"

import (
	"fmt"
	"time"

	"github.com/doorbell/intercom/media"
)

// webrtcBuilt says this build has WebRTC's canceller.
const webrtcBuilt = true

// webrtcEngine is WebRTC's AudioProcessing through webrtc_shim.cc.
type webrtcEngine struct {
	apm *C.intercom_apm
}

func newWebRTC(opts Options) (*webrtcEngine, error) {
	level := 1
	switch opts.Suppression {
	case Low:
		level = 0
	case High:
		level = 2
	}
	var code C.int
	apm := C.intercom_apm_new(C.int(media.SampleRate), cbool(!opts.NoEcho), cbool(!opts.NoNoise),
		cbool(!opts.NoGain), cbool(!opts.NoHighPass), C.int(level), cbool(opts.DelayAgnostic), &code)
	if apm == nil {
		return nil, fmt.Errorf("create AudioProcessing: error %d", int(code))
	}
	return &webrtcEngine{apm: apm}, nil
}

func (e *webrtcEngine) far(pcm []int16) error {
	if rc := C.intercom_apm_far(e.apm, (*C.int16_t)(&pcm[0]), C.int(len(pcm))); rc != 0 {
		return fmt.Errorf("webrtc far frame: error %d", int(rc))
	}
	return nil
}

func (e *webrtcEngine) near(pcm []int16, delay time.Duration) error {
	if rc := C.intercom_apm_near(e.apm, (*C.int16_t)(&pcm[0]), C.int(len(pcm)), C.int(delay/time.Millisecond)); rc != 0 {
		return fmt.Errorf("webrtc near frame: error %d", int(rc))
	}
	return nil
}

func (e *webrtcEngine) close() { C.intercom_apm_free(e.apm) }
