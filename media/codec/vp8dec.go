package codec

import (
	"errors"
	"fmt"
	"image"
	"io"

	"github.com/doorbell/intercom/media"
	mdcodec "github.com/pion/mediadevices/pkg/codec"
	"github.com/pion/mediadevices/pkg/codec/vpx"
	"github.com/pion/mediadevices/pkg/prop"
)

// VP8Decoder decodes a stream of VP8 frames with libvpx, through
// mediadevices' decoder (which pulls its input from a reader: Decode
// hands it one frame through a one-slot reader, as the encoders do). The
// glass-to-glass measurements use it; it is not safe for concurrent use.
type VP8Decoder struct {
	vd  mdcodec.VideoDecoder
	in  *oneFrame
	err error // set once closed
}

// oneFrame is a reader that yields the frame it holds once, then EOF.
type oneFrame struct{ b []byte }

func (r *oneFrame) Read(p []byte) (int, error) {
	if r.b == nil {
		return 0, io.EOF
	}
	if len(r.b) > len(p) {
		return 0, fmt.Errorf("vp8 frame of %d bytes: %w", len(r.b), media.ErrBadFormat)
	}
	n := copy(p, r.b)
	r.b = nil
	return n, nil
}

// NewVP8Decoder starts a decoder for pictures of about w×h (libvpx takes
// the real size from the stream); Close frees it.
func NewVP8Decoder(w, h int) (*VP8Decoder, error) {
	in := &oneFrame{}
	vd, err := vpx.NewDecoder(in, prop.Media{Video: prop.Video{Width: w, Height: h}})
	if err != nil {
		return nil, fmt.Errorf("new vp8 decoder: %w", err)
	}
	return &VP8Decoder{vd: vd, in: in}, nil
}

var errDecoderClosed = errors.New("codec: decoder closed")

// Decode decodes one VP8 frame into a new I420 picture. A frame libvpx
// refuses returns an error; the decoder stays usable for the next
// keyframe.
func (d *VP8Decoder) Decode(frame []byte) (*image.YCbCr, error) {
	if d.err != nil {
		return nil, d.err
	}
	if len(frame) == 0 {
		return nil, fmt.Errorf("decode vp8: %w", errNoDecodedPicture)
	}
	d.in.b = frame
	img, release, err := d.vd.Read()
	d.in.b = nil
	if release != nil {
		defer release()
	}
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("decode vp8: %w", errNoDecodedPicture)
	}
	if err != nil {
		return nil, fmt.Errorf("decode vp8: %w", err)
	}
	yc, ok := img.(*image.YCbCr)
	if !ok || yc.SubsampleRatio != image.YCbCrSubsampleRatio420 {
		return nil, fmt.Errorf("decode vp8: picture %T: %w", img, media.ErrBadFormat)
	}
	return yc, nil
}

// Close frees the decoder; it is idempotent.
func (d *VP8Decoder) Close() {
	if d.err == nil {
		d.err = errDecoderClosed
		_ = d.vd.Close()
	}
}
