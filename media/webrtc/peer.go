package webrtc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/media"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// Peer is one peer connection sending the door's stream. Its offer is set
// when NewPeer returns, so a pool of them makes the invite immediate. It
// uses no encoder until the answer is applied.
type Peer struct {
	f     *PeerFactory
	pc    *webrtc.PeerConnection
	video *webrtc.RTPSender
	sink  func(callengine.PeerEvent)

	// videoCodec is the codec chosen from the answer; pion callbacks read
	// it, so it is atomic rather than under a lock they might wait for.
	videoCodec atomic.Value // media.Codec
	// mute drops the far end's audio (viewers): set before any track
	// can arrive, read by OnTrack.
	mute bool

	// opMu serialises signalling (SetAnswer, AddCandidates) with Close.
	opMu     sync.Mutex
	answered bool
	pending  []callengine.Candidate
	releases []func()
	warm     func() // Ringing's warm-up of the video encoder, until the answer
	closed   bool

	// mu guards goroutine starts against Close's wait. Callbacks take it
	// only for an instant.
	mu        sync.Mutex
	stopping  bool
	wg        sync.WaitGroup // our goroutines: RTCP and track readers
	closeOnce sync.Once
	closeErr  error

	// lost is the fraction of the door's video the resident reported
	// lost in its last RTCP receiver report (RFC 3550 §6.4.1), in 256ths.
	lost atomic.Uint32

	// ufrag is the ICE username fragment of the local description, set
	// with it: log lines carry it so that a connection's steps can be
	// told apart and matched with the far end's (the resident page
	// reports the same fragment as its remote one).
	ufrag atomic.Value // string
	// estimate combines the peer's REMB and send-side estimate into the
	// one the stream's rate control sees; bwe relays the send-side one
	// (bitrate.go).
	estimate *peerEstimate
	bwe      *sendSideEstimate
}

var _ callengine.Peer = (*Peer)(nil)

// newPeer builds the connection: an audio transceiver (sendrecv, the
// shared Opus track) and a video transceiver (sendonly, the shared H.264
// track, swapped for VP8 if the answer lacks H.264), both tracks in the
// stream's MediaStream so pion writes a=msid:<stream> <track> (MSC2746).
// Then it creates and sets the offer. Candidates and state changes go to
// sink.
func (f *PeerFactory) newPeer(ctx context.Context, sink func(callengine.PeerEvent)) (*Peer, error) {
	p, err := f.basePeer(ctx, sink, false)
	if err != nil {
		return nil, err
	}
	fail := func(what string, err error) (*Peer, error) {
		p.Close()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	audioTr, err := p.pc.AddTransceiverFromTrack(f.stream.Track(media.Opus),
		webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendrecv})
	if err != nil {
		return fail("add audio transceiver", err)
	}
	videoTr, err := p.pc.AddTransceiverFromTrack(f.stream.Track(f.video[0]),
		webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		return fail("add video transceiver", err)
	}
	p.video = videoTr.Sender()
	p.goRun(func() { p.readRTCP(audioTr.Sender(), false) })
	p.goRun(func() { p.readRTCP(p.video, true) })

	offer, err := p.pc.CreateOffer(nil)
	if err != nil {
		return fail("create offer", err)
	}
	if err := p.pc.SetLocalDescription(offer); err != nil {
		return fail("set local offer", err)
	}
	p.noteUfrag()
	// As the offerer the door nominates the ICE pair: see iceCheckInterval.
	if err := setICECheckInterval(p.pc, iceCheckInterval, iceMaxBindingRequests); err != nil {
		f.log.Warn("ICE checks keep pion's interval", "err", err)
	}
	return p, nil
}

// acceptOffer builds a connection that answers a resident's offer (live
// view): the door's audio and video tracks go onto the transceivers the
// offer created, with the video codec chosen as for an answer (H.264 if
// the offer has a compatible one, else VP8). The answer waits briefly for
// host candidates, as js-sdk does, so that it usually carries them.
func (f *PeerFactory) acceptOffer(ctx context.Context, offer string, sink func(callengine.PeerEvent)) (*Peer, string, error) {
	return f.accept(ctx, offer, sink, acceptOptions{gatherWait: answerGatherWait})
}

// acceptOptions are what distinguishes a viewer (WHEP) from a resident's
// live-view call.
type acceptOptions struct {
	// gatherWait bounds the wait for ICE gathering before the answer is
	// returned; 0 waits until gathering is complete (or ctx ends).
	gatherWait time.Duration
	// viewer: the far end only watches. Its peer is made with the
	// viewers' interceptors (factory.go), whatever audio it sends is
	// dropped instead of played on the door's speaker, and its estimate
	// yields to the calls' (viewerrate.go).
	viewer bool
}

// AcceptViewer answers the offer of a viewer that only watches, e.g. a
// WHEP client (draft-ietf-wish-whep): the door's shared tracks, as for a
// resident's live view, but the answer carries every candidate (it waits
// for ICE gathering to complete, bounded by ctx: such clients take no
// trickled candidates) and any audio the viewer sends is dropped, never
// played at the door. Offers that cannot be answered fail with
// ErrBadOffer. The peer holds the stream's encoders (Acquire) until it is
// closed.
func (f *PeerFactory) AcceptViewer(ctx context.Context, offer string, sink func(callengine.PeerEvent)) (callengine.Peer, string, error) {
	p, answer, err := f.accept(ctx, offer, sink, acceptOptions{viewer: true})
	if err != nil {
		return nil, "", err
	}
	return p, answer, nil
}

func (f *PeerFactory) accept(ctx context.Context, offer string, sink func(callengine.PeerEvent), o acceptOptions) (*Peer, string, error) {
	offered, err := parseAnswer(offer, f.stream.Has)
	if err != nil {
		return nil, "", fmt.Errorf("offer: %w: %w", ErrBadOffer, err)
	}
	p, err := f.basePeer(ctx, sink, o.viewer)
	if err != nil {
		return nil, "", err
	}
	fail := func(what string, err error) (*Peer, string, error) {
		p.Close()
		return nil, "", fmt.Errorf("%s: %w", what, err)
	}
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return fail("set remote offer", fmt.Errorf("%w: %w", ErrBadOffer, err))
	}
	codecs := []media.Codec{}
	if offered.audio {
		s, err := p.pc.AddTrack(f.stream.Track(media.Opus))
		if err != nil {
			return fail("add audio track", err)
		}
		p.goRun(func() { p.readRTCP(s, false) })
		codecs = append(codecs, media.Opus)
	}
	if offered.video != "" {
		s, err := p.pc.AddTrack(f.stream.Track(offered.video))
		if err != nil {
			return fail("add video track", err)
		}
		p.video = s
		p.videoCodec.Store(offered.video)
		p.goRun(func() { p.readRTCP(s, true) })
		codecs = append(codecs, offered.video)
	}
	if len(codecs) == 0 {
		return fail("answer", fmt.Errorf("%w: it has no audio or video we can send (Opus; H.264 constrained baseline with packetization-mode 1, or VP8)", ErrBadOffer))
	}
	ans, err := p.pc.CreateAnswer(nil)
	if err != nil {
		return fail("create answer", err)
	}
	gathered := webrtc.GatheringCompletePromise(p.pc)
	if err := p.pc.SetLocalDescription(ans); err != nil {
		return fail("set local answer", err)
	}
	p.noteUfrag()
	var timeout <-chan time.Time
	if o.gatherWait > 0 {
		t := time.NewTimer(o.gatherWait)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-gathered:
	case <-timeout:
	case <-ctx.Done():
		return fail("answer", ctx.Err())
	}
	p.opMu.Lock()
	p.answered = true
	for _, c := range codecs {
		release, err := f.stream.Acquire(c)
		if err != nil {
			p.opMu.Unlock()
			return fail("start "+string(c), err)
		}
		p.releases = append(p.releases, release)
	}
	p.opMu.Unlock()
	return p, p.pc.LocalDescription().SDP, nil
}

// answerGatherWait bounds how long an answer waits for ICE gathering
// (js-sdk waits 200 ms too); later candidates are trickled.
const answerGatherWait = 200 * time.Millisecond

// basePeer makes a peer connection with the callbacks every peer needs:
// a call's, or a viewer's (see acceptOptions.viewer).
func (f *PeerFactory) basePeer(ctx context.Context, sink func(callengine.PeerEvent), viewer bool) (*Peer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	conf, err := f.configuration()
	if err != nil {
		return nil, err
	}
	api, rates := f.api, f.gate.callSink()
	if viewer {
		api, rates = f.viewerAPI, f.gate.viewerSink()
	}
	f.estMu.Lock()
	pc, err := api.NewPeerConnection(conf)
	est, budget := f.newEst, f.newBudget // handed over during NewPeerConnection
	f.newEst, f.newBudget = nil, nil
	f.estMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("new peer connection: %w", err)
	}
	p := &Peer{f: f, pc: pc, sink: sink, mute: viewer}
	p.estimate = newPeerEstimate(rates, p)
	switch {
	case est != nil:
		p.bwe = newSendSideEstimate(est.BandwidthEstimator, p.estimate, p.VideoCodec)
		feedback := p.bwe.feedback
		est.onFeedback.Store(&feedback)
	case budget != nil:
		// A viewer: its loss-based estimate (viewerbudget.go).
		p.bwe = newSendSideEstimate(lossView{budget}, p.estimate, p.VideoCodec)
	}
	pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		var cand callengine.Candidate // nil: gathering complete, the end marker
		if c != nil {
			j := c.ToJSON()
			cand = callengine.Candidate{Candidate: j.Candidate, SDPMid: j.SDPMid, SDPMLineIndex: j.SDPMLineIndex}
		}
		sink(callengine.PeerEvent{Candidate: &cand})
	})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		st := peerState(s)
		if st == callengine.PeerConnected {
			// SRTP has just started: anything sent before was dropped, so
			// the viewer needs a fresh keyframe.
			if c := p.VideoCodec(); c != "" {
				f.stream.RequestKeyFrameNow(c)
			}
		}
		f.log.Debug("peer state", "state", st.String(), "ufrag", p.localUfrag())
		sink(callengine.PeerEvent{State: &st})
	})
	// Which pair ICE selected, and when: the controlling side (the door,
	// as the offerer) selects it once its nominating check succeeds, and
	// the far end starts DTLS only after that.
	pc.SCTP().Transport().ICETransport().OnSelectedCandidatePairChange(func(pair *webrtc.ICECandidatePair) {
		f.log.Debug("ice pair selected", "pair", pair.String(), "ufrag", p.localUfrag())
	})
	pc.OnTrack(func(t *webrtc.TrackRemote, r *webrtc.RTPReceiver) {
		if t.Kind() != webrtc.RTPCodecTypeAudio || p.mute {
			// A resident calling the door sends their camera too, a
			// viewer perhaps a microphone; read it so the interceptors
			// keep reporting, and drop it.
			p.goRun(func() { discard(t) })
			return
		}
		p.goRun(func() { p.readAudio(t, media.AudioLevelExtension(r.GetParameters())) })
	})
	return p, nil
}

// discard reads a remote track until it ends.
func discard(t *webrtc.TrackRemote) {
	buf := make([]byte, 1500)
	for {
		if _, _, err := t.Read(buf); err != nil {
			return
		}
	}
}

// goRun starts a goroutine that Close waits for, unless closing began.
func (p *Peer) goRun(fn func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		fn()
	}()
}

// Offer returns the local offer. It is the current local description, so
// a peer that waited in a pool already carries its gathered candidates
// (which were also delivered to the sink).
func (p *Peer) Offer() string {
	if d := p.pc.LocalDescription(); d != nil {
		return d.SDP
	}
	return ""
}

// StreamID returns the MediaStream ID of the sent tracks.
func (p *Peer) StreamID() string { return p.f.stream.ID() }

// SetAnswer applies the answer. Before pion binds the tracks it picks the
// video codec the answer accepted (H.264, else VP8) and swaps the video
// sender's track to match; then it starts using the stream's encoders for
// the accepted codecs. Candidates that came before the answer are applied
// after it.
func (p *Peer) SetAnswer(sdp string) error {
	ans, err := parseAnswer(sdp, p.f.stream.Has)
	if err != nil {
		return err
	}
	p.opMu.Lock()
	defer p.opMu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if p.answered {
		// The answer to a later local offer (ICE restart): the media stay
		// as negotiated.
		if p.pc.SignalingState() != webrtc.SignalingStateHaveLocalOffer {
			return ErrAnswered
		}
		if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
			return fmt.Errorf("set renegotiated answer: %w", err)
		}
		return nil
	}
	if ans.video != "" && ans.video != p.f.video[0] {
		// The sender has not started: ReplaceTrack only swaps the track,
		// and SetRemoteDescription binds the new one.
		if err := p.video.ReplaceTrack(p.f.stream.Track(ans.video)); err != nil {
			return fmt.Errorf("switch video to %s: %w", ans.video, err)
		}
	}
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
		return fmt.Errorf("set remote answer: %w", err)
	}
	p.answered = true
	p.videoCodec.Store(ans.video)
	for _, c := range []media.Codec{media.Opus, ans.video} {
		if c == "" || (c == media.Opus && !ans.audio) {
			continue
		}
		release, err := p.f.stream.Acquire(c)
		if err != nil {
			return fmt.Errorf("start %s: %w", c, err)
		}
		p.releases = append(p.releases, release)
	}
	p.f.log.Debug("answer applied", "video", string(ans.video), "audio", ans.audio, "ufrag", p.localUfrag())
	if p.warm != nil {
		// The encoders are held for real now (the warm one, if the
		// answer chose its codec, without a restart).
		p.warm()
		p.warm = nil
	}
	pending := p.pending
	p.pending = nil
	return p.addLocked(pending)
}

// Ringing readies the stream's preferred video encoder while the peer's
// call rings (media.Stream.Warm), so that the answer finds it started: it
// is kept until the answer has been applied or the peer closes. It never
// blocks.
func (p *Peer) Ringing() {
	p.opMu.Lock()
	defer p.opMu.Unlock()
	if p.closed || p.answered || p.warm != nil {
		return
	}
	release, err := p.f.stream.Warm(p.f.video[0])
	if err != nil {
		p.f.log.Debug("no encoder warm-up", "err", err)
		return
	}
	p.warm = release
}

// AnswerOffer applies a renegotiation offer from the far end (hold, ICE
// restart) and returns the answer. If our own offer is out, the far end's
// wins (the caller only gets here when it is the polite side): ours is
// rolled back first.
func (p *Peer) AnswerOffer(offer string) (string, error) {
	p.opMu.Lock()
	defer p.opMu.Unlock()
	if p.closed {
		return "", ErrClosed
	}
	if p.pc.SignalingState() == webrtc.SignalingStateHaveLocalOffer {
		if err := p.pc.SetLocalDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeRollback}); err != nil {
			return "", fmt.Errorf("roll back local offer: %w", err)
		}
	}
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", fmt.Errorf("set renegotiation offer: %w", err)
	}
	ans, err := p.pc.CreateAnswer(nil)
	if err != nil {
		return "", fmt.Errorf("create answer: %w", err)
	}
	if err := p.pc.SetLocalDescription(ans); err != nil {
		return "", fmt.Errorf("set local answer: %w", err)
	}
	// A hold offer (sendonly) must get recvonly or inactive back, which
	// pion does not write by itself and refuses as a local description:
	// the far end gets the conforming copy (see conformAnswer).
	return conformAnswer(offer, p.pc.LocalDescription().SDP)
}

// RestartICE creates and sets an offer with new ICE credentials (RFC 8445
// §9); the answer comes back through SetAnswer.
func (p *Peer) RestartICE() (string, error) {
	p.opMu.Lock()
	defer p.opMu.Unlock()
	if p.closed {
		return "", ErrClosed
	}
	offer, err := p.pc.CreateOffer(&webrtc.OfferOptions{ICERestart: true})
	if err != nil {
		return "", fmt.Errorf("create restart offer: %w", err)
	}
	if err := p.pc.SetLocalDescription(offer); err != nil {
		return "", fmt.Errorf("set restart offer: %w", err)
	}
	p.noteUfrag()
	return p.pc.LocalDescription().SDP, nil
}

// AddCandidates applies remote candidates, holding them until the answer
// if it has not come yet (the homeserver may deliver them first).
func (p *Peer) AddCandidates(cands []callengine.Candidate) error {
	p.opMu.Lock()
	defer p.opMu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if !p.answered {
		p.pending = append(p.pending, cands...)
		return nil
	}
	return p.addLocked(cands)
}

func (p *Peer) addLocked(cands []callengine.Candidate) error {
	var errs []error
	for _, c := range cands {
		// pion treats an empty candidate as end-of-candidates.
		init := webrtc.ICECandidateInit{Candidate: c.Candidate, SDPMid: c.SDPMid, SDPMLineIndex: c.SDPMLineIndex}
		if err := p.pc.AddICECandidate(init); err != nil {
			errs = append(errs, fmt.Errorf("add candidate %q: %w", c.Candidate, err))
		}
	}
	return errors.Join(errs...)
}

// Close tears the connection down, waits for its goroutines and releases
// its encoders. It is idempotent.
func (p *Peer) Close() error {
	p.closeOnce.Do(func() {
		p.opMu.Lock()
		p.closed = true
		releases := p.releases
		p.releases = nil
		if p.warm != nil {
			releases = append(releases, p.warm)
			p.warm = nil
		}
		p.opMu.Unlock()
		p.mu.Lock()
		p.stopping = true
		p.mu.Unlock()
		p.closeErr = p.pc.GracefulClose()
		p.wg.Wait()
		p.f.forgetLoss(p)
		if p.bwe != nil {
			p.bwe.close() // no more send-side reports after this
		}
		if c := p.VideoCodec(); c != "" {
			p.estimate.stream.ForgetBandwidth(c, p)
		}
		for _, r := range releases {
			r()
		}
	})
	return p.closeErr
}

// noteUfrag keeps the local description's ICE username fragment for the
// log lines.
func (p *Peer) noteUfrag() {
	if d := p.pc.LocalDescription(); d != nil {
		p.ufrag.Store(iceUfrag(d.SDP))
	}
}

func (p *Peer) localUfrag() string {
	u, _ := p.ufrag.Load().(string)
	return u
}

// EstimateMeasured reports whether the bandwidth estimate last reported
// for this peer is the send-side one (media.MeasuredEstimate).
func (p *Peer) EstimateMeasured() bool { return p.estimate.measured.Load() }

// VideoCodec returns the video codec chosen from the answer, "" before it.
func (p *Peer) VideoCodec() media.Codec {
	c, _ := p.videoCodec.Load().(media.Codec)
	return c
}

// readRTCP drains a sender's RTCP, which also feeds the interceptors (NACK
// responder, reports), turns picture-loss and full-intra requests into
// keyframe requests for the codec in use, and hands the receiver's
// bandwidth estimate (REMB) to the peer's estimate. It ends when the
// sender stops.
//
// The first PLI or FIR of a connection is served at once (the stream's
// urgent keyframe, RequestKeyFrameNow): it means the far end has nothing
// to show yet, e.g. the keyframe sent when the connection came up was
// lost, and the stream's rate limit would otherwise hold its first
// picture back by up to MinKeyFrameGap. Later ones are rate-limited.
//
// REMB (draft-alvestrand-rmcat-remb) is what a receiver sends when it
// runs its own estimator: our packets carry transport-wide sequence
// numbers, so libwebrtc answers them with transport-cc feedback instead,
// for the send-side estimate (bitrate.go); REMB remains for receivers
// that do not. See docs/ARCHITECTURE.md, "Bitrate".
func (p *Peer) readRTCP(s *webrtc.RTPSender, video bool) {
	buf := make([]byte, 1500)
	firstLoss := true
	for {
		n, _, err := s.Read(buf)
		if err != nil {
			p.f.log.Debug("rtcp reader ended", "video", video, "err", err)
			return
		}
		if !video {
			continue
		}
		pkts, err := rtcp.Unmarshal(buf[:n])
		if err != nil {
			continue
		}
		for _, pkt := range pkts {
			switch pkt := pkt.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				c := p.VideoCodec()
				switch {
				case c == "":
				case firstLoss:
					firstLoss = false
					p.f.stream.RequestKeyFrameNow(c)
				default:
					p.f.stream.RequestKeyFrame(c)
				}
			case *rtcp.ReceiverReport:
				p.reportLoss(pkt.Reports)
			case *rtcp.SenderReport:
				p.reportLoss(pkt.Reports) // a resident sending video reports in its SR
			case *rtcp.ReceiverEstimatedMaximumBitrate:
				if c := p.VideoCodec(); c != "" {
					p.estimate.ReportBandwidth(c, rembSource{}, int(min(pkt.Bitrate, 1<<30)))
				}
			}
		}
	}
}

// reportLoss keeps the loss of the door's video stream from a report
// block (only the video sender's RTCP is read for it, and a report about
// another SSRC is not ours).
func (p *Peer) reportLoss(reports []rtcp.ReceptionReport) {
	ssrcs := p.video.GetParameters().Encodings
	for _, r := range reports {
		for _, e := range ssrcs {
			if uint32(e.SSRC) == r.SSRC {
				p.lost.Store(uint32(r.FractionLost))
				p.f.noteLoss(p)
			}
		}
	}
}

// readAudio meters and decodes the resident's Opus track until it ends;
// levelExt is the negotiated RFC 6464 extension's ID, 0 if none.
func (p *Peer) readAudio(t *webrtc.TrackRemote, levelExt uint8) {
	if t.Codec().MimeType != webrtc.MimeTypeOpus {
		p.f.log.Warn("remote audio not opus", "codec", t.Codec().MimeType)
		return
	}
	rx, err := p.f.stream.NewOpusReceiver(p.f.meter, p.f.sink)
	if err != nil {
		p.f.log.Error("remote audio", "err", err)
		return
	}
	defer rx.Close()
	var loggedErr bool
	for {
		pkt, _, err := t.ReadRTP()
		if err != nil {
			if !errors.Is(err, io.EOF) && !loggedErr {
				p.f.log.Debug("remote audio ended", "err", err)
			}
			return
		}
		if err := rx.WriteRTP(pkt.SequenceNumber, pkt.Timestamp, pkt.Payload, media.LevelOf(&pkt.Header, levelExt), time.Now()); err != nil && !loggedErr {
			loggedErr = true // one line per track: a broken stream repeats
			p.f.log.Warn("remote audio", "err", err)
		}
	}
}

func peerState(s webrtc.PeerConnectionState) callengine.PeerState {
	switch s {
	case webrtc.PeerConnectionStateConnecting:
		return callengine.PeerConnecting
	case webrtc.PeerConnectionStateConnected:
		return callengine.PeerConnected
	case webrtc.PeerConnectionStateDisconnected:
		return callengine.PeerDisconnected
	case webrtc.PeerConnectionStateFailed:
		return callengine.PeerFailed
	case webrtc.PeerConnectionStateClosed:
		return callengine.PeerClosed
	}
	return callengine.PeerNew
}
