package codec

import (
	"errors"
	"fmt"
	"image"
	"testing"
	"time"

	"github.com/doorbell/intercom/media"
)

// TestGlassCodeSurvivesCoding: the test pattern's glass code, encoded by
// the door's own encoders at the lowest and the default bitrate and
// decoded as a receiver would, reads back as each frame's own capture
// time, in every decoded frame.
func TestGlassCodeSurvivesCoding(t *testing.T) {
	type decoder interface {
		Decode([]byte) (*image.YCbCr, error)
		Close()
	}
	for _, tc := range []struct {
		codec  media.Codec
		enc    func(media.VideoEncoderConfig) (media.VideoEncoder, error)
		dec    func() (decoder, error)
		format media.VideoFormat
	}{
		{media.H264, NewH264, func() (decoder, error) { return NewH264Decoder() }, media.VideoFormat{Width: 640, Height: 480, FPS: 15}},
		{media.VP8, NewVP8, func() (decoder, error) { return NewVP8Decoder(640, 480) }, media.VideoFormat{Width: 640, Height: 480, FPS: 15}},
		{media.H264, NewH264, func() (decoder, error) { return NewH264Decoder() }, media.VideoFormat{Width: 1280, Height: 720, FPS: 15}},
	} {
		for _, bitrate := range []int{150_000, 600_000} {
			name := fmt.Sprintf("%s/%dx%d/%dk", tc.codec, tc.format.Width, tc.format.Height, bitrate/1000)
			t.Run(name, func(t *testing.T) {
				pat, err := media.NewTestPattern(tc.format)
				if err != nil {
					t.Fatal(err)
				}
				enc, err := tc.enc(media.VideoEncoderConfig{VideoFormat: tc.format, Bitrate: bitrate, KeyFrameInterval: 3 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				defer enc.Close()
				dec, err := tc.dec()
				if err != nil {
					t.Fatal(err)
				}
				defer dec.Close()
				start := time.Date(2026, 12, 6, 22, 50, 0, 0, time.UTC)
				decoded, bytes := 0, 0
				// 4 s: one keyframe interval and the start of the next.
				for i := range 4 * tc.format.FPS {
					at := start.Add(time.Duration(i) * tc.format.Interval())
					au, err := enc.Encode(pat.Render(at).Image, false)
					if err != nil {
						t.Fatalf("frame %d: %v", i, err)
					}
					if len(au) == 0 {
						continue // the rate control skipped it
					}
					bytes += len(au)
					img, err := dec.Decode(au)
					if err != nil {
						t.Fatalf("frame %d (%d bytes): %v", i, len(au), err)
					}
					decoded++
					got, err := media.ReadGlassCode(img)
					if err != nil {
						t.Fatalf("frame %d: %v", i, err)
					}
					if want := media.GlassCodeMillis(at); got != want {
						t.Fatalf("frame %d: read %d, want %d", i, got, want)
					}
				}
				if decoded < 2*tc.format.FPS {
					t.Fatalf("only %d frames decoded", decoded)
				}
				t.Logf("%d frames decoded and read, %.0f kb/s", decoded, float64(bytes*8)/4/1000)
			})
		}
	}
}

// TestDecodersAfterLoss: a picture decoded after a lost access
// unit (what a receiver shows when it conceals) is refused or reads its
// own time, never another frame's.
func TestDecodersAfterLoss(t *testing.T) {
	f := media.VideoFormat{Width: 640, Height: 480, FPS: 15}
	pat, err := media.NewTestPattern(f)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := NewH264(media.VideoEncoderConfig{VideoFormat: f, Bitrate: 600_000, KeyFrameInterval: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	dec, err := NewH264Decoder()
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	start := time.Date(2026, 12, 6, 22, 50, 0, 0, time.UTC)
	wrong, refused, read := 0, 0, 0
	for i := range 30 {
		at := start.Add(time.Duration(i) * f.Interval())
		au, err := enc.Encode(pat.Render(at).Image, false)
		if err != nil {
			t.Fatal(err)
		}
		if i == 5 || len(au) == 0 {
			continue // lost in the network
		}
		if i == 9 {
			au = au[:len(au)/2] // truncated
		}
		img, err := dec.Decode(au)
		if err != nil {
			refused++
			continue
		}
		switch got, err := media.ReadGlassCode(img); {
		case errors.Is(err, media.ErrNoGlassCode), errors.Is(err, media.ErrGlassCodeChecksum):
			refused++
		case err != nil:
			t.Fatal(err)
		case got != media.GlassCodeMillis(at):
			wrong++
		default:
			read++
		}
	}
	if wrong > 0 {
		t.Fatalf("%d frames read another frame's time (read %d, refused %d)", wrong, read, refused)
	}
	t.Logf("after a lost and a truncated access unit: %d read, %d refused", read, refused)
}
