package aec

/*
#cgo pkg-config: speexdsp
#include <speex/speex_echo.h>
#include <speex/speex_preprocess.h>

static int intercom_preprocess_int(SpeexPreprocessState *st, int req, int v) {
	return speex_preprocess_ctl(st, req, &v);
}

static int intercom_preprocess_float(SpeexPreprocessState *st, int req, float v) {
	return speex_preprocess_ctl(st, req, &v);
}

static int intercom_echo_rate(SpeexEchoState *st, int rate) {
	return speex_echo_ctl(st, SPEEX_ECHO_SET_SAMPLING_RATE, &rate);
}
*/
import "C"

import (
	"errors"
	"time"
	"unsafe"

	"github.com/doorbell/intercom/media"
)

// speexMargin is how much earlier than the hinted delay the reference is
// handed to the filter: the MDF filter only models echo that comes after
// its reference, so a hint a little too long must not push the echo out of
// it.
const speexMargin = 10 * time.Millisecond

// speexMaxSlack bounds the reference samples queued, above any delay the
// hint can sensibly give.
const speexMaxSlack = time.Second

// speexEngine is speexdsp's MDF echo canceller and preprocessor. Unlike
// WebRTC it takes the delay as an alignment of the two streams, so the
// reference waits in a queue for the hinted delay.
type speexEngine struct {
	echo    *C.SpeexEchoState
	pre     *C.SpeexPreprocessState
	hp      *highPass
	runPre  bool
	queue   []int16 // reference samples not yet used, oldest first
	ref     []int16 // the reference of the frame at hand
	out     []int16
	started bool
}

func newSpeex(opts Options) (*speexEngine, error) {
	tail := opts.Tail
	if tail == 0 {
		tail = 150 * time.Millisecond
	}
	e := &speexEngine{out: make([]int16, FrameSamples), ref: make([]int16, FrameSamples)}
	if !opts.NoHighPass {
		e.hp = newHighPass(80, media.SampleRate)
	}
	if !opts.NoEcho {
		filter := samples(tail + 2*speexMargin)
		e.echo = C.speex_echo_state_init(C.int(FrameSamples), C.int(filter))
		if e.echo == nil {
			return nil, errors.New("speex_echo_state_init failed")
		}
		C.intercom_echo_rate(e.echo, C.int(media.SampleRate))
	}
	// The preprocessor also suppresses the echo the filter leaves, so it
	// runs whenever the canceller does.
	e.runPre = !opts.NoEcho || !opts.NoNoise || !opts.NoGain
	if e.runPre {
		e.pre = C.speex_preprocess_state_init(C.int(FrameSamples), C.int(media.SampleRate))
		if e.pre == nil {
			e.close()
			return nil, errors.New("speex_preprocess_state_init failed")
		}
		C.intercom_preprocess_int(e.pre, C.SPEEX_PREPROCESS_SET_DENOISE, cbool(!opts.NoNoise))
		C.intercom_preprocess_int(e.pre, C.SPEEX_PREPROCESS_SET_AGC, cbool(!opts.NoGain))
		if !opts.NoGain {
			C.intercom_preprocess_float(e.pre, C.SPEEX_PREPROCESS_SET_AGC_LEVEL, 8000)
		}
		if e.echo != nil {
			C.speex_preprocess_ctl(e.pre, C.SPEEX_PREPROCESS_SET_ECHO_STATE, unsafe.Pointer(e.echo))
		}
	}
	return e, nil
}

func samples(d time.Duration) int { return int(d * media.SampleRate / time.Second) }

func (e *speexEngine) far(pcm []int16) error {
	if e.echo == nil {
		return nil
	}
	e.queue = append(e.queue, pcm...)
	// A microphone that stopped must not let the queue grow without
	// bound; take trims it to the hint when the microphone comes back.
	if max := samples(speexMaxSlack); len(e.queue) > max {
		e.queue = append(e.queue[:0], e.queue[len(e.queue)-max:]...)
	}
	return nil
}

func (e *speexEngine) near(pcm []int16, delay time.Duration) error {
	if e.echo != nil {
		ref := e.take(delay)
		C.speex_echo_cancellation(e.echo, (*C.spx_int16_t)(&pcm[0]), (*C.spx_int16_t)(&ref[0]), (*C.spx_int16_t)(&e.out[0]))
		copy(pcm, e.out)
	}
	if e.hp != nil {
		e.hp.filter(pcm)
	}
	if e.runPre {
		C.speex_preprocess_run(e.pre, (*C.spx_int16_t)(&pcm[0]))
	}
	return nil
}

// take returns the reference for the microphone frame at hand. The
// reference is held back by the hinted delay less the margin: after each
// frame taken the queue holds that much, give or take one frame of jitter
// between the speaker's and the microphone's goroutines. A queue that ran
// short (the speaker stopped or was never fed) is topped up at its end with
// silence, so missing reference counts as silence played in real time and
// what is played next is held back by the hint again; one that ran long
// (the hint shrank, or the speaker came back with a burst) drops its
// oldest samples. A changed hint is therefore followed from the next frame.
func (e *speexEngine) take(delay time.Duration) []int16 {
	lag := max(samples(delay-speexMargin), 0)
	if !e.started {
		// The first reference, too, waits for its echo.
		e.started = true
		e.queue = append(make([]int16, lag, lag+len(e.queue)), e.queue...)
	}
	if len(e.queue) < FrameSamples {
		e.queue = append(e.queue, make([]int16, FrameSamples-len(e.queue))...)
	}
	copy(e.ref, e.queue[:FrameSamples])
	e.queue = append(e.queue[:0], e.queue[FrameSamples:]...)
	switch n := len(e.queue); {
	case n < lag-FrameSamples:
		e.queue = append(e.queue, make([]int16, lag-n)...)
	case n > lag+FrameSamples:
		e.queue = append(e.queue[:0], e.queue[n-lag:]...)
	}
	return e.ref
}

func (e *speexEngine) close() {
	if e.pre != nil {
		C.speex_preprocess_state_destroy(e.pre)
		e.pre = nil
	}
	if e.echo != nil {
		C.speex_echo_state_destroy(e.echo)
		e.echo = nil
	}
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}
