package livekit

import (
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/cputime"
	lkserver "github.com/doorbell/intercom/internal/testenv/livekit"
	"github.com/doorbell/intercom/internal/testenv/reexec"
	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/codec"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
)

// BenchmarkSFUViewers measures the door process's CPU per second
// (door-ms/s) with 1 and then 4 residents watching through a real
// livekit-server: encoding 640x480@15 H.264 and the Opus tone once,
// packetising, encrypting and sending them once to the SFU, and, in
// "talking", receiving and decoding each resident's Opus (every viewer
// sends a tone, as in media/webrtc's BenchmarkFanout, so the numbers
// compare); in "silent" the viewers only watch. The viewers run in a child
// process (this test binary re-executed with INTERCOM_BENCH_VIEWERS=1) and
// the SFU in its own, so neither is counted as the door's. Each op is one
// second with 1 viewer plus one second with 4; ratio is door-ms/s with 4
// over door-ms/s with 1.
func BenchmarkSFUViewers(b *testing.B) {
	lkserver.SkipWithoutClientAddress(b)
	b.Run("talking", func(b *testing.B) { benchViewers(b, true) })
	b.Run("silent", func(b *testing.B) { benchViewers(b, false) })
}

func benchViewers(b *testing.B, talk bool) {
	srv := lkserver.StartT(b, lkserver.Options{})
	stream := newStream(b)
	tok, err := srv.Token("door", "bench", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	p, err := Join(b.Context(), srv.URL, tok, Config{Stream: stream, Logger: testLogger()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	vs := startViewers(b)
	measure := func(viewers int) float64 {
		for vs.n < viewers {
			vs.add(b, srv, talk)
		}
		time.Sleep(time.Second) // the newest viewer's keyframe and ramp-up
		c0, t0 := cputime.Self(), time.Now()
		for i := 0; i < b.N; i++ {
			time.Sleep(time.Second)
		}
		return float64((cputime.Self() - c0).Microseconds()) / 1000 / time.Since(t0).Seconds()
	}
	b.ResetTimer()
	one := measure(1)
	four := measure(4)
	b.StopTimer()
	b.ReportMetric(one, "door-ms/s@1")
	b.ReportMetric(four, "door-ms/s@4")
	b.ReportMetric(four/one, "ratio")
	b.ReportMetric(0, "ns/op")
}

// viewerMsg is one line between the benchmark and the viewers' process:
// a join request one way, "video" (first keyframe received) or an error
// the other.
type viewerMsg struct {
	ID    int    `json:"id"`
	URL   string `json:"url,omitempty"`
	Token string `json:"token,omitempty"`
	Talk  bool   `json:"talk,omitempty"` // publish a tone
	Video bool   `json:"video,omitempty"`
	Error string `json:"error,omitempty"`
}

type viewersProc struct {
	in  *json.Encoder
	out *json.Decoder
	n   int
}

func startViewers(b *testing.B) *viewersProc {
	b.Helper()
	in, out := reexec.Start(b, "viewers", viewersEnv+"=1")
	return &viewersProc{in: in, out: out}
}

// add joins one more viewer and waits until it has decoded-ready video.
func (vp *viewersProc) add(b *testing.B, srv *lkserver.Server, talk bool) {
	b.Helper()
	id := vp.n
	vp.n++
	tok, err := srv.Token(fmt.Sprintf("viewer-%d", id), "bench", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	if err := vp.in.Encode(viewerMsg{ID: id, URL: srv.URL, Token: tok, Talk: talk}); err != nil {
		b.Fatal(err)
	}
	var m viewerMsg
	if err := vp.out.Decode(&m); err != nil || !m.Video {
		b.Fatalf("viewer %d: %+v %v", id, m, err)
	}
}

// serveViewers joins a viewer for every request read from in, each
// subscribing to everything and publishing a tone if asked to, until in
// closes.
func serveViewers(in io.Reader, out io.Writer) error {
	tone, err := media.NewStream(media.StreamConfig{ID: "resident", Encoders: media.Encoders{Opus: codec.NewOpus}})
	if err != nil {
		return err
	}
	defer tone.Close()
	release, err := tone.Acquire(media.Opus)
	if err != nil {
		return err
	}
	defer release()
	enc := json.NewEncoder(out)
	dec := json.NewDecoder(in)
	var rooms []*lksdk.Room
	defer func() {
		for _, r := range rooms {
			r.Disconnect()
		}
	}()
	for {
		var m viewerMsg
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		video := make(chan struct{})
		cb := lksdk.NewRoomCallback()
		cb.OnTrackSubscribed = func(tr *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, _ *lksdk.RemoteParticipant) {
			go func() {
				var h264 codecs.H264Packet
				seen := false
				for {
					pkt, _, err := tr.ReadRTP()
					if err != nil {
						return
					}
					if seen || tr.Kind() != webrtc.RTPCodecTypeVideo {
						continue
					}
					// Depacketise like a real viewer would until the
					// first keyframe; after that only count.
					if au, err := h264.Unmarshal(pkt.Payload); err == nil && media.IsKeyFrame(media.H264, au) {
						seen = true
						close(video)
					}
				}
			}()
		}
		room, err := lksdk.ConnectToRoomWithToken(m.URL, m.Token, cb)
		if err != nil {
			return fmt.Errorf("viewer %d: %w", m.ID, err)
		}
		rooms = append(rooms, room)
		if m.Talk {
			if _, err := room.LocalParticipant.PublishTrack(tone.Track(media.Opus), &lksdk.TrackPublicationOptions{Name: "microphone"}); err != nil {
				return fmt.Errorf("viewer %d publish: %w", m.ID, err)
			}
		}
		select {
		case <-video:
		case <-time.After(15 * time.Second):
			return fmt.Errorf("viewer %d: no keyframe", m.ID)
		}
		if err := enc.Encode(viewerMsg{ID: m.ID, Video: true}); err != nil {
			return err
		}
	}
}
