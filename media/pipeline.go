package media

import (
	"context"
	"sync"
)

// pipeline starts and stops one runner goroutine (video or audio) as its
// codecs gain and lose users. The runner owns the source and the encoders;
// the pipeline only counts users and hands the runner the codecs wanted.
type pipeline struct {
	run   func(ctx context.Context, p *pipeline) error
	onErr func(error)

	mu      sync.Mutex
	users   map[Codec]int
	bitrate int           // video target of every codec without its own
	rates   map[Codec]int // per-codec video targets (rate control)
	cancel  context.CancelFunc
	done    chan struct{} // closed when the current runner has returned
	closed  bool
	lastErr error
}

func newPipeline(run func(context.Context, *pipeline) error, bitrate int, onErr func(error)) *pipeline {
	return &pipeline{run: run, onErr: onErr, bitrate: bitrate, users: map[Codec]int{}, rates: map[Codec]int{}}
}

func (p *pipeline) acquire(c Codec) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users[c]++
	if p.closed || p.cancel != nil {
		return
	}
	p.startLocked()
}

// startLocked starts a runner. A runner that is still stopping is waited
// for first, so two never hold the source at once.
func (p *pipeline) startLocked() {
	ctx, cancel := context.WithCancel(context.Background())
	prev, done := p.done, make(chan struct{})
	p.cancel, p.done = cancel, done
	go func() {
		defer close(done)
		if prev != nil {
			<-prev
		}
		err := p.run(ctx, p)
		if err != nil {
			p.onErr(err)
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		p.lastErr = err
		if p.done == done && p.cancel != nil {
			// The runner gave up on its own (source or encoder failure):
			// forget it so the next acquire tries again.
			p.cancel()
			p.cancel = nil
		}
	}()
}

// release drops one user of c. When no codec has users the runner is
// stopped and waited for, so an idle stream costs no CPU once release
// returns.
func (p *pipeline) release(c Codec) {
	p.mu.Lock()
	p.users[c]--
	if p.users[c] <= 0 {
		delete(p.users, c)
	}
	if len(p.users) > 0 || p.cancel == nil {
		p.mu.Unlock()
		return
	}
	p.cancel()
	p.cancel = nil
	done := p.done
	p.mu.Unlock()
	<-done
}

// running reports whether the pipeline's runner is active.
func (p *pipeline) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cancel != nil
}

// wanted returns the codecs with users and each one's bitrate target.
func (p *pipeline) wanted() (map[Codec]bool, func(Codec) int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := make(map[Codec]bool, len(p.users))
	for c := range p.users {
		w[c] = true
	}
	base, rates := p.bitrate, make(map[Codec]int, len(p.rates))
	for c, r := range p.rates {
		rates[c] = r
	}
	return w, func(c Codec) int {
		if r, ok := rates[c]; ok {
			return r
		}
		return base
	}
}

// setBitrate sets every codec's target, replacing per-codec ones.
func (p *pipeline) setBitrate(bps int) {
	p.mu.Lock()
	p.bitrate = bps
	clear(p.rates)
	p.mu.Unlock()
}

// setCodecBitrate sets codec c's target.
func (p *pipeline) setCodecBitrate(c Codec, bps int) {
	p.mu.Lock()
	p.rates[c] = bps
	p.mu.Unlock()
}

func (p *pipeline) close() {
	p.mu.Lock()
	p.closed = true
	if p.cancel != nil {
		p.cancel()
		p.cancel = nil
	}
	done := p.done
	p.mu.Unlock()
	if done != nil {
		<-done
	}
}
