package codec

/*
#include <stdlib.h>
// The libopus encoder API (opus.h, opus_defines.h, stable since 1.0),
// declared under the real names: the symbols come from the libopus that
// mediadevices' Opus package links (pkg-config opus), whose headers cgo
// cannot name from here (see opusdec.go).
typedef struct OpusEncoder OpusEncoder;
OpusEncoder *opus_encoder_create(int fs, int channels, int application, int *error);
int opus_encode(OpusEncoder *st, const short *pcm, int frame_size, unsigned char *data, int max_data_bytes);
void opus_encoder_destroy(OpusEncoder *st);
int opus_encoder_ctl(OpusEncoder *st, int request, ...);
const char *opus_strerror(int error);

// cgo cannot call a variadic function: one setter and one getter.
static int intercom_opus_set(OpusEncoder *st, int request, int value) { return opus_encoder_ctl(st, request, value); }
static int intercom_opus_get(OpusEncoder *st, int request, int *value) { return opus_encoder_ctl(st, request, value); }
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"github.com/doorbell/intercom/media"
	// Links libopus (pkg-config opus), which this file and opusdec.go call.
	_ "github.com/pion/mediadevices/pkg/codec/opus"
)

// libopus constants (opus_defines.h).
const (
	opusApplicationVoIP  = 2048
	opusSignalVoice      = 3001
	opusSetBitrate       = 4002
	opusSetComplexity    = 4010
	opusGetComplexity    = 4011
	opusSetInbandFEC     = 4012
	opusGetInbandFEC     = 4013
	opusSetPacketLoss    = 4014
	opusGetPacketLoss    = 4015
	opusSetDTX           = 4016
	opusGetDTX           = 4017
	opusSetSignal        = 4024
	opusMaxPacket        = 1275 // the largest Opus frame (RFC 6716 §3.2.1)
	opusExpectedLossPerc = 10
	// opusComplexity 5 of 10, the setting WebRTC uses on phones: with FEC
	// the encoder codes speech as SILK, twice (the copy for the next
	// packet), which at libopus's default 10 costs 350 µs a frame here
	// against 190 µs at 5 (BenchmarkOpus20msSpeech, CPU time), with FEC
	// recovering as well (TestOpusFECAndDTX).
	opusComplexity = 5
)

var errEncoderClosed = errors.New("encode opus: encoder closed")

// opusEncoder is a libopus encoder for the door's microphone.
type opusEncoder struct {
	mu  sync.Mutex
	e   *C.OpusEncoder // nil once closed
	out []byte
}

// NewOpus starts a libopus encoder (VOIP application, 20 ms frames) for
// 48 kHz mono, tuned for a door on a lossy uplink as WebRTC's own Opus
// encoder is:
//   - in-band FEC on, with 10 % expected loss: each packet carries a
//     low-rate copy of the one before, which the resident's decoder uses
//     when that one is lost (every browser's and LiveKit's receivers do:
//     the door's SDP says useinbandfec=1);
//   - DTX on: in a pause the encoder sends a frame of a byte or two
//     instead of the full rate, and the resident's decoder fills it with
//     comfort noise (the packets still go every 20 ms: pion's packetizer
//     cannot advance the RTP timestamp without counting a sequence gap,
//     which a receiver would take for loss);
//   - signal type voice, complexity 5 (see opusComplexity).
func NewOpus(cfg media.AudioEncoderConfig) (media.AudioEncoder, error) {
	var cerr C.int
	e := C.opus_encoder_create(C.int(media.SampleRate), 1, opusApplicationVoIP, &cerr)
	if cerr != 0 || e == nil {
		return nil, fmt.Errorf("new opus encoder: %s", C.GoString(C.opus_strerror(cerr)))
	}
	for _, set := range []struct {
		what       string
		req, value int
	}{
		{"bitrate", opusSetBitrate, cfg.Bitrate},
		{"in-band FEC", opusSetInbandFEC, 1},
		{"expected loss", opusSetPacketLoss, opusExpectedLossPerc},
		{"DTX", opusSetDTX, 1},
		{"signal", opusSetSignal, opusSignalVoice},
		{"complexity", opusSetComplexity, opusComplexity},
	} {
		if set.req == opusSetBitrate && set.value <= 0 {
			continue // libopus's default for the rate and channels
		}
		if rc := C.intercom_opus_set(e, C.int(set.req), C.int(set.value)); rc != 0 {
			C.opus_encoder_destroy(e)
			return nil, fmt.Errorf("opus encoder %s: %s", set.what, C.GoString(C.opus_strerror(rc)))
		}
	}
	live[media.Opus].Add(1)
	return &opusEncoder{e: e, out: make([]byte, opusMaxPacket)}, nil
}

// Encode encodes exactly one 20 ms frame (960 samples). The returned
// bytes are valid until the next call.
func (o *opusEncoder) Encode(pcm []int16) ([]byte, error) {
	if len(pcm) != media.AudioFrameSamples {
		return nil, fmt.Errorf("encode opus: %d samples: %w", len(pcm), media.ErrBadFormat)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.e == nil {
		return nil, errEncoderClosed
	}
	n := C.opus_encode(o.e, (*C.short)(unsafe.Pointer(&pcm[0])), C.int(len(pcm)),
		(*C.uchar)(unsafe.Pointer(&o.out[0])), C.int(len(o.out)))
	runtime.KeepAlive(pcm)
	if n < 0 {
		return nil, fmt.Errorf("encode opus: %s", C.GoString(C.opus_strerror(n)))
	}
	return o.out[:n], nil
}

// setting reads one of the encoder's settings back (tests).
func (o *opusEncoder) setting(req int) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var v C.int
	if rc := C.intercom_opus_get(o.e, C.int(req), &v); rc != 0 {
		return 0, fmt.Errorf("opus encoder ctl %d: %s", req, C.GoString(C.opus_strerror(rc)))
	}
	return int(v), nil
}

// Close frees the encoder; it is idempotent.
func (o *opusEncoder) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.e != nil {
		C.opus_encoder_destroy(o.e)
		o.e = nil
		live[media.Opus].Add(-1)
	}
	return nil
}
