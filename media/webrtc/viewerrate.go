package webrtc

import (
	"sync"

	"github.com/doorbell/intercom/media"
)

// Viewers yield to calls (issue 17). One encoder per codec feeds every
// peer, and the stream's rate control (media/bitrate.go) sets its target
// to the lowest estimate among the peers that report one. A WHEP viewer
// on a poor path (a phone at the far end of the garden's Wi-Fi, a
// recorder on a busy network) would then lower the picture of the call in
// progress, where the resident is talking to the visitor: the call is what
// the door is for, a viewer is a bystander. So while a call peer reports
// an estimate for a codec, viewers' estimates for that codec are held
// back; with no call on that codec, the viewers' estimates rule the
// encoder as before (the lowest of them), and when the last call peer
// stops reporting, each viewer's latest estimate is reported again.
//
// A viewer whose path carries less than the call's rate loses packets
// during the call: its own NACKs are still answered within its own
// estimate (the NACK responder reads its peer's GCC target, bitrate.go),
// so it cannot flood its path with retransmissions, and its picture
// recovers with the next keyframe it asks for.
type estimateGate struct {
	sink bandwidthSink

	mu      sync.Mutex
	calls   map[any]media.Codec // call peers that report, and for which codec
	viewers map[any]viewerEstimate
}

type viewerEstimate struct {
	codec media.Codec
	bps   int
}

func newEstimateGate(sink bandwidthSink) *estimateGate {
	return &estimateGate{sink: sink, calls: map[any]media.Codec{}, viewers: map[any]viewerEstimate{}}
}

// callSink and viewerSink are what a call's and a viewer's peerEstimate
// report to.
func (g *estimateGate) callSink() bandwidthSink   { return gateSink{g, false} }
func (g *estimateGate) viewerSink() bandwidthSink { return gateSink{g, true} }

type gateSink struct {
	g      *estimateGate
	viewer bool
}

func (s gateSink) ReportBandwidth(c media.Codec, from any, bps int) {
	if s.viewer {
		s.g.reportViewer(c, from, bps)
	} else {
		s.g.reportCall(c, from, bps)
	}
}

func (s gateSink) ForgetBandwidth(c media.Codec, from any) {
	if s.viewer {
		s.g.forgetViewer(c, from)
	} else {
		s.g.forgetCall(c, from)
	}
}

// callsOnLocked reports whether any call peer reports for codec c.
func (g *estimateGate) callsOnLocked(c media.Codec) bool {
	for _, cc := range g.calls {
		if cc == c {
			return true
		}
	}
	return false
}

func (g *estimateGate) reportCall(c media.Codec, from any, bps int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if prev, ok := g.calls[from]; ok && prev != c {
		g.forgetCallLocked(prev, from)
	}
	if !g.callsOnLocked(c) {
		// The first call on this codec: the viewers' say ends.
		for v, e := range g.viewers {
			if e.codec == c {
				g.sink.ForgetBandwidth(c, v)
			}
		}
	}
	g.calls[from] = c
	g.sink.ReportBandwidth(c, from, bps)
}

func (g *estimateGate) forgetCall(c media.Codec, from any) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.forgetCallLocked(c, from)
}

func (g *estimateGate) forgetCallLocked(c media.Codec, from any) {
	g.sink.ForgetBandwidth(c, from)
	if g.calls[from] != c {
		return
	}
	delete(g.calls, from)
	if g.callsOnLocked(c) {
		return
	}
	// The last call on this codec ended: the viewers' latest estimates
	// count again.
	for v, e := range g.viewers {
		if e.codec == c {
			g.sink.ReportBandwidth(c, v, e.bps)
		}
	}
}

func (g *estimateGate) reportViewer(c media.Codec, from any, bps int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if prev, ok := g.viewers[from]; ok && prev.codec != c && !g.callsOnLocked(prev.codec) {
		g.sink.ForgetBandwidth(prev.codec, from)
	}
	g.viewers[from] = viewerEstimate{codec: c, bps: bps}
	if !g.callsOnLocked(c) {
		g.sink.ReportBandwidth(c, from, bps)
	}
}

func (g *estimateGate) forgetViewer(c media.Codec, from any) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if e, ok := g.viewers[from]; ok && e.codec == c {
		delete(g.viewers, from)
	}
	g.sink.ForgetBandwidth(c, from) // harmless if it was held back
}
