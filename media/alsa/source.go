package alsa

import (
	"context"
	"fmt"
	"time"

	"github.com/doorbell/intercom/media"
)

// NewSourceMicrophone is a Microphone whose samples come from src instead
// of a capture PCM, through the same gain, mute and echo processing: the
// end-to-end measurements feed the door's microphone path a synthetic
// signal (media.Bursts) while the speaker plays on a real ALSA device. The
// source paces itself; its delay counts as zero.
func NewSourceMicrophone(src media.AudioSource, gainDB float64, mute bool, echo *Echo) *Microphone {
	return newMicrophone(sourceDevice{src}, gainDB, mute, echo)
}

type sourceDevice struct{ src media.AudioSource }

func (d sourceDevice) transfer(ctx context.Context, buf []int16) error {
	pcm, err := d.src.ReadAudio(ctx)
	if err != nil {
		return err
	}
	if len(pcm) != len(buf) {
		return fmt.Errorf("source gave %d samples for a %d-sample frame", len(pcm), len(buf))
	}
	copy(buf, pcm)
	return nil
}

func (sourceDevice) delay() time.Duration { return 0 }
func (d sourceDevice) close() error       { return d.src.Close() }
