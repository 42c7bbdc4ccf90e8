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
// (door-ms/s) with 1 and with 4 residents watching through a real
// livekit-server: encoding 640x480@15 H.264 and the Opus tone once,
// packetising, encrypting and sending them once to the SFU, and, in
// "talking", receiving and decoding each resident's Opus (every viewer
// sends a tone, as in media/webrtc's BenchmarkFanout, so the numbers
// compare); in "silent" the viewers only watch. The viewers run in a child
// process (this test binary re-executed with INTERCOM_BENCH_VIEWERS=1) and
// the SFU in its own, so neither is counted as the door's. As in
// BenchmarkFanout, one op is one paired round (internal/testenv/cputime):
// three more viewers join, 2 s are measured with 4, they leave, 2 s are
// measured with 1; reported are the medians of each and of the per-round
// ratio (ratio: door-ms/s with 4 over door-ms/s with 1).
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
	vs.add(b, srv, talk) // the one who stays
	var extra []int
	r := cputime.Paired{
		// The newest viewers' keyframe and ramp-up, or the leavers'
		// teardown, are over before a window starts.
		Settle: time.Second,
		Span:   2 * time.Second,
		Load: func() {
			for range 3 {
				extra = append(extra, vs.add(b, srv, talk))
			}
		},
		Unload: func() {
			for _, id := range extra {
				vs.leave(b, id)
			}
			extra = extra[:0]
		},
	}.Run(b)
	r.Report(b, "door-ms/s@1", "door-ms/s@4", "ratio")
}

// viewerMsg is one line between the benchmark and the viewers' process:
// a join or leave request one way, "video" (first keyframe received),
// "left" or an error the other.
type viewerMsg struct {
	ID    int    `json:"id"`
	URL   string `json:"url,omitempty"`
	Token string `json:"token,omitempty"`
	Talk  bool   `json:"talk,omitempty"` // publish a tone
	Leave bool   `json:"leave,omitempty"`
	Video bool   `json:"video,omitempty"`
	Left  bool   `json:"left,omitempty"`
	Error string `json:"error,omitempty"`
}

type viewersProc struct {
	in   *json.Encoder
	out  *json.Decoder
	next int
}

func startViewers(b *testing.B) *viewersProc {
	b.Helper()
	in, out := reexec.Start(b, "viewers", viewersEnv+"=1")
	return &viewersProc{in: in, out: out}
}

// add joins one more viewer, waits until it has decoded-ready video and
// returns its number.
func (vp *viewersProc) add(b *testing.B, srv *lkserver.Server, talk bool) int {
	b.Helper()
	id := vp.next
	vp.next++
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
	return id
}

// leave disconnects viewer id and waits until it has.
func (vp *viewersProc) leave(b *testing.B, id int) {
	b.Helper()
	if err := vp.in.Encode(viewerMsg{ID: id, Leave: true}); err != nil {
		b.Fatal(err)
	}
	var m viewerMsg
	if err := vp.out.Decode(&m); err != nil || !m.Left || m.ID != id {
		b.Fatalf("viewer %d leaving: %+v %v", id, m, err)
	}
}

// serveViewers joins a viewer for every join request read from in, each
// subscribing to everything and publishing a tone if asked to, and
// disconnects one for every leave request, until in closes.
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
	rooms := map[int]*lksdk.Room{}
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
		if m.Leave {
			room := rooms[m.ID]
			if room == nil {
				return fmt.Errorf("no viewer %d", m.ID)
			}
			delete(rooms, m.ID)
			room.Disconnect()
			if err := enc.Encode(viewerMsg{ID: m.ID, Left: true}); err != nil {
				return err
			}
			continue
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
		rooms[m.ID] = room
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
