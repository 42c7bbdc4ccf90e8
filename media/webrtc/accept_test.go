package webrtc

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/media"
	"github.com/pion/webrtc/v4"
)

// TestAcceptOfferRestartAndRenegotiate: a resident calls the door (live
// view); the door answers with its shared tracks; then the door restarts
// ICE and the resident renegotiates, and media keeps flowing.
func TestAcceptOfferRestartAndRenegotiate(t *testing.T) {
	e := newEnv(t)
	r := &resident{}
	var err error
	r.pc, err = loopbackAPI(t, []media.Codec{media.VP8, media.H264}, nil).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	r.pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.read(tr)
		}()
	})
	// The resident sends audio and asks for video, as a video call does.
	if _, err := r.pc.AddTrack(e.tone.Track(media.Opus)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	release, err := e.tone.Acquire(media.Opus)
	if err != nil {
		t.Fatal(err)
	}
	offer, err := r.pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(r.pc)
	if err := r.pc.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	<-gathered

	var mu sync.Mutex
	var states []callengine.PeerState
	cp, answer, err := e.factory.AcceptOffer(context.Background(), r.pc.LocalDescription().SDP, func(ev callengine.PeerEvent) {
		if ev.State != nil {
			mu.Lock()
			states = append(states, *ev.State)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	p := cp.(*Peer)
	t.Cleanup(func() {
		p.Close()
		r.pc.GracefulClose()
		r.wg.Wait()
		release()
	})
	if err := r.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		t.Fatalf("resident applies the door's answer: %v\n%s", err, answer)
	}
	if p.VideoCodec() != media.H264 {
		t.Errorf("video codec %q, want H.264 (offered)", p.VideoCodec())
	}
	waitFor(t, "video from the door", 10*time.Second, func() bool { return r.keyFrames.Load() > 0 })
	waitFor(t, "resident's audio metered", 10*time.Second, func() bool { return e.factory.ReceivedAudio().Packets > 10 })

	// ICE restart from the door.
	restart, err := p.RestartICE()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: restart}); err != nil {
		t.Fatal(err)
	}
	ra, err := r.pc.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	g2 := webrtc.GatheringCompletePromise(r.pc)
	if err := r.pc.SetLocalDescription(ra); err != nil {
		t.Fatal(err)
	}
	<-g2
	if err := p.SetAnswer(r.pc.LocalDescription().SDP); err != nil {
		t.Fatalf("door applies the restart answer: %v", err)
	}
	before := r.videoRTP.Load()
	waitFor(t, "video after the ICE restart", 10*time.Second, func() bool { return r.videoRTP.Load() > before+15 })

	// The resident renegotiates (e.g. hold/unhold); the door answers.
	re, err := r.pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.pc.SetLocalDescription(re); err != nil {
		t.Fatal(err)
	}
	da, err := p.AnswerOffer(re.SDP)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: da}); err != nil {
		t.Fatal(err)
	}
	before = r.videoRTP.Load()
	waitFor(t, "video after renegotiation", 10*time.Second, func() bool { return r.videoRTP.Load() > before+15 })
	if encStats(e.stream, media.H264).Starts != 1 {
		t.Errorf("encoder restarted: %+v", encStats(e.stream, media.H264))
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range states {
		if s == callengine.PeerFailed || s == callengine.PeerClosed {
			t.Errorf("peer went %s", s)
		}
	}
}

func TestAcceptOfferRefusesGarbage(t *testing.T) {
	e := newEnv(t)
	if _, _, err := e.factory.AcceptOffer(context.Background(), "v=0\r\nnonsense", func(callengine.PeerEvent) {}); err == nil {
		t.Fatal("garbage offer accepted")
	}
}
