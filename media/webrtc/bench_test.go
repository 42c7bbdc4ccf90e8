package webrtc

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/codec"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
)

// residentsEnv, when set in the environment, makes the test binary a
// process of residents for BenchmarkFanout (see TestMain).
const residentsEnv = "INTERCOM_BENCH_RESIDENTS"

func TestMain(m *testing.M) {
	if mode := os.Getenv(residentsEnv); mode != "" {
		if err := serveResidents(os.Stdin, os.Stdout, mode == "silent"); err != nil {
			fmt.Fprintln(os.Stderr, "residents:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFanout measures, per second of 640x480@15 H.264 video, the time
// spent encoding (enc-ms/s) with 1 and 4 connected peers, and the door
// process's CPU (door-ms/s): encoding, pion packetising, encrypting and
// sending to every peer, and receiving each resident's Opus. The residents
// run in a child process (this test binary re-executed with
// INTERCOM_BENCH_RESIDENTS=1), so their decryption and depacketising is
// not counted as the door's. One op is one second of video.
//
// "pattern" encodes the bare test pattern, flat and nearly still, which
// costs the encoder a fraction of what a camera's picture does and so
// makes every per-peer cost look large; "camera" adds sensor-like noise
// (noisyPattern) so the shared encoder works as it would on a real scene.
// In "talking" every resident sends a tone and writes its level into each
// packet as browsers do (RFC 6464), so the door decodes the MaxVoices
// loudest (decoded/s); in "silent" the residents send nothing, which
// isolates what the door's sending costs per peer.
func BenchmarkFanout(b *testing.B) {
	for _, picture := range []string{"pattern", "camera"} {
		for _, mode := range []string{"talking", "silent"} {
			for _, peers := range []int{1, 4} {
				b.Run(fmt.Sprintf("%s/%s/peers=%d", picture, mode, peers), func(b *testing.B) {
					benchFanout(b, peers, mode == "silent", picture == "camera")
				})
			}
		}
	}
}

func benchFanout(b *testing.B, peers int, silent, camera bool) {
	var cfg media.StreamConfig
	if camera {
		cfg.OpenVideo = openNoisyPattern
	}
	e := newEnvWith(b, cfg)
	rs := startResidents(b, silent)
	for i := 0; i < peers; i++ {
		rs.call(b, e)
	}
	time.Sleep(500 * time.Millisecond)
	s0, c0, a0, t0 := encStats(e.stream, media.H264), cpuTime(), e.factory.ReceivedAudio(), time.Now()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		time.Sleep(time.Second)
	}
	b.StopTimer()
	s1, c1, a1, el := encStats(e.stream, media.H264), cpuTime(), e.factory.ReceivedAudio(), time.Since(t0)
	sec := el.Seconds()
	b.ReportMetric(float64((s1.EncodeTime-s0.EncodeTime).Microseconds())/1000/sec, "enc-ms/s")
	b.ReportMetric(float64((c1-c0).Microseconds())/1000/sec, "door-ms/s")
	b.ReportMetric(float64(s1.Frames-s0.Frames)/sec, "frames/s")
	decoded := (a1.Packets - a0.Packets) - (a1.Skipped - a0.Skipped)
	b.ReportMetric(float64(decoded)/sec, "decoded/s")
	b.ReportMetric(0, "ns/op")
}

// noisyPattern is the test pattern with sensor-like noise: ±4 luma levels,
// a fresh field each frame drawn from 8 prepared ones (as media/codec's
// noisy benchmarks). A camera's picture is never still, so its encoder
// works on every macroblock; the bare pattern is flat and nearly static,
// which makes the encoder, the cost peers share, unrealistically cheap.
type noisyPattern struct {
	*media.TestPattern
	noise [8][]int8
}

func openNoisyPattern(f media.VideoFormat) (media.VideoSource, error) {
	p, err := media.NewTestPattern(f)
	if err != nil {
		return nil, err
	}
	n := &noisyPattern{TestPattern: p}
	seed := uint32(1)
	for i := range n.noise {
		n.noise[i] = make([]int8, f.Width*f.Height)
		for j := range n.noise[i] {
			seed = seed*1664525 + 1013904223
			n.noise[i][j] = int8(seed>>24)%9 - 4
		}
	}
	return n, nil
}

func (n *noisyPattern) ReadFrame(ctx context.Context) (*media.Frame, error) {
	f, err := n.TestPattern.ReadFrame(ctx)
	if err != nil {
		return nil, err
	}
	y := f.Image.Y
	for j, v := range n.noise[f.Seq%uint64(len(n.noise))] {
		y[j] = byte(int(y[j]) + int(v))
	}
	return f, nil
}

// residentMsg is one line between the door (benchmark) and the residents'
// process: an offer one way, an answer and "video" (first keyframe
// decoded) the other.
type residentMsg struct {
	Peer   int    `json:"peer"`
	Offer  string `json:"offer,omitempty"`
	Answer string `json:"answer,omitempty"`
	Video  bool   `json:"video,omitempty"`
	Error  string `json:"error,omitempty"`
}

type residentsProc struct {
	cmd  *exec.Cmd
	in   *json.Encoder
	out  *json.Decoder
	next int
}

func startResidents(b *testing.B, silent bool) *residentsProc {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	mode := "1"
	if silent {
		mode = "silent"
	}
	cmd.Env = append(os.Environ(), residentsEnv+"="+mode)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close() // the residents hang up and exit
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				b.Errorf("residents: %v", err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			b.Error("residents did not exit")
		}
	})
	return &residentsProc{cmd: cmd, in: json.NewEncoder(stdin), out: json.NewDecoder(bufio.NewReader(stdout))}
}

// call connects a new door peer to a new resident in the child process,
// without trickle: both SDPs carry their gathered candidates.
func (rp *residentsProc) call(b *testing.B, e *env) {
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
}

// serveResidents answers offers read from in, one resident (a pion peer
// connection sending a tone, reading and depacketising the video) each,
// until in closes. Silent residents send no audio.
func serveResidents(in io.Reader, out io.Writer, silent bool) error {
	// The default tone peaks at -12 dBFS, so its power is -15 dBov: the
	// level a browser would write into each packet of it.
	api, err := newLoopbackAPI([]media.Codec{media.H264, media.VP8}, func() uint8 { return 15 })
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
	var pcs []*webrtc.PeerConnection
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
		pc, err := api.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			return err
		}
		pcs = append(pcs, pc)
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
		if !silent {
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
