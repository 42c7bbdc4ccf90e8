// Package webrtc adapts pion/webrtc to the call engine: its PeerFactory
// builds peer connections that send a media.Stream's shared tracks and
// meter the resident's audio. It implements callengine.PeerFactory.
package webrtc

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/media"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// ICEServer is a STUN or TURN server (W3C WebRTC RTCIceServer), as the
// homeserver's /voip/turnServer hands them out.
type ICEServer struct {
	URLs       []string
	Username   string
	Credential string
}

// Config configures a PeerFactory.
type Config struct {
	// ICEServers are used by peers created afterwards; SetICEServers
	// replaces them (TURN credentials expire).
	ICEServers []ICEServer
	// RelayOnly gathers relay candidates only (W3C WebRTC
	// RTCIceTransportPolicy "relay"): every call goes through a TURN
	// server, and NewPeer and AcceptOffer fail with ErrNoRelay while
	// no ICE server is set, since such a peer could never connect.
	RelayOnly bool
	// LoopbackOnly gathers host candidates on 127.0.0.1 only, with mDNS
	// off: for tests, which must keep traffic on the loopback interface.
	LoopbackOnly bool
	// Meter receives the resident's audio level and counters; NewPeerFactory
	// creates one when nil.
	Meter *media.AudioMeter
	// Speaker plays the decoded audio of every remote track, each through
	// an input of its own; may be nil.
	Speaker media.Speaker
	Logger  *slog.Logger
}

// PeerFactory creates peer connections that all send the same Stream.
type PeerFactory struct {
	stream *media.Stream
	api    *webrtc.API // calls
	// viewerAPI makes the peers of viewers that only watch (AcceptViewer).
	viewerAPI *webrtc.API
	// gate passes the peers' estimates on to the stream, the calls'
	// before the viewers' (viewerrate.go).
	gate   *estimateGate
	meter  *media.AudioMeter
	sink   media.Speaker
	log    *slog.Logger
	video  []media.Codec // offered video codecs, preferred first
	policy webrtc.ICETransportPolicy

	mu         sync.Mutex
	iceServers []webrtc.ICEServer
	reporting  map[*Peer]struct{} // open peers that reported loss

	// estMu is held around NewPeerConnection, during which the cc
	// interceptor hands over the new connection's GCC estimator (newEst),
	// or a viewer's budget (newBudget).
	estMu     sync.Mutex
	newEst    *tolerantEstimator
	newBudget *viewerBudget
}

var _ callengine.PeerFactory = (*PeerFactory)(nil)

// NewPeerFactory prepares the pion API: a MediaEngine with Opus
// (48000/2, useinbandfec=1), H.264 constrained baseline 42e01f in
// packetization-mode 1 and VP8, each only if the stream can send it; RTCP
// feedback nack, nack pli, ccm fir, goog-remb and transport-cc on video;
// send-side bandwidth estimation (GCC per peer, see bitrate.go) and pion's
// default interceptors but stats (NACK responder and generator, RTCP
// reports, TWCC feedback).
func NewPeerFactory(stream *media.Stream, cfg Config) (*PeerFactory, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Meter == nil {
		cfg.Meter = media.NewAudioMeter()
	}
	if !stream.Has(media.Opus) {
		return nil, fmt.Errorf("new peer factory: opus: %w", media.ErrNoEncoder)
	}
	f := &PeerFactory{stream: stream, meter: cfg.Meter, sink: cfg.Speaker, log: cfg.Logger, policy: webrtc.ICETransportPolicyAll,
		gate: newEstimateGate(stream)}
	if cfg.RelayOnly {
		f.policy = webrtc.ICETransportPolicyRelay
	}
	se := webrtc.SettingEngine{LoggerFactory: LoggerFactory{Logger: cfg.Logger}}
	if cfg.RelayOnly {
		// A relay pair is the only kind there will be, so nominate it at
		// once. pion/ice means to (defaultRelayOnlyAcceptanceMinWait is 0),
		// but with the options API it decides before it knows the
		// candidate types and waits its usual 2 s: measured, answer →
		// first frame took 2.4 s instead of ~0.4 s.
		se.SetRelayAcceptanceMinWait(0)
	}
	if cfg.LoopbackOnly {
		se.SetIncludeLoopbackCandidate(true)
		se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() && ip.To4() != nil })
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
		se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	}
	var err error
	if f.api, err = f.newAPI(se, cfg.Logger, callAPI); err != nil {
		return nil, err
	}
	if f.viewerAPI, err = f.newAPI(se, cfg.Logger, viewerAPI); err != nil {
		return nil, err
	}
	if len(f.video) == 0 {
		return nil, fmt.Errorf("new peer factory: video: %w", media.ErrNoEncoder)
	}
	f.SetICEServers(cfg.ICEServers)
	return f, nil
}

// apiKind says what a pion API's peers do besides sending the stream.
type apiKind int

const (
	// callAPI: residents' calls, which also receive (the resident's
	// audio, perhaps their camera).
	callAPI apiKind = iota
	// viewerAPI: viewers that only watch (WHEP).
	viewerAPI
)

// newAPI builds a pion API with the stream's codecs and the interceptors
// kind needs; it sets f.video on the way.
func (f *PeerFactory) newAPI(se webrtc.SettingEngine, log *slog.Logger, kind apiKind) (*webrtc.API, error) {
	stream := f.stream
	f.video = f.video[:0]
	me := &webrtc.MediaEngine{}
	videoFB := []webrtc.RTCPFeedback{
		{Type: webrtc.TypeRTCPFBGoogREMB},
		{Type: webrtc.TypeRTCPFBCCM, Parameter: "fir"},
	}
	// Payload types follow Chrome's habits; any free dynamic type would do.
	codecs := []struct {
		c    media.Codec
		p    webrtc.RTPCodecParameters
		kind webrtc.RTPCodecType
	}{
		{media.Opus, webrtc.RTPCodecParameters{PayloadType: 111, RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: media.OpusFMTP}}, webrtc.RTPCodecTypeAudio},
		{media.H264, webrtc.RTPCodecParameters{PayloadType: 102, RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: media.H264FMTP, RTCPFeedback: videoFB}}, webrtc.RTPCodecTypeVideo},
		{media.VP8, webrtc.RTPCodecParameters{PayloadType: 96, RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: videoFB}}, webrtc.RTPCodecTypeVideo},
	}
	for _, c := range codecs {
		if !stream.Has(c.c) {
			continue
		}
		if err := me.RegisterCodec(c.p, c.kind); err != nil {
			return nil, fmt.Errorf("register %s: %w", c.c, err)
		}
		if c.kind == webrtc.RTPCodecTypeVideo {
			f.video = append(f.video, c.c)
		}
	}
	lf := LoggerFactory{Logger: log}
	ir := &interceptor.Registry{}
	if kind == viewerAPI {
		// First, so that the NACK responder registered after it sees
		// the budget (viewerbudget.go).
		budgets, err := cc.NewInterceptor(func() (cc.BandwidthEstimator, error) {
			return newViewerBudget(func() int { return startBitrate(stream) }, stream.MaxVideoBitrate(), time.Now), nil
		})
		if err != nil {
			return nil, fmt.Errorf("new viewer budget interceptor: %w", err)
		}
		budgets.OnNewPeerConnection(func(_ string, e cc.BandwidthEstimator) {
			if b, ok := e.(*viewerBudget); ok {
				f.newBudget = b
			}
		})
		ir.Add(budgets)
		if err := viewerInterceptors(me, ir, lf, viewerHistory(stream.MaxVideoBitrate())); err != nil {
			return nil, err
		}
		return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), nil
	}
	// First, so that the NACK responder registered after it sees each
	// peer's estimate and keeps its retransmissions within it.
	if err := registerSendSideBWE(me, ir, func() int { return startBitrate(stream) }, lf, log,
		func(e *tolerantEstimator) { f.newEst = e }); err != nil {
		return nil, err
	}
	// pion's default interceptors except its stats interceptor, which
	// does bookkeeping on every packet of every peer for GetStats, which
	// nothing here calls. NACK adds nack and nack pli to video; TWCC adds
	// transport-cc feedback for what the residents send us (it also
	// negotiates the header extension, which registerSendSideBWE stamps
	// on our own packets).
	if err := webrtc.ConfigureNackWithOptions(me, ir,
		[]nack.GeneratorOption{nack.WithGeneratorLoggerFactory(lf)}, nack.WithResponderLoggerFactory(lf)); err != nil {
		return nil, fmt.Errorf("register nack: %w", err)
	}
	if err := webrtc.ConfigureRTCPReportsWithOptions(ir,
		[]report.ReceiverOption{report.WithReceiverLoggerFactory(lf)}, report.WithSenderLoggerFactory(lf)); err != nil {
		return nil, fmt.Errorf("register rtcp reports: %w", err)
	}
	if err := webrtc.ConfigureSimulcastExtensionHeaders(me); err != nil {
		return nil, fmt.Errorf("register simulcast extensions: %w", err)
	}
	if err := webrtc.ConfigureTWCCSenderWithOptions(me, ir, twcc.WithLoggerFactory(lf)); err != nil {
		return nil, fmt.Errorf("register twcc: %w", err)
	}
	// Residents' clients write each audio packet's level into it (RFC
	// 6464): the door decodes only the voices worth hearing.
	if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.AudioLevelURI}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, fmt.Errorf("register audio level extension: %w", err)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), nil
}

// SetICEServers replaces the ICE servers for peers created from now on.
func (f *PeerFactory) SetICEServers(servers []ICEServer) {
	list := make([]webrtc.ICEServer, 0, len(servers))
	for _, s := range servers {
		list = append(list, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	f.mu.Lock()
	f.iceServers = list
	f.mu.Unlock()
}

// configuration is what a new peer connection is made with: the current
// ICE servers and the transport policy.
func (f *PeerFactory) configuration() (webrtc.Configuration, error) {
	f.mu.Lock()
	servers := f.iceServers
	f.mu.Unlock()
	if f.policy == webrtc.ICETransportPolicyRelay && len(servers) == 0 {
		return webrtc.Configuration{}, ErrNoRelay
	}
	return webrtc.Configuration{
		ICEServers:         servers,
		ICETransportPolicy: f.policy,
		BundlePolicy:       webrtc.BundlePolicyMaxBundle,
	}, nil
}

// VideoLoss is the largest fraction of the door's video lost, as the
// last RTCP receiver report of each open peer says (RFC 3550 §6.4.1:
// over the interval since its previous report); ok is false while no open
// peer has reported.
func (f *PeerFactory) VideoLoss() (ratio float64, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for p := range f.reporting {
		ratio, ok = max(ratio, float64(p.lost.Load())/256), true
	}
	return ratio, ok
}

func (f *PeerFactory) noteLoss(p *Peer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.reporting == nil {
		f.reporting = map[*Peer]struct{}{}
	}
	f.reporting[p] = struct{}{}
}

func (f *PeerFactory) forgetLoss(p *Peer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.reporting, p)
}

// ReceivedAudio returns the meter's snapshot of the residents' audio.
func (f *PeerFactory) ReceivedAudio() media.ReceivedAudio { return f.meter.Snapshot() }

// NewPeer implements callengine.PeerFactory: see newPeer.
func (f *PeerFactory) NewPeer(ctx context.Context, sink func(callengine.PeerEvent)) (callengine.Peer, error) {
	return f.newPeer(ctx, sink)
}

// AcceptOffer implements callengine.PeerFactory: a peer answering a
// resident's call to the door (live view), and its answer SDP.
func (f *PeerFactory) AcceptOffer(ctx context.Context, offer string, sink func(callengine.PeerEvent)) (callengine.Peer, string, error) {
	p, answer, err := f.acceptOffer(ctx, offer, sink)
	if err != nil {
		return nil, "", err
	}
	return p, answer, nil
}

// viewerHistory is how many video packets a viewer's NACK responder keeps
// to resend: a second's worth at the stream's maximum rate, as libwebrtc
// keeps at least a second (RtpPacketHistory), in packets of 1000 bytes
// (most are fuller), rounded up to the power of two pion's buffer needs;
// at least 256, at most pion's default of 1024, which calls keep. A
// resend asked for later than that comes too late for a live picture
// anyway: the receiver asks for a keyframe instead.
//
// The responder copies every packet it sends into its history, and a new
// peer's history is allocated packet by packet until it is full: with
// 1024 (1.5 MB a viewer), a viewer's first six seconds at the default
// 1.5 Mb/s allocated 1.5 kB a packet and fed the garbage collector
// (measured with BenchmarkWHEPViewers, whose windows fall in those
// seconds: 1.18–1.20× with 1024, 1.12–1.14× with 256 in alternating
// runs). At the default maximum, 256 packets are 1.5 s.
func viewerHistory(maxBitrate int) uint16 {
	n := uint16(256)
	for n < 1024 && int(n)*1000*8 < maxBitrate {
		n *= 2
	}
	return n
}

// viewerInterceptors are a viewer's, after its budget (viewerbudget.go):
// what sending needs and nothing for receiving, since a viewer sends
// nothing the door keeps (draft-ietf-wish-whep: it only watches). Kept:
// the NACK responder (retransmissions, within the budget) and RTCP sender
// reports (lip sync, round-trip time). Left out, against a call's: the
// send-side estimator with its transport-wide sequence numbers and
// transport-cc feedback (viewerbudget.go says why), the NACK generator,
// the receiver reports and the transport-cc feedback generator, which
// serve only what the far end sends; the NACK generator also ticks ten
// times a second per peer whether anything arrives or not. A viewer that
// does send audio still gets it read and dropped (Peer.mute).
func viewerInterceptors(me *webrtc.MediaEngine, ir *interceptor.Registry, lf LoggerFactory, history uint16) error {
	responder, err := nack.NewResponderInterceptor(nack.WithResponderLoggerFactory(lf), nack.ResponderSize(history))
	if err != nil {
		return fmt.Errorf("register nack responder: %w", err)
	}
	me.RegisterFeedback(webrtc.RTCPFeedback{Type: webrtc.TypeRTCPFBNACK}, webrtc.RTPCodecTypeVideo)
	me.RegisterFeedback(webrtc.RTCPFeedback{Type: webrtc.TypeRTCPFBNACK, Parameter: "pli"}, webrtc.RTPCodecTypeVideo)
	ir.Add(responder)
	sender, err := report.NewSenderInterceptor(report.WithSenderLoggerFactory(lf))
	if err != nil {
		return fmt.Errorf("register rtcp sender reports: %w", err)
	}
	ir.Add(sender)
	// As for calls, so that a viewer demultiplexes the bundle the same way.
	if err := webrtc.ConfigureSimulcastExtensionHeaders(me); err != nil {
		return fmt.Errorf("register simulcast extensions: %w", err)
	}
	return nil
}
