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

// speexMaxSlack bounds the reference samples queued beyond the delay, so a
// microphone that stops (or a speaker that runs ahead) cannot grow it.
const speexMaxSlack = 200 * time.Millisecond

// speexEngine is speexdsp's MDF echo canceller and preprocessor. Unlike
// WebRTC it takes the delay as an alignment of the two streams, so the
// reference waits in a queue for the hinted delay.
type speexEngine struct {
	echo    *C.SpeexEchoState
	pre     *C.SpeexPreprocessState
	hp      *highPass
	runPre  bool
	queue   []int16 // reference samples not yet used, oldest first
	lag     int     // samples the reference is held back
	out     []int16
	started bool
}

func newSpeex(opts Options) (*speexEngine, error) {
	tail := opts.Tail
	if tail == 0 {
		tail = 150 * time.Millisecond
	}
	e := &speexEngine{out: make([]int16, FrameSamples)}
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
	if max := e.lag + FrameSamples + samples(speexMaxSlack); len(e.queue) > max {
		e.queue = append(e.queue[:0], e.queue[len(e.queue)-max:]...)
	}
	return nil
}

func (e *speexEngine) near(pcm []int16, delay time.Duration) error {
	if e.echo != nil {
		e.align(delay)
		ref := e.queue[:FrameSamples]
		C.speex_echo_cancellation(e.echo, (*C.spx_int16_t)(&pcm[0]), (*C.spx_int16_t)(&ref[0]), (*C.spx_int16_t)(&e.out[0]))
		copy(pcm, e.out)
		e.queue = append(e.queue[:0], e.queue[FrameSamples:]...)
	}
	if e.hp != nil {
		e.hp.filter(pcm)
	}
	if e.runPre {
		C.speex_preprocess_run(e.pre, (*C.spx_int16_t)(&pcm[0]))
	}
	return nil
}

// align holds the reference back by the hinted delay less the margin: when
// the hint changes the queue grows by silence or drops its oldest samples,
// and a reference that ran dry (the speaker stopped) is silence.
func (e *speexEngine) align(delay time.Duration) {
	lag := max(samples(delay-speexMargin), 0)
	if !e.started || lag != e.lag {
		want := len(e.queue) + lag - e.lag
		if !e.started {
			want = len(e.queue) + lag
			e.started = true
		}
		e.lag = lag
		e.queue = resize(e.queue, want)
	}
	if len(e.queue) < FrameSamples {
		e.queue = resize(e.queue, FrameSamples)
	}
}

// resize pads q with leading silence or drops its oldest samples so it
// holds n.
func resize(q []int16, n int) []int16 {
	n = max(n, 0)
	if n <= len(q) {
		return append(q[:0], q[len(q)-n:]...)
	}
	out := make([]int16, n-len(q), n+FrameSamples)
	return append(out, q...)
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
