// Package codec provides the encoders a media.Stream uses, wrapping the
// codec packages of github.com/pion/mediadevices directly (not its Track,
// which builds one encoder per peer connection): OpenH264 for H.264
// constrained baseline (bundled static library, BSD), libvpx for VP8 and
// libopus (bundled static library) for Opus. It needs cgo, libvpx-dev and
// libstdc++ at run time.
//
// mediadevices' encoders pull frames from a reader; each wrapper here hands
// the frame to encode through a one-slot reader and calls Read at once, so
// encoding stays synchronous on the caller's goroutine.
package codec

import (
	"sync/atomic"

	"github.com/doorbell/intercom/media"
)

// Encoders returns the constructors for every codec this package provides,
// for media.StreamConfig.Encoders.
func Encoders() media.Encoders {
	return media.Encoders{H264: NewH264, VP8: NewVP8, Opus: NewOpus, Idle: trimHeap, DecodeH264: DecodeH264, DecodeOpus: NewOpusDecoder}
}

// live counts encoder instances that exist (created, not yet closed), per
// codec, across the process. Tests use it to prove that N peers share one
// encoder.
var live = map[media.Codec]*atomic.Int64{
	media.H264: new(atomic.Int64),
	media.VP8:  new(atomic.Int64),
	media.Opus: new(atomic.Int64),
}

// Live returns the number of open encoders of codec c in this process.
func Live(c media.Codec) int {
	if n := live[c]; n != nil {
		return int(n.Load())
	}
	return 0
}
