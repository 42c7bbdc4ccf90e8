package livekit

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	lkserver "github.com/doorbell/intercom/internal/testenv/livekit"
	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/codec"
	protologger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
)

// viewersEnv, when set, makes the test binary a process of viewers for
// BenchmarkSFUViewers (see TestMain).
const viewersEnv = "INTERCOM_BENCH_VIEWERS"

func TestMain(m *testing.M) {
	// The SDK logs, and has pion log, through its package logger (stderr
	// by default); set once, before any room exists.
	lksdk.SetLogger(protologger.GetDiscardLogger())
	if os.Getenv(viewersEnv) == "1" {
		if err := serveViewers(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "viewers:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// testLogger logs to stderr with LIVEKIT_TEST_LOG=1, else nowhere: the
// SDK's goroutines may log after a test ended, when t.Log panics.
func testLogger() *slog.Logger {
	if os.Getenv("LIVEKIT_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// newStream is the door: test pattern and tone through the real encoders.
func newStream(t testing.TB) *media.Stream {
	t.Helper()
	s, err := media.NewStream(media.StreamConfig{Encoders: codec.Encoders()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func encStats(s *media.Stream, c media.Codec) media.EncoderStats {
	for _, e := range s.Stats() {
		if e.Codec == c {
			return e
		}
	}
	return media.EncoderStats{}
}

// pcmCapture is a speaker that keeps count of what its inputs were given.
type pcmCapture struct {
	mu      sync.Mutex
	samples int
	peak    int
}

func (c *pcmCapture) NewInput() media.PCMInput { return c }
func (c *pcmCapture) Close()                   {}

func (c *pcmCapture) WritePCM(pcm []int16) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.samples += len(pcm)
	for _, v := range pcm {
		c.peak = max(c.peak, abs(int(v)))
	}
}

func (c *pcmCapture) get() (samples, peak int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.samples, c.peak
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func waitFor(t testing.TB, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// nextEvent returns the next event, failing the test after d.
func nextEvent(t testing.TB, p *Publisher, d time.Duration) Event {
	t.Helper()
	select {
	case ev, ok := <-p.Events():
		if !ok {
			t.Fatal("events closed")
		}
		return ev
	case <-time.After(d):
		t.Fatalf("no event within %v", d)
	}
	return Event{}
}

// viewer is a resident in the room: the SDK with auto-subscribe, noting
// what the door's video and audio tracks deliver, and optionally
// publishing a tone.
type viewer struct {
	room       *lksdk.Room
	videoPkts  atomic.Int64
	audioPkts  atomic.Int64
	firstNALs  chan []uint8 // NAL unit types of the first video frame
	keyFrameAt chan time.Time
}

func joinViewer(t testing.TB, srv *lkserver.Server, identity, room string, talk *media.Stream) *viewer {
	t.Helper()
	v := &viewer{firstNALs: make(chan []uint8, 1), keyFrameAt: make(chan time.Time, 1)}
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(tr *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, _ *lksdk.RemoteParticipant) {
		go v.read(tr)
	}
	tok, err := srv.Token(identity, room, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	v.room, err = lksdk.ConnectToRoomWithToken(srv.URL, tok, cb)
	if err != nil {
		t.Fatalf("viewer %s: %v", identity, err)
	}
	t.Cleanup(v.room.Disconnect)
	if talk != nil {
		if _, err := v.room.LocalParticipant.PublishTrack(talk.Track(media.Opus), &lksdk.TrackPublicationOptions{Name: "microphone"}); err != nil {
			t.Fatalf("viewer %s publish: %v", identity, err)
		}
	}
	return v
}

// read counts a track's packets; for H.264 it records the NAL unit types
// of the first frame (up to the marker bit) and when the first IDR came.
func (v *viewer) read(tr *webrtc.TrackRemote) {
	video := tr.Kind() == webrtc.RTPCodecTypeVideo
	var h264 codecs.H264Packet
	var nals []uint8
	firstDone, keyDone := false, false
	for {
		pkt, _, err := tr.ReadRTP()
		if err != nil {
			return
		}
		if !video {
			v.audioPkts.Add(1)
			continue
		}
		v.videoPkts.Add(1)
		if len(pkt.Payload) == 0 {
			continue
		}
		// RFC 6184 §5.3: the NAL unit type is the low 5 bits of the
		// first byte; for STAP-A (24) and FU-A (28) the type inside.
		t := pkt.Payload[0] & 0x1f
		switch {
		case t == 28 && len(pkt.Payload) > 1:
			t = pkt.Payload[1] & 0x1f
		case t == 24 && len(pkt.Payload) > 3:
			t = pkt.Payload[3] & 0x1f
		}
		if !firstDone {
			nals = append(nals, t)
			if pkt.Marker {
				firstDone = true
				v.firstNALs <- nals
			}
		}
		if !keyDone {
			if au, err := h264.Unmarshal(pkt.Payload); err == nil && media.IsKeyFrame(media.H264, au) {
				keyDone = true
				v.keyFrameAt <- time.Now()
			}
		}
	}
}

// TestPublishToSFU joins the door to a real livekit-server room and checks
// what a resident (the Go SDK) gets: H.264 whose first frame is a keyframe,
// and Opus; the resident's voice reaches the door's speaker; presence
// events; and the encoders stop when the door leaves.
func TestPublishToSFU(t *testing.T) {
	lkserver.SkipWithoutClientAddress(t)
	srv := lkserver.StartT(t, lkserver.Options{})
	stream := newStream(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	spk := &pcmCapture{}
	meter := media.NewAudioMeter()
	tok, err := srv.Token("@door:localhost:DOOR", "call", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	p, err := Join(ctx, srv.URL, tok, Config{Stream: stream, Speaker: spk, Meter: meter, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	t.Logf("joined and published in %v", time.Since(t0))
	for _, c := range []media.Codec{media.H264, media.Opus} {
		if u := encStats(stream, c).Users; u != 1 {
			t.Errorf("%s users while joined = %d, want 1", c, u)
		}
	}

	talk, err := media.NewStream(media.StreamConfig{ID: "resident", Encoders: media.Encoders{Opus: codec.NewOpus}})
	if err != nil {
		t.Fatal(err)
	}
	defer talk.Close()
	release, err := talk.Acquire(media.Opus)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	t1 := time.Now()
	v := joinViewer(t, srv, "@alice:localhost:PHONE", "call", talk)

	if ev := nextEvent(t, p, 10*time.Second); ev.Kind != ParticipantJoined || ev.Identity != "@alice:localhost:PHONE" {
		t.Fatalf("event %+v, want alice joined", ev)
	}
	select {
	case nals := <-v.firstNALs:
		t.Logf("first video frame %v after the viewer joined: NAL types %v", time.Since(t1), nals)
		if !slices.Contains(nals, 5) {
			t.Errorf("first frame the viewer got is not an IDR (NAL types %v)", nals)
		}
	case <-ctx.Done():
		t.Fatalf("no video frame at the viewer (%d packets)", v.videoPkts.Load())
	}
	waitFor(t, "the door's audio at the viewer", 10*time.Second, func() bool { return v.audioPkts.Load() > 25 })
	waitFor(t, "the resident's voice at the door", 10*time.Second, func() bool {
		n, _ := spk.get()
		return n >= media.SampleRate/2 && meter.Snapshot().Level > -40
	})
	n, peak := spk.get()
	t.Logf("door played %d samples, peak %d, level %.1f dBov; video subscribed %v", n, peak, meter.Snapshot().Level, p.VideoSubscribed())
	if !p.VideoSubscribed() {
		t.Error("VideoSubscribed false after a viewer got video")
	}
	if ps := p.Participants(); len(ps) != 1 || ps[0].Identity != "@alice:localhost:PHONE" || !ps[0].Audio {
		t.Errorf("participants %+v", ps)
	}
	if st := encStats(stream, media.H264); st.KeyFrameRequests == 0 {
		t.Errorf("no keyframe request reached the encoder: %+v", st)
	}

	v.room.Disconnect()
	if ev := nextEvent(t, p, 10*time.Second); ev.Kind != ParticipantLeft || ev.Identity != "@alice:localhost:PHONE" {
		t.Fatalf("event %+v, want alice left", ev)
	}

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []media.Codec{media.H264, media.Opus} {
		if u := encStats(stream, c).Users; u != 0 {
			t.Errorf("%s users after Close = %d", c, u)
		}
	}
	waitFor(t, "encoders stopped", 5*time.Second, func() bool {
		return !encStats(stream, media.H264).Running && !encStats(stream, media.Opus).Running
	})
	if _, ok := <-p.Events(); ok {
		t.Error("events not closed after Close")
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestSFUGoesAway stops the server under a joined door: the door must say
// Disconnected, release its encoders by itself, and close at once.
func TestSFUGoesAway(t *testing.T) {
	lkserver.SkipWithoutClientAddress(t)
	srv := lkserver.StartT(t, lkserver.Options{})
	stream := newStream(t)
	tok, err := srv.Token("door", "call", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Join(t.Context(), srv.URL, tok, Config{Stream: stream, Logger: testLogger(), ReconnectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	// The server says goodbye (SERVER_SHUTDOWN), but the SDK sometimes
	// notices the closed socket first and tries to resume; then the
	// Publisher gives up after ReconnectTimeout.
	ev := nextEvent(t, p, 15*time.Second)
	if ev.Kind == Reconnecting {
		ev = nextEvent(t, p, 15*time.Second)
	}
	if ev.Kind != Disconnected {
		t.Fatalf("event %+v, want disconnected", ev)
	}
	t.Logf("disconnected: %s", ev.Reason)
	waitFor(t, "encoders released", 5*time.Second, func() bool {
		return encStats(stream, media.H264).Users == 0 && encStats(stream, media.Opus).Users == 0
	})
	t0 := time.Now()
	p.Close()
	if d := time.Since(t0); d > time.Second {
		t.Errorf("Close after Disconnected took %v", d)
	}
}

// TestSFUKilledThenClose kills the server (no goodbye): the door reports
// Reconnecting, and Close ends it promptly although the SDK is still
// trying to resume.
func TestSFUKilledThenClose(t *testing.T) {
	lkserver.SkipWithoutClientAddress(t)
	srv := lkserver.StartT(t, lkserver.Options{})
	stream := newStream(t)
	tok, err := srv.Token("door", "call", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Join(t.Context(), srv.URL, tok, Config{Stream: stream, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	if ev := nextEvent(t, p, 20*time.Second); ev.Kind != Reconnecting {
		t.Fatalf("event %+v, want reconnecting", ev)
	}
	t0 := time.Now()
	p.Close()
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("Close while reconnecting took %v", d)
	}
	if u := encStats(stream, media.H264).Users; u != 0 {
		t.Errorf("h264 users after Close = %d", u)
	}
}

// TestSFUKilledGivesUp kills the server and waits: after ReconnectTimeout
// the Publisher gives up by itself, says Disconnected and releases the
// encoders.
func TestSFUKilledGivesUp(t *testing.T) {
	lkserver.SkipWithoutClientAddress(t)
	srv := lkserver.StartT(t, lkserver.Options{})
	stream := newStream(t)
	tok, err := srv.Token("door", "call", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Join(t.Context(), srv.URL, tok, Config{Stream: stream, Logger: testLogger(), ReconnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	srv.Kill()
	if ev := nextEvent(t, p, 10*time.Second); ev.Kind != Reconnecting {
		t.Fatalf("event %+v, want reconnecting", ev)
	}
	t0 := time.Now()
	if ev := nextEvent(t, p, 10*time.Second); ev.Kind != Disconnected || ev.Reason != "RECONNECT_TIMEOUT" {
		t.Fatalf("event %+v, want disconnected after the timeout", ev)
	}
	t.Logf("gave up %v after reconnecting began", time.Since(t0))
	waitFor(t, "encoders released", 5*time.Second, func() bool {
		return encStats(stream, media.H264).Users == 0 && encStats(stream, media.Opus).Users == 0
	})
}

// TestJoinRefused: a token signed with another secret is refused and the
// door holds no encoder.
func TestJoinRefused(t *testing.T) {
	srv := lkserver.StartT(t, lkserver.Options{})
	stream := newStream(t)
	other := &lkserver.Server{APIKey: srv.APIKey, APISecret: "another-secret-another-secret-another-secret"}
	tok, err := other.Token("door", "call", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := Join(ctx, srv.URL, tok, Config{Stream: stream, Logger: testLogger()}); err == nil {
		t.Fatal("join with a bad token succeeded")
	} else if strings.Contains(err.Error(), tok) {
		t.Errorf("the error quotes the token: %v", err)
	} else {
		t.Logf("refused: %v", err)
	}
	if u := encStats(stream, media.H264).Users; u != 0 {
		t.Errorf("h264 users after a refused join = %d", u)
	}
}

// TestContextEndsPublisher: cancelling Join's context closes the
// Publisher.
func TestContextEndsPublisher(t *testing.T) {
	lkserver.SkipWithoutClientAddress(t)
	srv := lkserver.StartT(t, lkserver.Options{})
	stream := newStream(t)
	tok, err := srv.Token("door", "call", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	base := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(t.Context())
	p, err := Join(ctx, srv.URL, tok, Config{Stream: stream, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case _, ok := <-p.Events():
		if ok {
			t.Fatal("an event instead of the close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("events not closed after the context ended")
	}
	if u := encStats(stream, media.H264).Users; u != 0 {
		t.Errorf("h264 users = %d", u)
	}
	// Ours and the SDK's: its read loops, timers and the goroutine that
	// closes its peer connections all end.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines left over (%d before Join):\n%s", n-base, base, buf[:runtime.Stack(buf, true)])
	}
}

func TestJoinNeedsStream(t *testing.T) {
	if _, err := Join(t.Context(), "ws://127.0.0.1:1", "x", Config{}); err != ErrNoStream {
		t.Errorf("err %v, want ErrNoStream", err)
	}
}

// TestSubscribeOnly: a subscribe-only connection (another member's SFU in
// a multi-SFU call) publishes nothing and starts no encoder, yet reports
// who is there and plays their voice.
func TestSubscribeOnly(t *testing.T) {
	lkserver.SkipWithoutClientAddress(t)
	srv := lkserver.StartT(t, lkserver.Options{})
	stream := newStream(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	spk := &pcmCapture{}
	meter := media.NewAudioMeter()
	tok, err := srv.Token("door-listener", "call", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Join(ctx, srv.URL, tok, Config{Stream: stream, Speaker: spk, Meter: meter, SubscribeOnly: true, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	talk, err := media.NewStream(media.StreamConfig{ID: "resident", Encoders: media.Encoders{Opus: codec.NewOpus}})
	if err != nil {
		t.Fatal(err)
	}
	defer talk.Close()
	release, err := talk.Acquire(media.Opus)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	v := joinViewer(t, srv, "@alice:remote:PHONE", "call", talk)
	if ev := nextEvent(t, p, 10*time.Second); ev.Kind != ParticipantJoined || ev.Identity != "@alice:remote:PHONE" {
		t.Fatalf("event %+v, want alice joined", ev)
	}
	waitFor(t, "the resident's voice at the door", 10*time.Second, func() bool {
		n, _ := spk.get()
		return n >= media.SampleRate/2 && meter.Snapshot().Level > -40
	})
	time.Sleep(500 * time.Millisecond)
	if n := v.videoPkts.Load() + v.audioPkts.Load(); n != 0 {
		t.Errorf("the viewer got %d packets from a subscribe-only door", n)
	}
	for _, c := range []media.Codec{media.H264, media.Opus} {
		if st := encStats(stream, c); st.Users != 0 || st.Starts != 0 {
			t.Errorf("%s encoder used by a subscribe-only connection: %+v", c, st)
		}
	}
}

// boundTo counts the peer connections track is bound to: the shared
// track keeps one binding per sender, and a binding left behind keeps its
// connection's interceptors (the NACK buffer: about 1.5 MB once full)
// alive and fed with every packet for the life of the door. pion exports
// no count, so the test reads the unexported list.
func boundTo(t testing.TB, track *webrtc.TrackLocalStaticSample) int {
	t.Helper()
	rtp := reflect.ValueOf(track).Elem().FieldByName("rtpTrack")
	if !rtp.IsValid() || rtp.IsNil() {
		t.Fatal("pion's TrackLocalStaticSample changed: no rtpTrack")
	}
	b := rtp.Elem().FieldByName("bindings")
	if !b.IsValid() {
		t.Fatal("pion's TrackLocalStaticRTP changed: no bindings")
	}
	return b.Len()
}

// TestPublisherLeavesNoBinding: however early or late a call ends (during
// the join, during publishing, with a viewer subscribed), the stream's
// shared tracks are bound to no connection of the publisher afterwards.
func TestPublisherLeavesNoBinding(t *testing.T) {
	lkserver.SkipWithoutClientAddress(t)
	srv := lkserver.StartT(t, lkserver.Options{})
	stream := newStream(t)
	for i, after := range []time.Duration{0, 20 * time.Millisecond, 60 * time.Millisecond, 120 * time.Millisecond,
		200 * time.Millisecond, 300 * time.Millisecond, 450 * time.Millisecond, 700 * time.Millisecond, -1} {
		room := fmt.Sprintf("call-%d", i)
		tok, err := srv.Token("door", room, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			joinViewer(t, srv, fmt.Sprintf("viewer-%d", i), room, nil)
		}
		ctx, cancel := context.WithCancel(t.Context())
		if after >= 0 {
			time.AfterFunc(after, cancel)
		}
		p, err := Join(ctx, srv.URL, tok, Config{Stream: stream, Logger: testLogger()})
		if after < 0 {
			// The last call ends once published: the count sees bindings.
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, "both tracks bound", 10*time.Second, func() bool {
				return boundTo(t, stream.Track(media.H264)) == 1 && boundTo(t, stream.Track(media.Opus)) == 1
			})
			cancel()
		}
		if err == nil {
			for range p.Events() {
			}
		}
		cancel()
		for _, c := range []media.Codec{media.H264, media.Opus} {
			if n := boundTo(t, stream.Track(c)); n != 0 {
				t.Errorf("call ended %v after the join began (join err %v): %s track still bound to %d connections", after, err, c, n)
			}
		}
	}
}
