package webrtc

import (
	"strings"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/rtcp"
)

// A viewer's rate without a send-side estimator (issue 17: a call with
// three WHEP viewers within 1.15× of the call's CPU).
//
// A viewer cannot move the shared encoder while a call is on
// (viewerrate.go), so what GCC measured for a viewer served two things
// only: the NACK responder's retransmission budget and the pacing rate.
// Its price was per viewer: transport-cc feedback ten times a second,
// each packet of it passed through five or six goroutines, GCC's own
// pipeline and its record of every packet sent. So viewers negotiate no
// transport-cc. Browsers then run their own estimator and send REMB
// (negotiated, goog-remb), about once a second; pion-based viewers
// (go2rtc) send none.
//
// viewerBudget gives both users what GCC gave, in GCC's place (pion's cc
// interceptor, registered before the NACK responder, which reads the
// estimator's target as its budget): a rate, the encoder's current target
// (what the viewer is sent anyway), lowered to the viewer's REMB while
// one is fresh. So a viewer on a poor path still cannot draw more
// retransmissions than its path carries, and the pacer (pacer.go) paces
// its video at paceFactor times it. Its REMB also reaches the stream's
// rate control through the peer (Peer.readRTCP), as any peer's does.

// minViewerBudget is the lowest budget: the stream's default video floor
// (media.StreamConfig's MinVideoBitrate), which the encoder never goes
// below. Chromium's first REMB (≈ 30 kb/s, sent before its estimator
// measured anything) would otherwise stop every retransmission of the
// viewer's first second.
const minViewerBudget = 150_000

// viewerBudget is one viewer connection's cc.BandwidthEstimator.
type viewerBudget struct {
	target func() int // the encoder's current target
	now    func() time.Time
	pacer  *pacer

	mu     sync.Mutex
	remb   int // the viewer's latest REMB, 0 if none
	rembAt time.Time
}

var _ cc.BandwidthEstimator = (*viewerBudget)(nil)

func newViewerBudget(target func() int, now func() time.Time) *viewerBudget {
	return &viewerBudget{target: target, now: now, pacer: newPacer()}
}

// GetTargetBitrate is the budget now, in bits per second.
func (b *viewerBudget) GetTargetBitrate() int {
	bps := b.target()
	b.mu.Lock()
	if b.remb > 0 && b.now().Sub(b.rembAt) < rembFresh {
		bps = min(bps, b.remb)
	}
	b.mu.Unlock()
	return max(bps, minViewerBudget)
}

// WriteRTCP takes the viewer's REMB and brings the pacer's rate up to
// date: RTCP comes at least once a second (receiver reports).
func (b *viewerBudget) WriteRTCP(pkts []rtcp.Packet, _ interceptor.Attributes) error {
	for _, p := range pkts {
		if r, ok := p.(*rtcp.ReceiverEstimatedMaximumBitrate); ok {
			b.mu.Lock()
			b.remb, b.rembAt = int(min(r.Bitrate, 1<<30)), b.now()
			b.mu.Unlock()
		}
	}
	b.pacer.SetTargetBitrate(b.GetTargetBitrate())
	return nil
}

// AddStream sends the stream through the pacer; audio at once.
func (b *viewerBudget) AddStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	b.pacer.AddStream(info.SSRC, w)
	if !strings.HasPrefix(strings.ToLower(info.MimeType), "video/") {
		b.pacer.sendAtOnce(info.SSRC)
	}
	return interceptor.RTPWriterFunc(b.pacer.Write)
}

// OnTargetBitrateChange does nothing: the budget is read when needed.
func (b *viewerBudget) OnTargetBitrateChange(func(int)) {}

// GetStats has nothing to tell.
func (b *viewerBudget) GetStats() map[string]any { return map[string]any{} }

// Close drops what the pacer holds.
func (b *viewerBudget) Close() error { return b.pacer.Close() }
