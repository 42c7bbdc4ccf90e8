package v4l2

import (
	"bytes"
	"fmt"
	"image"
	"image/jpeg"
	"sort"
	"testing"
	"time"

	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/codec"
	"github.com/pion/webrtc/v4"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"
)

// benchFrames is how many frames each benchmark measures; it reports the
// median per frame, which is steadier than the mean on a shared machine.
const benchFrames = 60

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// cameraFrames renders n moving test-pattern frames as a camera would send
// them: YUYV and MJPEG.
func cameraFrames(b *testing.B, w, h, n int) (yuyv, mjpg [][]byte) {
	b.Helper()
	p, err := media.NewTestPattern(media.VideoFormat{Width: w, Height: h, FPS: 30})
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	for i := range n {
		f := p.Render(t0.Add(time.Duration(i) * 33 * time.Millisecond))
		img := f.Image
		y := make([]byte, 0, w*h*2)
		for row := 0; row < h; row++ {
			for x := 0; x < w; x += 2 {
				ci := (row/2)*img.CStride + x/2
				y = append(y, img.Y[row*img.YStride+x], img.Cb[ci], img.Y[row*img.YStride+x+1], img.Cr[ci])
			}
		}
		yuyv = append(yuyv, y)
		// UVC cameras send 4:2:2 MJPEG.
		m := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio422)
		scaleFrom420(m, img)
		var buf bytes.Buffer
		if err := jpeg.Encode(&buf, m, &jpeg.Options{Quality: 80}); err != nil {
			b.Fatal(err)
		}
		mjpg = append(mjpg, buf.Bytes())
	}
	return yuyv, mjpg
}

func scaleFrom420(dst, src *image.YCbCr) {
	copy(dst.Y, src.Y)
	for y := 0; y < dst.Rect.Dy(); y++ {
		for x := 0; x < dst.Rect.Dx()/2; x++ {
			dst.Cb[y*dst.CStride+x] = src.Cb[(y/2)*src.CStride+x]
			dst.Cr[y*dst.CStride+x] = src.Cr[(y/2)*src.CStride+x]
		}
	}
}

// BenchmarkConvertEncode is the CPU per frame of what a raw camera costs:
// conversion to I420 plus one encode, for each capture format, encoder and
// size. Reported: median ms per frame (conv-ms, enc-ms, total-ms).
func BenchmarkConvertEncode(b *testing.B) {
	encoders := map[string]func(media.VideoEncoderConfig) (media.VideoEncoder, error){"h264": codec.NewH264, "vp8": codec.NewVP8}
	for _, size := range [][2]int{{640, 480}, {1280, 720}} {
		w, h := size[0], size[1]
		yuyv, mjpg := cameraFrames(b, w, h, benchFrames)
		for _, src := range []struct {
			name   string
			frames [][]byte
			conv   converter
		}{{"yuyv", yuyv, yuyvConverter{w: w, h: h}}, {"mjpeg", mjpg, &mjpegConverter{}}} {
			for _, encName := range []string{"h264", "vp8"} {
				b.Run(fmt.Sprintf("%dx%d/%s/%s", w, h, src.name, encName), func(b *testing.B) {
					dst := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
					var conv, enc, total []time.Duration
					for range b.N {
						e, err := encoders[encName](media.VideoEncoderConfig{VideoFormat: media.VideoFormat{Width: w, Height: h, FPS: 30}, Bitrate: 1_000_000, KeyFrameInterval: 3 * time.Second})
						if err != nil {
							b.Fatal(err)
						}
						for _, f := range src.frames {
							t0 := time.Now()
							if err := src.conv.convert(f, dst); err != nil {
								b.Fatal(err)
							}
							t1 := time.Now()
							if _, err := e.Encode(dst, false); err != nil {
								b.Fatal(err)
							}
							t2 := time.Now()
							conv, enc, total = append(conv, t1.Sub(t0)), append(enc, t2.Sub(t1)), append(total, t2.Sub(t0))
						}
						e.Close()
					}
					b.ReportMetric(ms(median(conv)), "conv-ms")
					b.ReportMetric(ms(median(enc)), "enc-ms")
					b.ReportMetric(ms(median(total)), "total-ms")
				})
			}
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkPassthroughVsTranscode compares, per 640x480 frame, what the
// stream spends on a camera that encodes H.264 itself (parameter-set
// framing and the track write) with a YUYV camera (conversion, openh264
// encode, the same track write). Target: passthrough ≤ 5 % of transcoding.
func BenchmarkPassthroughVsTranscode(b *testing.B) {
	const w, h = 640, 480
	yuyv, _ := cameraFrames(b, w, h, benchFrames)
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000}, "v", "s")
	if err != nil {
		b.Fatal(err)
	}
	dst := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	var trans, pass []time.Duration
	for range b.N {
		enc, err := codec.NewH264(media.VideoEncoderConfig{VideoFormat: media.VideoFormat{Width: w, Height: h, FPS: 30}, Bitrate: 1_000_000, KeyFrameInterval: time.Second})
		if err != nil {
			b.Fatal(err)
		}
		// What the camera's encoder would hand over: the same access units,
		// with parameter sets only on the first (as many cameras send them).
		var aus [][]byte
		conv := yuyvConverter{w: w, h: h}
		for _, f := range yuyv {
			t0 := time.Now()
			_ = conv.convert(f, dst)
			au, err := enc.Encode(dst, false)
			if err != nil {
				b.Fatal(err)
			}
			_ = track.WriteSample(pionmedia.Sample{Data: au, Duration: 33 * time.Millisecond})
			trans = append(trans, time.Since(t0))
			aus = append(aus, append([]byte(nil), au...))
		}
		enc.Close()
		var fr h264Framer
		for _, au := range aus {
			t0 := time.Now()
			out, _ := fr.frame(au)
			_ = track.WriteSample(pionmedia.Sample{Data: out, Duration: 33 * time.Millisecond})
			pass = append(pass, time.Since(t0))
		}
	}
	mt, mp := median(trans), median(pass)
	b.ReportMetric(ms(mt), "transcode-ms")
	b.ReportMetric(ms(mp)*1000, "passthrough-µs")
	b.ReportMetric(100*float64(mp)/float64(mt), "passthrough-%")
}
