package whep_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/device/whep"
	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/codec"
	mwebrtc "github.com/doorbell/intercom/media/webrtc"
	"github.com/pion/ice/v4"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
)

// viewerPeers is the daemon's adapter, as small: media/webrtc's refusals
// become whep's.
type viewerPeers struct{ f *mwebrtc.PeerFactory }

func (v viewerPeers) AcceptViewer(ctx context.Context, offer string, sink func(callengine.PeerEvent)) (callengine.Peer, string, error) {
	p, answer, err := v.f.AcceptViewer(ctx, offer, sink)
	if errors.Is(err, mwebrtc.ErrBadOffer) {
		err = fmt.Errorf("%w: %w", whep.ErrBadOffer, err)
	}
	return p, answer, err
}

// counting wraps media/codec's encoders and counts the instances made.
type counting struct{ h264, vp8, opus atomic.Int32 }

func (c *counting) encoders() media.Encoders {
	e := codec.Encoders()
	h264, vp8, opus := e.H264, e.VP8, e.Opus
	e.H264 = func(cfg media.VideoEncoderConfig) (media.VideoEncoder, error) { c.h264.Add(1); return h264(cfg) }
	e.VP8 = func(cfg media.VideoEncoderConfig) (media.VideoEncoder, error) { c.vp8.Add(1); return vp8(cfg) }
	e.Opus = func(cfg media.AudioEncoderConfig) (media.AudioEncoder, error) { c.opus.Add(1); return opus(cfg) }
	return e
}

// door is the door's media side and its WHEP endpoint on a real HTTP
// server on loopback.
type door struct {
	stream  *media.Stream
	factory *mwebrtc.PeerFactory
	srv     *whep.Server
	url     string
	count   *counting
}

func newDoor(t *testing.T, max int) *door { return newDoorWith(t, max, nil) }

// newDoorWith is newDoor with more handlers on the server (a test page).
func newDoorWith(t testing.TB, max int, extra map[string]http.Handler) *door {
	return newDoorFull(t, max, media.StreamConfig{}, extra, nil)
}

// newDoorConfig is newDoor with the stream configured by cfg (its
// encoders are always media/codec's, counted).
func newDoorConfig(t testing.TB, max int, cfg media.StreamConfig) *door {
	// The peers log at Info, as the daemon's do, into nothing: what a
	// line costs to format is the door's, as on the board, writing it
	// to the journal is not counted.
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return newDoorFull(t, max, cfg, nil, log)
}

func newDoorFull(t testing.TB, max int, cfg media.StreamConfig, extra map[string]http.Handler, log *slog.Logger) *door {
	t.Helper()
	d := &door{count: &counting{}}
	var err error
	cfg.Encoders = d.count.encoders()
	d.stream, err = media.NewStream(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.stream.Close() })
	d.factory, err = mwebrtc.NewPeerFactory(d.stream, mwebrtc.Config{LoopbackOnly: true, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	d.srv = whep.New(whep.Config{Peers: viewerPeers{d.factory}, MaxViewers: max})
	mux := http.NewServeMux()
	mux.Handle(whep.Path, d.srv.Handler())
	mux.Handle(whep.Path+"/", d.srv.Handler())
	for p, h := range extra {
		mux.Handle(p, h)
	}
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	d.url = ts.URL
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.srv.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return d
}

// loopbackAPI is a pion stack with its default codecs, gathering on
// 127.0.0.1 only.
func loopbackAPI(t *testing.T) *webrtc.API {
	t.Helper()
	api, err := clientAPI()
	if err != nil {
		t.Fatal(err)
	}
	return api
}

func clientAPI() (*webrtc.API, error) {
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() && ip.To4() != nil })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se)), nil
}

// viewer is a WHEP client written against the draft with pion: no code of
// the door's in it.
type viewer struct {
	pc           *webrtc.PeerConnection
	location     string
	audio, video atomic.Int64 // RTP packets
	keyFrames    atomic.Int64
	videoMime    atomic.Value
}

// watch posts a recvonly audio+video offer, complete with candidates, and
// applies the answer. It returns the response when it is not 201.
func watch(t *testing.T, base string) (*viewer, *http.Response) {
	t.Helper()
	v := &viewer{}
	var err error
	v.pc, err = loopbackAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.pc.Close() })
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		if _, err := v.pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			t.Fatal(err)
		}
	}
	v.pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		go v.read(tr)
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
	resp, err := http.Post(base+whep.Path, "application/sdp", strings.NewReader(v.pc.LocalDescription().SDP))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return nil, resp
	}
	v.location = resp.Header.Get("Location")
	if err := v.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(answer)}); err != nil {
		t.Fatalf("apply the answer: %v\n%s", err, answer)
	}
	return v, resp
}

func (v *viewer) read(tr *webrtc.TrackRemote) {
	var h264 codecs.H264Packet
	video := tr.Kind() == webrtc.RTPCodecTypeVideo
	if video {
		v.videoMime.Store(tr.Codec().MimeType)
	}
	for {
		pkt, _, err := tr.ReadRTP()
		if err != nil {
			return
		}
		if !video {
			v.audio.Add(1)
			continue
		}
		v.video.Add(1)
		if au, err := h264.Unmarshal(pkt.Payload); err == nil && len(au) > 0 && media.IsKeyFrame(media.H264, au) {
			v.keyFrames.Add(1)
		}
	}
}

func (v *viewer) delete(t *testing.T, base string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, base+v.location, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE %s: %s", v.location, resp.Status)
	}
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func stats(s *media.Stream, c media.Codec) media.EncoderStats {
	for _, e := range s.Stats() {
		if e.Codec == c {
			return e
		}
	}
	return media.EncoderStats{}
}

// call is a resident's classic call with the door: the door's offer (a
// pooled peer's, candidates gathered) answered by a pion client.
func call(t *testing.T, d *door) (callengine.Peer, *webrtc.PeerConnection, *atomic.Int64) {
	t.Helper()
	gathered := make(chan struct{})
	var once atomic.Bool
	p, err := d.factory.NewPeer(context.Background(), func(ev callengine.PeerEvent) {
		if ev.Candidate != nil && ev.Candidate.IsEnd() && once.CompareAndSwap(false, true) {
			close(gathered)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	<-gathered
	pc, err := loopbackAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var videoRTP atomic.Int64
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		go func() {
			for {
				if _, _, err := tr.ReadRTP(); err != nil {
					return
				}
				if tr.Kind() == webrtc.RTPCodecTypeVideo {
					videoRTP.Add(1)
				}
			}
		}()
	})
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: p.Offer()}); err != nil {
		t.Fatal(err)
	}
	ans, err := pc.CreateAnswer(nil)
	if err != nil {
		t.Fatal(err)
	}
	g := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(ans); err != nil {
		t.Fatal(err)
	}
	<-g
	if err := p.SetAnswer(pc.LocalDescription().SDP); err != nil {
		t.Fatal(err)
	}
	return p, pc, &videoRTP
}

// TestWHEPViewersShareTheCallsEncoder: three WHEP viewers (real HTTP, real
// ICE on loopback) and a resident's call at once all get the door's video
// and audio from one H.264 and one Opus encoder; the limit refuses a
// fourth viewer; a DELETE frees its slot and its hold on the encoders.
func TestWHEPViewersShareTheCallsEncoder(t *testing.T) {
	d := newDoor(t, 3)
	_, _, callVideo := call(t, d)
	var viewers []*viewer
	for i := range 3 {
		v, resp := watch(t, d.url)
		if v == nil {
			t.Fatalf("viewer %d: %s", i, resp.Status)
		}
		viewers = append(viewers, v)
	}
	for i, v := range viewers {
		waitFor(t, fmt.Sprintf("viewer %d's keyframe and audio", i), 15*time.Second, func() bool {
			return v.keyFrames.Load() > 0 && v.audio.Load() > 10
		})
		if m, _ := v.videoMime.Load().(string); !strings.EqualFold(m, webrtc.MimeTypeH264) {
			t.Errorf("viewer %d gets %q, want H.264", i, m)
		}
	}
	waitFor(t, "the call's video", 15*time.Second, func() bool { return callVideo.Load() > 10 })

	h, o := stats(d.stream, media.H264), stats(d.stream, media.Opus)
	if h.Users != 4 || o.Users != 4 {
		t.Errorf("users: H.264 %d, Opus %d; want 4 each (3 viewers + the call)", h.Users, o.Users)
	}
	if h.Starts != 1 || o.Starts != 1 || d.count.h264.Load() != 1 || d.count.opus.Load() != 1 || d.count.vp8.Load() != 0 {
		t.Errorf("encoders made: H.264 %d (stream says %d starts), Opus %d (%d), VP8 %d; want one H.264 and one Opus for all",
			d.count.h264.Load(), h.Starts, d.count.opus.Load(), o.Starts, d.count.vp8.Load())
	}

	if v, resp := watch(t, d.url); v != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("fourth viewer: %v, want 503 with Retry-After", resp.Status)
	}
	viewers[0].delete(t, d.url)
	waitFor(t, "the deleted viewer's hold released", 5*time.Second, func() bool { return stats(d.stream, media.H264).Users == 3 })
	v, resp := watch(t, d.url)
	if v == nil {
		t.Fatalf("viewer after a DELETE: %s", resp.Status)
	}
	waitFor(t, "the new viewer's keyframe", 15*time.Second, func() bool { return v.keyFrames.Load() > 0 })
	if n := d.count.h264.Load(); n != 1 {
		t.Errorf("%d H.264 encoders after a viewer came and went, want still 1", n)
	}
}

// TestWHEPViewerGoneEndsSession: a viewer that closes its connection
// without a DELETE (go2rtc never sends one) loses its session, and the
// encoder stops with the last user.
func TestWHEPViewerGoneEndsSession(t *testing.T) {
	d := newDoor(t, 1)
	v, resp := watch(t, d.url)
	if v == nil {
		t.Fatalf("viewer: %s", resp.Status)
	}
	waitFor(t, "video", 15*time.Second, func() bool { return v.keyFrames.Load() > 0 })
	if err := v.pc.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the session to end", 45*time.Second, func() bool { return d.srv.Status().Viewers == 0 })
	waitFor(t, "the encoders to stop", 5*time.Second, func() bool {
		return !stats(d.stream, media.H264).Running && !stats(d.stream, media.Opus).Running
	})
}

// TestWHEPRefusesWhatItCannotSend: an offer whose codecs the door cannot
// send is the client's fault, a 400 that says so.
func TestWHEPRefusesWhatItCannotSend(t *testing.T) {
	d := newDoor(t, 1)
	offer := "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" +
		"m=video 9 UDP/TLS/RTP/SAVPF 98\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n" +
		"a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n" +
		"a=setup:actpass\r\na=recvonly\r\na=rtcp-mux\r\na=rtpmap:98 VP9/90000\r\n"
	resp, err := http.Post(d.url+whep.Path, "application/sdp", strings.NewReader(offer))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "no audio or video we can send") {
		t.Errorf("%s %s, want 400 naming the codecs", resp.Status, body)
	}
	if st := d.srv.Status(); st.Viewers != 0 {
		t.Errorf("status %+v", st)
	}
}
