package codec

/*
#include <stdlib.h>

// The libopus decoder API (opus.h, stable since 1.0), declared here under
// the real names: the symbols come from the static libopus that
// mediadevices' Opus encoder already links, whose headers live in the
// module cache where cgo cannot name them.
typedef struct OpusDecoder OpusDecoder;
OpusDecoder *opus_decoder_create(int fs, int channels, int *error);
int opus_decode(OpusDecoder *st, const unsigned char *data, int len, short *pcm, int frame_size, int decode_fec);
void opus_decoder_destroy(OpusDecoder *st);
const char *opus_strerror(int error);
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"github.com/doorbell/intercom/media"
)

// opusDecoder is a libopus decoder for one stream, 48 kHz mono.
type opusDecoder struct {
	d *C.OpusDecoder
}

// NewOpusDecoder returns a libopus decoder for one resident's stream
// (media.Encoders.DecodeOpus). It costs a fraction of the pure-Go
// decoder's CPU, and is freed when the receiver holding it is collected.
func NewOpusDecoder() (media.OpusDecoder, error) {
	var e C.int
	d := C.opus_decoder_create(C.int(media.SampleRate), 1, &e)
	if d == nil || e != 0 {
		return nil, fmt.Errorf("opus_decoder_create: %s", C.GoString(C.opus_strerror(e)))
	}
	dec := &opusDecoder{d: d}
	runtime.AddCleanup(dec, func(d *C.OpusDecoder) { C.opus_decoder_destroy(d) }, d)
	return dec, nil
}

var errEmptyPCM = errors.New("decode opus: no room for samples")

// DecodeToInt16 decodes one packet into pcm and returns the samples
// written.
func (o *opusDecoder) DecodeToInt16(payload []byte, pcm []int16) (int, error) {
	if len(pcm) == 0 {
		return 0, errEmptyPCM
	}
	if len(payload) == 0 {
		return 0, nil
	}
	n := C.opus_decode(o.d, (*C.uchar)(unsafe.Pointer(&payload[0])), C.int(len(payload)),
		(*C.short)(unsafe.Pointer(&pcm[0])), C.int(len(pcm)), 0)
	runtime.KeepAlive(o)
	if n < 0 {
		return 0, fmt.Errorf("decode opus: %s", C.GoString(C.opus_strerror(n)))
	}
	return int(n), nil
}

// DecodeLost fills pcm (one frame's length) with libopus's best guess of a
// lost frame: from the in-band FEC of next, the packet after it (when next
// carries none, libopus conceals), else packet-loss concealment (next
// nil). It implements media.LossDecoder.
func (o *opusDecoder) DecodeLost(next []byte, pcm []int16) (int, error) {
	if len(pcm) == 0 {
		return 0, errEmptyPCM
	}
	var data *C.uchar
	fec := C.int(0)
	if len(next) > 0 {
		data, fec = (*C.uchar)(unsafe.Pointer(&next[0])), 1
	}
	n := C.opus_decode(o.d, data, C.int(len(next)), (*C.short)(unsafe.Pointer(&pcm[0])), C.int(len(pcm)), fec)
	runtime.KeepAlive(o)
	if n < 0 {
		return 0, fmt.Errorf("decode lost opus frame: %s", C.GoString(C.opus_strerror(n)))
	}
	return int(n), nil
}
