package media

import (
	"context"
	"image"
	"time"
)

// Audio is fixed across the pipeline: 48 kHz mono, 20 ms frames, the
// natural Opus frame (RFC 7587 §4.2).
const (
	SampleRate        = 48000
	AudioFrame        = 20 * time.Millisecond
	AudioFrameSamples = SampleRate / 50
)

// VideoFormat is the size and rate of raw video.
type VideoFormat struct {
	Width, Height int
	FPS           int
}

func (f VideoFormat) valid() bool {
	return f.Width > 0 && f.Height > 0 && f.Width%2 == 0 && f.Height%2 == 0 && f.FPS > 0 && f.FPS <= 120
}

// Interval is the nominal time between frames.
func (f VideoFormat) Interval() time.Duration { return time.Second / time.Duration(f.FPS) }

// Frame is one picture: raw in I420 (planar YCbCr 4:2:0), or, from a camera
// that encodes H.264 itself, one H.264 access unit to pass through.
type Frame struct {
	Image *image.YCbCr
	// H264, set instead of Image, is an Annex B access unit the camera
	// encoded (passthrough: no decode, no re-encode). Every IDR access unit
	// carries its SPS and PPS, so a viewer joining at any keyframe decodes.
	H264 []byte
	Time time.Time // capture time
	Seq  uint64    // frame counter, from 0
}

// KeyFrameRequester is implemented by sources that pass encoded video
// through: the keyframe a new viewer or a PLI asks for must come from the
// camera's encoder.
type KeyFrameRequester interface {
	RequestKeyFrame()
}

// VideoSource delivers raw frames at its own pace. ReadFrame blocks until
// the next frame; the frame stays valid until the next call. A source is
// owned by one goroutine.
type VideoSource interface {
	ReadFrame(ctx context.Context) (*Frame, error)
	Close() error
}

// AudioSource delivers 20 ms of 48 kHz mono PCM per call, paced in real
// time. The slice stays valid until the next call.
type AudioSource interface {
	ReadAudio(ctx context.Context) ([]int16, error)
	Close() error
}

// VideoEncoderConfig configures one video encoder.
type VideoEncoderConfig struct {
	VideoFormat
	Bitrate          int           // target, bits per second
	KeyFrameInterval time.Duration // periodic keyframes
}

// VideoEncoder encodes I420 frames into one access unit each (H.264 Annex B,
// or a VP8 frame). An empty result means the encoder skipped the frame. An
// encoder is used by one goroutine.
type VideoEncoder interface {
	Encode(img *image.YCbCr, keyFrame bool) ([]byte, error)
	Close() error
}

// AudioEncoderConfig configures one audio encoder.
type AudioEncoderConfig struct {
	Bitrate int // bits per second
}

// AudioEncoder encodes 20 ms of 48 kHz mono PCM into one packet.
type AudioEncoder interface {
	Encode(pcm []int16) ([]byte, error)
	Close() error
}

// BitrateSetter is implemented by encoders whose target can change while
// they run.
type BitrateSetter interface {
	SetBitrate(bps int) error
}

// Encoders are the constructors a Stream uses; media/codec provides them. A
// nil constructor leaves that codec out.
type Encoders struct {
	H264 func(VideoEncoderConfig) (VideoEncoder, error)
	VP8  func(VideoEncoderConfig) (VideoEncoder, error)
	Opus func(AudioEncoderConfig) (AudioEncoder, error)
	// DecodeH264, if set, decodes an H.264 access unit holding SPS, PPS
	// and an IDR into a picture: snapshots of a camera whose H.264 is
	// passed through. Without it such snapshots fail with ErrNoPicture.
	DecodeH264 func(au []byte) (*image.YCbCr, error)
	// Idle, if set, is called once every encoder has stopped, so the codec
	// libraries can hand their memory back to the system between calls.
	Idle func()
	// DecodeOpus, if set, makes the decoder of each resident's Opus
	// stream (Stream.NewOpusReceiver); nil means the pure-Go pion/opus
	// decoder.
	DecodeOpus func() (OpusDecoder, error)
}
