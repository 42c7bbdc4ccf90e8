package codec

/*
#include <stdbool.h>
#include <stdlib.h>

// The part of OpenH264's C decoder API (codec_api.h, codec_app_def.h,
// codec_def.h, release 2.x) this file uses, declared here under our own
// names: cgo cannot name the include directory that the mediadevices module
// ships (it lives in the module cache), and the symbols come from the same
// bundled static library that mediadevices' encoder links. The layouts are
// checked against the real headers by TestDecoderABI.
typedef struct {
	unsigned int size;
	int bitstream_type; // VIDEO_BITSTREAM_TYPE: 0 is AVC
} ih_video_property;

typedef struct {
	char *reconstructed_file;
	unsigned int cpu_load;
	unsigned char target_dq_layer;
	int error_concealment; // ERROR_CON_IDC: 0 is off
	bool parse_only;
	ih_video_property video;
} ih_decoding_param;

typedef struct {
	int width, height, format;
	int stride[2];
} ih_sys_buffer;

typedef struct {
	int buffer_status; // 1: a picture is ready
	unsigned long long in_timestamp, out_timestamp;
	union { ih_sys_buffer sys; } usr;
	unsigned char *dst[3];
} ih_buffer_info;

typedef struct ih_vtbl ih_vtbl;
typedef const ih_vtbl *ih_decoder;
struct ih_vtbl {
	long (*initialize)(ih_decoder *, const ih_decoding_param *);
	long (*uninitialize)(ih_decoder *);
	void *decode_frame;
	int (*decode_frame_no_delay)(ih_decoder *, const unsigned char *, int, unsigned char **, ih_buffer_info *);
	void *decode_frame2, *flush_frame, *decode_parser, *decode_frame_ex;
	long (*set_option)(ih_decoder *, int, void *);
	long (*get_option)(ih_decoder *, int, void *);
};

// DECODER_OPTION_TRACE_LEVEL and WELS_LOG_QUIET.
enum { ih_option_trace_level = 9, ih_log_quiet = 0 };

long WelsCreateDecoder(ih_decoder **);
void WelsDestroyDecoder(ih_decoder *);

// ih_decode decodes one or more access units into a picture; the planes
// point into the decoder, valid until the next call on it.
static int ih_decode(ih_decoder *d, const unsigned char *au, int n, unsigned char **dst, ih_buffer_info *info) {
	return (*d)->decode_frame_no_delay(d, au, n, dst, info);
}

static ih_decoder *ih_open(void) {
	ih_decoder *d = NULL;
	if (WelsCreateDecoder(&d) != 0 || d == NULL) {
		return NULL;
	}
	int quiet = ih_log_quiet;
	(*d)->set_option(d, ih_option_trace_level, &quiet);
	ih_decoding_param p = {0};
	p.target_dq_layer = 0xff;
	p.video.size = sizeof(p.video);
	p.video.bitstream_type = 0;
	if ((*d)->initialize(d, &p) != 0) {
		WelsDestroyDecoder(d);
		return NULL;
	}
	return d;
}

static void ih_close(ih_decoder *d) {
	(*d)->uninitialize(d);
	WelsDestroyDecoder(d);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"image"
	"unsafe"

	"github.com/doorbell/intercom/media"
	// The decoder's symbols come from the static library this package
	// links for the encoder.
	_ "github.com/pion/mediadevices/pkg/codec/openh264"
)

var errNoDecodedPicture = errors.New("codec: h264: no picture in the access unit")

// DecodeH264 decodes an H.264 Annex B access unit that can be decoded on
// its own (SPS, PPS and an IDR slice, as media/v4l2's framer delivers
// keyframes) into an I420 picture, with OpenH264's decoder from the same
// bundled library as the encoder. It is for snapshots of a camera whose
// H.264 is passed through: a decoder is made and freed per call (about a
// millisecond), so nothing stays allocated between snapshots.
func DecodeH264(au []byte) (*image.YCbCr, error) {
	d, err := NewH264Decoder()
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Decode(au)
}

// H264Decoder decodes a stream of H.264 Annex B access units, each
// picture referring to the ones before it, with OpenH264's decoder. The
// glass-to-glass measurements use it to read what a receiver would show;
// it is not safe for concurrent use.
type H264Decoder struct {
	d *C.ih_decoder
}

// NewH264Decoder starts a decoder; Close frees it.
func NewH264Decoder() (*H264Decoder, error) {
	d := C.ih_open()
	if d == nil {
		return nil, errors.New("decode h264: openh264 decoder did not start")
	}
	return &H264Decoder{d: d}, nil
}

// Decode decodes one access unit into a new I420 picture. An access unit
// that completes no picture (a lost reference, a parameter set alone)
// returns an error and leaves the decoder usable.
func (dec *H264Decoder) Decode(au []byte) (*image.YCbCr, error) {
	if len(au) == 0 {
		return nil, fmt.Errorf("decode h264: %w", errNoDecodedPicture)
	}
	if dec.d == nil {
		return nil, errors.New("decode h264: decoder closed")
	}
	// The decoder reads the input while the call runs only; C memory keeps
	// the rule about Go pointers held across calls out of the question.
	in := C.CBytes(au)
	defer C.free(in)
	var info C.ih_buffer_info
	var dst [3]*C.uchar
	st := C.ih_decode(dec.d, (*C.uchar)(in), C.int(len(au)), &dst[0], &info)
	if info.buffer_status != 1 {
		return nil, fmt.Errorf("decode h264: state %#x: %w", int(st), errNoDecodedPicture)
	}
	sys := (*C.ih_sys_buffer)(unsafe.Pointer(&info.usr))
	w, h := int(sys.width), int(sys.height)
	ys, cs := int(sys.stride[0]), int(sys.stride[1])
	if w <= 0 || h <= 0 || ys < w || cs < (w+1)/2 || dst[0] == nil || dst[1] == nil || dst[2] == nil {
		return nil, fmt.Errorf("decode h264: picture %dx%d strides %d/%d: %w", w, h, ys, cs, media.ErrBadFormat)
	}
	img := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	copyPlane(img.Y, img.YStride, dst[0], ys, w, h)
	cw, ch := (w+1)/2, (h+1)/2
	copyPlane(img.Cb, img.CStride, dst[1], cs, cw, ch)
	copyPlane(img.Cr, img.CStride, dst[2], cs, cw, ch)
	return img, nil
}

// Close frees the decoder; it is idempotent.
func (dec *H264Decoder) Close() {
	if dec.d != nil {
		C.ih_close(dec.d)
		dec.d = nil
	}
}

func copyPlane(dst []byte, dstStride int, src *C.uchar, srcStride, w, h int) {
	s := unsafe.Slice((*byte)(unsafe.Pointer(src)), srcStride*(h-1)+w)
	for y := 0; y < h; y++ {
		copy(dst[y*dstStride:y*dstStride+w], s[y*srcStride:y*srcStride+w])
	}
}
