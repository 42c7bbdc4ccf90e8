package webrtc

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/internal/testenv/cputime"
	"github.com/doorbell/intercom/internal/testenv/reexec"
	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/codec"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
)

// residentsEnv, when set in the environment, makes the test binary a
// process of residents for BenchmarkFanout (see TestMain).
const residentsEnv = "INTERCOM_BENCH_RESIDENTS"

func TestMain(m *testing.M) {
	reexec.Serve("residents", residentsEnv, serveResidents)
	os.Exit(m.Run())
}

// BenchmarkFanout measures what viewers cost the door, per second of
// 640x480@15 H.264 video: the door process's CPU (door-ms/s: encoding,
// pion packetising, encrypting and sending to every peer, receiving and
// decoding the residents' Opus) and the encoder's share of it (enc-ms/s),
// with 1 and with 4 connected peers, and their ratio. The residents run
// in a child process (this test binary re-executed with
// INTERCOM_BENCH_RESIDENTS=1), so their decryption and depacketising is
// not counted as the door's.
//
// This machine's CPU time wanders by ±15 % over tens of seconds (a shared
// VM), more than the difference being measured, so one op is one round
// that measures both, close together: three more residents call, 2 s are
// measured with 4 peers, they hang up, 2 s are measured with 1. Reported
// are the medians over the rounds, of each and of the per-round ratio.
//
// "pattern" encodes the bare test pattern, flat and nearly still, which
// costs the encoder a fraction of what a camera's picture does and so
// makes every per-peer cost look large; "camera" adds sensor-like noise
// (media.NoisyTestPattern) so the shared encoder works as it would on
// a real scene.
// In "talking" all four residents talk at once, the worst case: each sends
// a tone and writes its level into each packet as browsers do (RFC 6464),
// and the door decodes the MaxVoices loudest (decoded4/s). "listening" is
// the usual case: the first resident talks, the three others listen with
// their microphones muted, sending packets whose level says silence. In
// "silent" the residents send nothing, which isolates what the door's
// sending costs per peer.
func BenchmarkFanout(b *testing.B) {
	for _, picture := range []string{"pattern", "camera"} {
		for _, mode := range []string{"talking", "listening", "silent"} {
			b.Run(picture+"/"+mode, func(b *testing.B) { benchFanout(b, mode, picture == "camera") })
		}
	}
}

func benchFanout(b *testing.B, mode string, camera bool) {
	var cfg media.StreamConfig
	if camera {
		cfg.OpenVideo = media.OpenNoisyTestPattern
	}
	e := newEnvWith(b, cfg)
	rs := startResidents(b, mode)
	rs.call(b, e) // the one who stays
	var extra []residentCall
	r := cputime.Paired{
		Settle:     time.Second,
		Span:       2 * time.Second,
		ProfileDir: os.Getenv(cputime.ProfileEnv),
		PerfDir:    os.Getenv(cputime.PerfEnv),
		PerfEvent:  os.Getenv(cputime.PerfEventEnv),
		Load: func() {
			for range 3 {
				extra = append(extra, rs.call(b, e))
			}
		},
		Unload: func() {
			for _, c := range extra {
				rs.hangup(b, c)
			}
			extra = extra[:0]
		},
		Counters: map[string]func() float64{
			"enc":    func() float64 { return float64(encStats(e.stream, media.H264).EncodeTime.Microseconds()) / 1000 },
			"frames": func() float64 { return float64(encStats(e.stream, media.H264).Frames) },
			"decoded": func() float64 {
				a := e.factory.ReceivedAudio()
				return float64(a.Packets - a.Skipped)
			},
		},
	}.Run(b)
	r.Report(b, "door1-ms/s", "door4-ms/s", "ratio4:1")
	b.ReportMetric(cputime.Rate(r.Unloaded, "enc"), "enc1-ms/s")
	b.ReportMetric(cputime.Rate(r.Loaded, "enc"), "enc4-ms/s")
	b.ReportMetric(cputime.Rate(r.Loaded, "frames"), "frames4/s")
	b.ReportMetric(cputime.Rate(r.Loaded, "decoded"), "decoded4/s")
}

// residentMsg is one line between the door (benchmark) and the residents'
// process: an offer or a hangup one way, an answer and "video" (first
// keyframe decoded) the other.
type residentMsg struct {
	Peer   int    `json:"peer"`
	Hangup bool   `json:"hangup,omitempty"`
	Offer  string `json:"offer,omitempty"`
	Answer string `json:"answer,omitempty"`
	Video  bool   `json:"video,omitempty"`
	Error  string `json:"error,omitempty"`
}

type residentsProc struct {
	in   *json.Encoder
	out  *json.Decoder
	next int
}

func startResidents(b *testing.B, mode string) *residentsProc {
	b.Helper()
	in, out := reexec.Start(b, "residents", residentsEnv+"="+mode)
	return &residentsProc{in: in, out: out}
}

// residentCall is one connected pair: the door's peer and the resident's
// number in the child process.
type residentCall struct {
	peer callengine.Peer
	id   int
}

// hangup ends a call on both sides.
func (rp *residentsProc) hangup(b *testing.B, c residentCall) {
	b.Helper()
	if err := c.peer.Close(); err != nil {
		b.Fatal(err)
	}
	if err := rp.in.Encode(residentMsg{Peer: c.id, Hangup: true}); err != nil {
		b.Fatal(err)
	}
}

// call connects a new door peer to a new resident in the child process,
// without trickle: both SDPs carry their gathered candidates.
func (rp *residentsProc) call(b *testing.B, e *env) residentCall {
	b.Helper()
	gathered := make(chan struct{})
	var once atomic.Bool
	cp, err := e.factory.NewPeer(context.Background(), func(ev callengine.PeerEvent) {
		if ev.Candidate != nil && ev.Candidate.Candidate == "" && once.CompareAndSwap(false, true) {
			close(gathered)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cp.Close() })
	select {
	case <-gathered:
	case <-time.After(5 * time.Second):
		b.Fatal("door gathering")
	}
	id := rp.next
	rp.next++
	if err := rp.in.Encode(residentMsg{Peer: id, Offer: cp.Offer()}); err != nil {
		b.Fatal(err)
	}
	var m residentMsg
	if err := rp.out.Decode(&m); err != nil || m.Answer == "" {
		b.Fatalf("answer from residents: %+v %v", m, err)
	}
	if err := cp.SetAnswer(m.Answer); err != nil {
		b.Fatal(err)
	}
	if err := rp.out.Decode(&m); err != nil || !m.Video {
		b.Fatalf("video at resident %d: %+v %v", id, m, err)
	}
	return residentCall{peer: cp, id: id}
}

// serveResidents answers offers read from in, one resident (a pion peer
// connection sending a tone, reading and depacketising the video) each,
// until in closes. The mode is BenchmarkFanout's: in "talking" every
// resident's packets carry the tone's level, in "listening" only the
// first resident's do and the others' say silence (a muted microphone),
// in "silent" nobody sends audio.
func serveResidents(mode string, in io.Reader, out io.Writer) error {
	// The default tone peaks at -12 dBFS, so its power is -15 dBov: the
	// level a browser would write into each packet of it.
	talking, err := newLoopbackAPI([]media.Codec{media.H264, media.VP8}, func() uint8 { return 15 })
	if err != nil {
		return err
	}
	muted, err := newLoopbackAPI([]media.Codec{media.H264, media.VP8}, func() uint8 { return 127 })
	if err != nil {
		return err
	}
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
	msgs := make(chan residentMsg, 4)
	dec := json.NewDecoder(in)
	pcs := map[int]*webrtc.PeerConnection{}
	defer func() {
		for _, pc := range pcs {
			pc.Close()
		}
	}()
	for {
		var m residentMsg
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if m.Hangup {
			if pc := pcs[m.Peer]; pc != nil {
				pc.Close()
				delete(pcs, m.Peer)
			}
			continue
		}
		api := talking
		if mode == "listening" && m.Peer > 0 {
			api = muted
		}
		pc, err := api.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			return err
		}
		pcs[m.Peer] = pc
		id := m.Peer
		var videoOnce atomic.Bool
		pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
			go func() {
				var h264 codecs.H264Packet
				for {
					pkt, _, err := tr.ReadRTP()
					if err != nil {
						return
					}
					if tr.Kind() != webrtc.RTPCodecTypeVideo || !strings.EqualFold(tr.Codec().MimeType, webrtc.MimeTypeH264) {
						continue
					}
					if au, err := h264.Unmarshal(pkt.Payload); err == nil && media.IsKeyFrame(media.H264, au) && videoOnce.CompareAndSwap(false, true) {
						msgs <- residentMsg{Peer: id, Video: true}
					}
				}
			}()
		})
		if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: m.Offer}); err != nil {
			return err
		}
		if mode != "silent" {
			if _, err := pc.AddTrack(tone.Track(media.Opus)); err != nil {
				return err
			}
		}
		answer, err := pc.CreateAnswer(nil)
		if err != nil {
			return err
		}
		gathered := webrtc.GatheringCompletePromise(pc)
		if err := pc.SetLocalDescription(answer); err != nil {
			return err
		}
		<-gathered
		if err := enc.Encode(residentMsg{Peer: id, Answer: pc.LocalDescription().SDP}); err != nil {
			return err
		}
		select {
		case v := <-msgs:
			if err := enc.Encode(v); err != nil {
				return err
			}
		case <-time.After(10 * time.Second):
			return fmt.Errorf("resident %d: no keyframe", id)
		}
	}
}
