// Package alsa is the intercom's microphone and speaker on alsa-lib: a
// Microphone (media.AudioSource, 48 kHz mono S16 in 20 ms frames, with gain
// and mute) and a Speaker (media.PCMSink) that plays the resident's voice
// through a bounded media.Playout buffer. It calls alsa-lib itself through
// cgo (libasound2-dev), so every ALSA configuration works: plug, dmix,
// dsnoop, softvol, the file and null plugins tests use, and whatever a
// board's asound.conf defines.
package alsa

/*
#cgo pkg-config: alsa
#include <alsa/asoundlib.h>
#include <errno.h>

static int intercom_open(snd_pcm_t **pcm, const char *name, int capture) {
	return snd_pcm_open(pcm, name, capture ? SND_PCM_STREAM_CAPTURE : SND_PCM_STREAM_PLAYBACK, SND_PCM_NONBLOCK);
}

static int intercom_params(snd_pcm_t *pcm, unsigned int rate, unsigned int channels, unsigned int latency_us) {
	return snd_pcm_set_params(pcm, SND_PCM_FORMAT_S16_LE, SND_PCM_ACCESS_RW_INTERLEAVED,
		channels, rate, 1, latency_us);
}

static long intercom_readi(snd_pcm_t *pcm, void *buf, unsigned long frames) {
	return snd_pcm_readi(pcm, buf, frames);
}

static long intercom_writei(snd_pcm_t *pcm, const void *buf, unsigned long frames) {
	return snd_pcm_writei(pcm, buf, frames);
}

static long intercom_delay(snd_pcm_t *pcm) {
	snd_pcm_sframes_t d = 0;
	int err = snd_pcm_delay(pcm, &d);
	return err < 0 ? err : d;
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"

	"github.com/doorbell/intercom/media"
)

// ErrClosed is returned by I/O on a closed device.
var ErrClosed = errors.New("alsa: device closed")

// device is what the Speaker and the Microphone need of a PCM: alsa-lib's
// (pcm), or in tests a simulated sound card whose clock the test controls.
type device interface {
	// transfer reads into or writes from buf, all of it, waiting for the
	// device as needed.
	transfer(ctx context.Context, buf []int16) error
	// delay is snd_pcm_delay: for playback, how long until a sample
	// written now is heard; for capture, how long ago the oldest sample
	// not yet read was captured.
	delay() time.Duration
	close() error
}

// pcm is one opened ALSA PCM, 48 kHz S16 mono, in non-blocking mode so
// that waits are bounded and a cancelled context is noticed: a blocking
// readi on a device that stops delivering would hold its goroutine for
// good.
type pcm struct {
	name    string
	capture bool
	latency time.Duration

	mu sync.Mutex // guards h against Close during I/O
	h  *C.snd_pcm_t

	clock pacer
	xruns uint64
}

func alsaErr(op, name string, rc C.long) error {
	return fmt.Errorf("%s %q: %s", op, name, C.GoString(C.snd_strerror(C.int(rc))))
}

// openPCM opens name for capture or playback with the given total buffer
// latency (alsa-lib picks periods of a quarter of it).
func openPCM(name string, capture bool, latency time.Duration) (*pcm, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var h *C.snd_pcm_t
	dir := "playback"
	if capture {
		dir = "capture"
	}
	cap := C.int(0)
	if capture {
		cap = 1
	}
	if rc := C.intercom_open(&h, cname, cap); rc < 0 {
		return nil, alsaErr("open "+dir, name, C.long(rc))
	}
	if rc := C.intercom_params(h, media.SampleRate, 1, C.uint(latency/time.Microsecond)); rc < 0 {
		C.snd_pcm_close(h)
		return nil, alsaErr("set "+dir+" parameters of", name, C.long(rc))
	}
	p := &pcm{name: name, capture: capture, latency: latency, h: h}
	if capture {
		p.clock.lead = 0
	} else {
		p.clock.lead = latency
	}
	return p, nil
}

// transfer reads into or writes from buf (whole frames) until all of it
// moved, waiting at most a few periods per step and recovering from over-
// and underruns (which drop audio and so also reset any delay).
func (p *pcm) transfer(ctx context.Context, buf []int16) error {
	done := 0
	t0 := time.Now()
	for done < len(buf) {
		if err := ctx.Err(); err != nil {
			return err
		}
		p.mu.Lock()
		if p.h == nil {
			p.mu.Unlock()
			return ErrClosed
		}
		ptr := unsafe.Pointer(&buf[done])
		var n C.long
		if p.capture {
			n = C.intercom_readi(p.h, ptr, C.ulong(len(buf)-done))
		} else {
			n = C.intercom_writei(p.h, ptr, C.ulong(len(buf)-done))
		}
		switch {
		case n >= 0:
			done += int(n)
		case n == -C.EAGAIN:
			// Not ready: wait for the device, bounded so ctx is seen.
			C.snd_pcm_wait(p.h, 100)
		case n == -C.EPIPE || n == -C.ESTRPIPE || n == -C.EINTR:
			p.xruns++
			if rc := C.snd_pcm_recover(p.h, C.int(n), 1); rc < 0 {
				p.mu.Unlock()
				return alsaErr("recover", p.name, C.long(rc))
			}
			p.clock.reset()
		default:
			p.mu.Unlock()
			return alsaErr("transfer on", p.name, n)
		}
		p.mu.Unlock()
	}
	return p.clock.pace(ctx, len(buf), time.Since(t0))
}

// delay is the time between a sample entering the PCM and reaching the
// speaker (playback) or between it being captured and read (capture).
func (p *pcm) delay() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.h == nil {
		return 0
	}
	d := C.intercom_delay(p.h)
	if d < 0 {
		return 0
	}
	return time.Duration(d) * time.Second / media.SampleRate
}

// drain lets queued playback finish.
func (p *pcm) drain() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.h != nil {
		C.snd_pcm_nonblock(p.h, 0)
		C.snd_pcm_drain(p.h)
		C.snd_pcm_nonblock(p.h, 1)
	}
}

func (p *pcm) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.h == nil {
		return nil
	}
	rc := C.snd_pcm_close(p.h)
	p.h = nil
	if rc < 0 {
		return alsaErr("close", p.name, C.long(rc))
	}
	return nil
}
