package webrtc

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/media"
	"github.com/pion/rtcp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
)

// viewer is a recvonly pion client of AcceptViewer (as a WHEP client
// is), recording the video sequence numbers it receives.
type viewer struct {
	pc     *webrtc.PeerConnection
	answer string
	mu     sync.Mutex
	seqs   []uint16
	keys   int
	ssrc   uint32
}

func (e *env) watch(t *testing.T) *viewer {
	t.Helper()
	v := &viewer{}
	var err error
	// SRTP's replay protection would drop a resent packet (the same
	// sequence number): off, so that the test sees retransmissions.
	api, err := newLoopbackAPI([]media.Codec{media.H264}, nil, func(se *webrtc.SettingEngine) { se.DisableSRTPReplayProtection(true) })
	if err != nil {
		t.Fatal(err)
	}
	v.pc, err = api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		if _, err := v.pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	v.pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var h264 codecs.H264Packet
			for {
				pkt, _, err := tr.ReadRTP()
				if err != nil {
					return
				}
				if tr.Kind() != webrtc.RTPCodecTypeVideo {
					continue
				}
				v.mu.Lock()
				v.ssrc = uint32(tr.SSRC())
				v.seqs = append(v.seqs, pkt.SequenceNumber)
				if au, err := h264.Unmarshal(pkt.Payload); err == nil && media.IsKeyFrame(media.H264, au) {
					v.keys++
				}
				v.mu.Unlock()
			}
		}()
	})
	offer, err := v.pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(v.pc)
	if err := v.pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered
	p, answer, err := e.factory.AcceptViewer(context.Background(), v.pc.LocalDescription().SDP, func(callengine.PeerEvent) {})
	if err != nil {
		t.Fatal(err)
	}
	v.answer = answer
	if err := v.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Close()
		v.pc.GracefulClose()
		wg.Wait()
	})
	waitFor(t, "the viewer's first keyframe", 10*time.Second, func() bool {
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.keys > 0
	})
	return v
}

func (v *viewer) count(seq uint16) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	n := 0
	for _, s := range v.seqs {
		if s == seq {
			n++
		}
	}
	return n
}

// A viewer's peer has fewer interceptors than a call's (factory.go,
// viewerInterceptors) but sends the same way: it negotiates NACK, PLI and
// FIR (REMB too, if the viewer offers it), resends what a NACK asks for,
// and its first PLI gets a keyframe at once. It negotiates no
// transport-cc, which viewers do not need (viewerbudget.go): even when
// the viewer offers it, as this pion client does.
func TestViewerKeepsFeedback(t *testing.T) {
	e := newEnv(t)
	v := e.watch(t)
	for _, want := range []string{" nack\r\n", " nack pli\r\n", " ccm fir\r\n"} {
		if !strings.Contains(v.answer, want) {
			t.Errorf("answer lacks %q:\n%s", strings.TrimSpace(want), v.answer)
		}
	}
	for _, unwanted := range []string{" transport-cc\r\n", "transport-wide-cc-extensions-01"} {
		if strings.Contains(v.answer, unwanted) {
			t.Errorf("answer has %q:\n%s", strings.TrimSpace(unwanted), v.answer)
		}
	}
	v.mu.Lock()
	seq, ssrc := v.seqs[len(v.seqs)-1], v.ssrc
	v.mu.Unlock()
	nack := &rtcp.TransportLayerNack{MediaSSRC: ssrc, Nacks: rtcp.NackPairsFromSequenceNumbers([]uint16{seq})}
	waitFor(t, "the NACKed packet again", 5*time.Second, func() bool {
		if err := v.pc.WriteRTCP([]rtcp.Packet{nack}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		return v.count(seq) > 1
	})
	forced := encStats(e.stream, media.H264).ForcedKeyFrames
	if err := v.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a keyframe for the viewer's PLI", 3*time.Second, func() bool {
		return encStats(e.stream, media.H264).ForcedKeyFrames > forced
	})
}

// During a call the encoder follows the call's estimate only: a viewer's
// REMB does not reach the stream's rate control (one receiver there, the
// call); once the call ends the viewer's estimate rules it.
func TestViewerEstimateWaitsForTheCall(t *testing.T) {
	e := newEnv(t)
	call, r := e.call(t, []media.Codec{media.H264})
	waitFor(t, "the call's video", 10*time.Second, func() bool { return r.keyFrames.Load() > 0 })
	v := e.watch(t)
	remb := func() {
		v.mu.Lock()
		ssrc := v.ssrc
		v.mu.Unlock()
		if err := v.pc.WriteRTCP([]rtcp.Packet{&rtcp.ReceiverEstimatedMaximumBitrate{Bitrate: 200_000, SSRCs: []uint32{ssrc}}}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the call's estimate", 10*time.Second, func() bool { return encStats(e.stream, media.H264).EstimateReceivers == 1 })
	for range 10 {
		remb()
		time.Sleep(50 * time.Millisecond)
		if n := encStats(e.stream, media.H264).EstimateReceivers; n != 1 {
			t.Fatalf("%d receivers' estimates during the call, want the call's only", n)
		}
	}
	reports := encStats(e.stream, media.H264).EstimateReports
	call.Close()
	waitFor(t, "the viewer's estimate after the call", 5*time.Second, func() bool {
		remb()
		s := encStats(e.stream, media.H264)
		return s.EstimateReceivers == 1 && s.EstimateReports > reports
	})
}

// A viewer that sends no REMB (a pion client, as go2rtc is) still gives
// the encoder an estimate when no call is on: the loss-based one, from
// the receiver reports pion sends once a second (viewerbudget.go).
func TestViewerWithoutREMBReportsLoss(t *testing.T) {
	e := newEnv(t)
	if n := encStats(e.stream, media.H264).EstimateReceivers; n != 0 {
		t.Fatalf("%d estimates before the viewer", n)
	}
	e.watch(t)
	waitFor(t, "the viewer's loss-based estimate", 5*time.Second, func() bool {
		s := encStats(e.stream, media.H264)
		return s.EstimateReceivers == 1 && s.EstimateReports >= 2
	})
}
