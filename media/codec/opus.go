package codec

import (
	"fmt"
	"sync"

	"github.com/doorbell/intercom/media"
	mdcodec "github.com/pion/mediadevices/pkg/codec"
	"github.com/pion/mediadevices/pkg/codec/opus"
	"github.com/pion/mediadevices/pkg/io/audio"
	"github.com/pion/mediadevices/pkg/prop"
	"github.com/pion/mediadevices/pkg/wave"
)

// opusEncoder adapts mediadevices' libopus encoder to media.AudioEncoder.
type opusEncoder struct {
	rc   mdcodec.ReadCloser
	cur  *wave.Int16Interleaved
	once sync.Once
}

// NewOpus starts a libopus encoder (VOIP application, 20 ms frames) for
// 48 kHz mono.
func NewOpus(cfg media.AudioEncoderConfig) (media.AudioEncoder, error) {
	p, err := opus.NewParams()
	if err != nil {
		return nil, fmt.Errorf("opus params: %w", err)
	}
	p.BitRate = cfg.Bitrate
	p.Latency = opus.Latency20ms
	e := &opusEncoder{}
	r := audio.ReaderFunc(func() (wave.Audio, func(), error) {
		chunk := e.cur
		e.cur = nil
		if chunk == nil {
			return nil, func() {}, errNoFrame
		}
		return chunk, func() {}, nil
	})
	rc, err := p.BuildAudioEncoder(r, prop.Media{
		Audio: prop.Audio{SampleRate: media.SampleRate, ChannelCount: 1},
	})
	if err != nil {
		return nil, fmt.Errorf("new opus encoder: %w", err)
	}
	e.rc = rc
	live[media.Opus].Add(1)
	return e, nil
}

// Encode encodes exactly one 20 ms frame (960 samples).
func (e *opusEncoder) Encode(pcm []int16) ([]byte, error) {
	if len(pcm) != media.AudioFrameSamples {
		return nil, fmt.Errorf("encode opus: %d samples: %w", len(pcm), media.ErrBadFormat)
	}
	e.cur = &wave.Int16Interleaved{
		Data: pcm,
		Size: wave.ChunkInfo{Len: len(pcm), Channels: 1, SamplingRate: media.SampleRate},
	}
	data, release, err := e.rc.Read()
	if release != nil {
		release()
	}
	if err != nil {
		return nil, fmt.Errorf("encode opus: %w", err)
	}
	return data, nil
}

// Close frees the encoder; it is idempotent.
func (e *opusEncoder) Close() error {
	var err error
	e.once.Do(func() {
		err = e.rc.Close()
		live[media.Opus].Add(-1)
	})
	return err
}
