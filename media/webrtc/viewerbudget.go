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

// A viewer that sends no REMB (pion-based ones) would leave the encoder
// blind to its path when no call is on; the budget also keeps GCC's
// loss-based half (draft-ietf-rmcat-gcc-02 §6) on the fraction of video
// lost that each RTCP receiver report tells, about once a second: more
// than 10 % lost takes the estimate down by half the fraction, less than
// 2 % raises it by 5 %, between holds it. That estimate goes to the
// stream's rate control as the viewer's (lossEstimate, through
// sendSideEstimate), under the same rules as any viewer's estimate, and
// bounds the budget too. It is not GCC's delay-based half: a path that
// queues without losing is not seen.

// minViewerBudget is the lowest budget: the stream's default video floor
// (media.StreamConfig's MinVideoBitrate), which the encoder never goes
// below. Chromium's first REMB (≈ 30 kb/s, sent before its estimator
// measured anything) would otherwise stop every retransmission of the
// viewer's first second.
const minViewerBudget = 150_000

// viewerBudget is one viewer connection's cc.BandwidthEstimator.
type viewerBudget struct {
	target func() int // the encoder's current target
	most   int        // the stream's maximum video rate
	now    func() time.Time
	pacer  *pacer

	mu     sync.Mutex
	remb   int // the viewer's latest REMB, 0 if none
	rembAt time.Time
	video  map[uint32]bool // the SSRCs of the video sent
	loss   int             // the loss-based estimate, 0 before the first report
	onLoss func(int)       // told each new loss-based estimate
}

// Loss-based estimate (draft-ietf-rmcat-gcc-02 §6).
const (
	lossHigh     = 0.10 // above: decrease
	lossLow      = 0.02 // below: increase
	lossIncrease = 1.05
)

var _ cc.BandwidthEstimator = (*viewerBudget)(nil)

func newViewerBudget(target func() int, most int, now func() time.Time) *viewerBudget {
	return &viewerBudget{target: target, most: most, now: now, pacer: newPacer(), video: map[uint32]bool{}}
}

// GetTargetBitrate is the budget now, in bits per second.
func (b *viewerBudget) GetTargetBitrate() int {
	bps := b.target()
	b.mu.Lock()
	if b.remb > 0 && b.now().Sub(b.rembAt) < rembFresh {
		bps = min(bps, b.remb)
	}
	if b.loss > 0 {
		bps = min(bps, b.loss)
	}
	b.mu.Unlock()
	return max(bps, minViewerBudget)
}

// WriteRTCP takes the viewer's REMB and its reports of video lost, and
// brings the pacer's rate up to date: RTCP comes at least once a second
// (receiver reports).
func (b *viewerBudget) WriteRTCP(pkts []rtcp.Packet, _ interceptor.Attributes) error {
	var lossChanged func(int)
	loss := 0
	for _, p := range pkts {
		switch p := p.(type) {
		case *rtcp.ReceiverEstimatedMaximumBitrate:
			b.mu.Lock()
			b.remb, b.rembAt = int(min(p.Bitrate, 1<<30)), b.now()
			b.mu.Unlock()
		case *rtcp.ReceiverReport:
			if l, tell, ok := b.lossReport(p.Reports); ok {
				lossChanged, loss = tell, l
			}
		}
	}
	b.pacer.SetTargetBitrate(b.GetTargetBitrate())
	if lossChanged != nil {
		lossChanged(loss)
	}
	return nil
}

// lossReport updates the loss-based estimate from the report blocks about
// our video, if there is one, and returns it with whom to tell.
func (b *viewerBudget) lossReport(reports []rtcp.ReceptionReport) (int, func(int), bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ok := false
	for _, r := range reports {
		if !b.video[r.SSRC] {
			continue
		}
		if b.loss == 0 {
			b.loss = max(b.target(), minViewerBudget)
		}
		fl := float64(r.FractionLost) / 256
		switch {
		case fl > lossHigh:
			b.loss = int(float64(b.loss) * (1 - 0.5*fl))
		case fl < lossLow:
			b.loss = int(float64(b.loss) * lossIncrease)
		}
		// Never above the most the encoder sends nor below the
		// budget's floor: bounded, a clean path's estimate stays where
		// a loss can bring it down in a few reports.
		b.loss = max(min(b.loss, b.most), minViewerBudget)
		ok = true
	}
	return b.loss, b.onLoss, ok
}

// lossEstimate is the loss-based estimate, 0 before the first report.
func (b *viewerBudget) lossEstimate() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.loss
}

// AddStream sends the stream through the pacer; audio at once.
func (b *viewerBudget) AddStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	b.pacer.AddStream(info.SSRC, w)
	if strings.HasPrefix(strings.ToLower(info.MimeType), "video/") {
		b.mu.Lock()
		b.video[info.SSRC] = true
		b.mu.Unlock()
	} else {
		b.pacer.sendAtOnce(info.SSRC)
	}
	return interceptor.RTPWriterFunc(b.pacer.Write)
}

// OnTargetBitrateChange does nothing: the budget is read when needed.
// The loss-based estimate has its own (lossView).
func (b *viewerBudget) OnTargetBitrateChange(func(int)) {}

// GetStats has nothing to tell.
func (b *viewerBudget) GetStats() map[string]any { return map[string]any{} }

// Close drops what the pacer holds.
func (b *viewerBudget) Close() error { return b.pacer.Close() }

// lossView shows a viewer's loss-based estimate as an estimator, for
// sendSideEstimate to relay to the stream's rate control: never the
// budget itself, which holds the encoder's target (relayed, the stream's
// margin below the lowest estimate would lower the target at every
// report).
type lossView struct{ *viewerBudget }

func (v lossView) GetTargetBitrate() int { return v.lossEstimate() }

func (v lossView) OnTargetBitrateChange(f func(int)) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.onLoss = f
}
