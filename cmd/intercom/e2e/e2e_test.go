package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/dendrite"
	"github.com/doorbell/intercom/internal/testenv/resident"
)

// e2e is one running system: a real Dendrite, the intercom binary as a
// process, and residents in headless Chromium.
type e2e struct {
	t         testing.TB
	hs        *dendrite.Server
	bot       dendrite.User // the intercom's account
	bin       string        // the intercom binary
	dir       string        // config, password file and state directory
	cfgPath   string
	api       string
	cmd       *exec.Cmd
	log       *lockedBuffer
	residents []*resident.Resident
	// exited is closed when the running intercom process has exited
	// (launch's waiter); nil before the first launch.
	exited chan struct{}
	// encrypted is matrix.encryption; off by default here, so that the
	// tests of the unencrypted paths keep them (residents without crypto
	// cannot read an encrypted DM). The encryption tests turn it on.
	encrypted bool
	// paths are residents' entries in the mapping form (user ID →
	// their paths as a YAML list); the others are plain user IDs.
	paths map[string]string
	// env is added to the intercom's environment (systemOptions.Env).
	env []string
	// iceOnVeth launches the intercom without INTERCOM_ICE_LOOPBACK: its
	// peer connections gather on the namespace's veth pair, which a test
	// can take down (setVeth), instead of 127.0.0.1.
	iceOnVeth bool
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// intercomPkg is the command under test. go test runs this package in its
// own directory, which is inside the module, so go build finds it by its
// import path.
const intercomPkg = "github.com/doorbell/intercom/cmd/intercom"

// buildIntercom builds the daemon once per test binary.
var buildIntercom = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "intercom-e2e-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "intercom")
	out, err := exec.Command("go", "build", "-o", bin, intercomPkg).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// runIntercom runs the built intercom binary with args, as an installer
// would from a shell, and returns its exit code; the process's stdout and
// stderr go to the writers.
func runIntercom(t testing.TB, args []string, stdout, stderr io.Writer) int {
	t.Helper()
	bin, err := buildIntercom()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), bin, args...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.Exited() {
		return exit.ExitCode()
	}
	if err != nil {
		t.Fatalf("intercom %s: %v", strings.Join(args, " "), err)
	}
	return 0
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startSystem starts Dendrite, registers the intercom and the residents,
// starts the residents (listening before any invite) and the intercom, and
// waits until every resident has joined their direct room. Residents log
// in with a password so each has its own device: js-sdk uses the device ID
// as party_id and drops events from its own party.
func startSystem(t testing.TB, residents ...string) *e2e {
	t.Helper()
	return startSystemWith(t, systemOptions{}, residents...)
}

// stop ends the intercom with SIGTERM, as systemd does, and waits.
func (e *e2e) stop() {
	if e.cmd == nil || e.cmd.Process == nil || e.exited == nil || e.hasExited() {
		return
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(10 * time.Second):
		e.t.Errorf("intercom did not stop within 10 s of SIGTERM")
		_ = e.cmd.Process.Kill()
		<-e.exited
	}
}

// hasExited reports whether the launched intercom process has exited.
func (e *e2e) hasExited() bool {
	if e.exited == nil {
		return false
	}
	select {
	case <-e.exited:
		return true
	default:
		return false
	}
}

// status is the part of /api/status the tests read.
type status struct {
	State   string       `json:"state"`
	Healthy bool         `json:"healthy"`
	Calls   []callStatus `json:"calls"`
	Ringer  struct {
		Ringing bool `json:"ringing"`
	} `json:"ringer"`
	Process struct {
		RSS          int64  `json:"rss_bytes"`
		HeapInUse    uint64 `json:"heap_in_use"`
		HeapReleased uint64 `json:"heap_released"`
		GoMapped     uint64 `json:"go_mapped_bytes"`
		Goroutines   int    `json:"goroutines"`
	} `json:"process"`
	Matrix json.RawMessage `json:"matrix"`
	Media  struct {
		Encoders      []encoderStatus `json:"encoders"`
		ReceivedAudio struct {
			Packets uint64  `json:"packets"`
			Bytes   uint64  `json:"bytes"`
			Skipped uint64  `json:"skipped"`
			Level   float64 `json:"level_dbov"`
		} `json:"received_audio"`
	} `json:"media"`
}

type callStatus struct {
	Direction string `json:"direction"`
	CallID    string `json:"call_id"`
	Room      string `json:"room"`
	Resident  string `json:"resident"`
	State     string `json:"state"`
	Reason    string `json:"reason"`
}

type encoderStatus struct {
	Codec           string `json:"codec"`
	Running         bool   `json:"running"`
	Starts          int    `json:"starts"`
	TargetBitrate   int    `json:"target_bitrate"`
	EstimateReports uint64 `json:"estimate_reports"`
	// Counters of the encoder (media.EncoderStats), for timelines.
	Frames           uint64 `json:"frames"`
	KeyFrames        uint64 `json:"key_frames"`
	KeyFrameRequests uint64 `json:"key_frame_requests"`
	ForcedKeyFrames  uint64 `json:"forced_key_frames"`
	Bytes            uint64 `json:"bytes"`
}

func (e *e2e) status() (status, error) {
	var s status
	resp, err := http.Get("http://" + e.api + "/api/status")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

func (e *e2e) waitStatus(ctx context.Context, what string, cond func(status) bool) status {
	e.t.Helper()
	var last status
	for {
		s, err := e.status()
		if err == nil && cond(s) {
			return s
		}
		if err == nil {
			last = s
		}
		if e.hasExited() {
			e.t.Fatalf("intercom exited while waiting for %s:\n%s", what, lastLines(e.log.String(), 30))
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("waiting for %s: %v; last status %+v", what, ctx.Err(), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// press rings through the API as a script on the board would, and returns
// when it did. The API allows a client a few rings at once, then one per
// 10 s (device.DefaultRingBurst, DefaultRingEvery): the benchmarks, which
// ring round after round, wait out its Retry-After as a client should.
func (e *e2e) press() time.Time {
	e.t.Helper()
	for {
		t0 := time.Now()
		resp, err := http.Post("http://"+e.api+"/api/ring", "", nil)
		if err != nil {
			e.t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			wait, err := strconv.Atoi(resp.Header.Get("Retry-After"))
			if err != nil || wait < 1 || wait > 60 {
				e.t.Fatalf("ring: HTTP 429 with Retry-After %q", resp.Header.Get("Retry-After"))
			}
			time.Sleep(time.Duration(wait) * time.Second)
			continue
		}
		if resp.StatusCode != http.StatusAccepted {
			e.t.Fatalf("ring: HTTP %d", resp.StatusCode)
		}
		return t0
	}
}

// TestEndToEnd: a press rings alice and bob; alice answers and sees the
// test pattern and hears the tone; the intercom hears alice; bob stops
// ringing; alice hangs up and everything is idle again.
func TestEndToEnd(t *testing.T) {
	e := startSystem(t, "alice", "bob")
	alice, bob := e.residents[0], e.residents[1]
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	pressed := e.press()
	inA, err := alice.WaitFor(ctx, "incoming")
	if err != nil {
		t.Fatal(err)
	}
	inB, err := bob.WaitFor(ctx, "incoming")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("press → incoming: alice %v, bob %v", inA.TS.Sub(pressed), inB.TS.Sub(pressed))
	if inA.Fields["video"] != true {
		t.Errorf("alice's call is not a video call: %v", inA.Fields)
	}
	s := e.waitStatus(ctx, "ringing", func(s status) bool { return s.State == "ringing" && s.Ringer.Ringing })
	if len(s.Calls) != 2 {
		t.Fatalf("calls %+v", s.Calls)
	}

	// Answer with the page's own button, as a person would.
	if err := alice.Click("#answer"); err != nil {
		t.Fatal(err)
	}
	answered, err := alice.WaitFor(ctx, "answered")
	if err != nil {
		t.Fatal(err)
	}
	frame, err := alice.WaitFor(ctx, "first_frame")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("answer → first frame: %v (%vx%v via %v)", frame.TS.Sub(answered.TS), frame.Fields["width"], frame.Fields["height"], frame.Fields["via"])
	if frame.Num("width") != 640 || frame.Num("height") != 480 {
		t.Errorf("first frame %vx%v, want the test pattern's 640x480", frame.Fields["width"], frame.Fields["height"])
	}
	// The second resident stops ringing as soon as the first answers.
	hb, err := bob.WaitFor(ctx, "hangup")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bob's ringing ended %v after alice answered (reason %v)", hb.TS.Sub(answered.TS), hb.Fields["reason"])

	s = e.waitStatus(ctx, "in call, hearing alice", func(s status) bool {
		return s.State == "in_call" && !s.Ringer.Ringing && s.Media.ReceivedAudio.Packets > 50 && s.Media.ReceivedAudio.Level > -100
	})
	ra := s.Media.ReceivedAudio
	t.Logf("intercom heard alice: %d packets (%d not decoded), %d bytes, level %.1f dBov", ra.Packets, ra.Skipped, ra.Bytes, ra.Level)
	for deadline := time.Now().Add(30 * time.Second); ; {
		st := alice.LastStats()
		if st.TotalAudioEnergy > 1e-4 && st.FramesDecoded > 15 {
			t.Logf("alice: %d frames decoded (%s), audio energy %.3g", st.FramesDecoded, st.VideoCodec, st.TotalAudioEnergy)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice never decoded video and audio: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	running := 0
	for _, enc := range s.Media.Encoders {
		if enc.Running {
			running++
		}
	}
	// Chromium's bandwidth estimate reaches the shared encoder (REMB).
	s = e.waitStatus(ctx, "a bandwidth estimate from the resident", func(s status) bool {
		return slices.ContainsFunc(s.Media.Encoders, func(enc encoderStatus) bool {
			return enc.Codec == "video/H264" && enc.EstimateReports > 0
		})
	})
	for _, enc := range s.Media.Encoders {
		if enc.Codec == "video/H264" {
			t.Logf("bandwidth estimates from alice: %d, encoder target %d b/s", enc.EstimateReports, enc.TargetBitrate)
		}
	}
	if running != 2 {
		t.Errorf("running encoders %+v, want one video and one audio", s.Media.Encoders)
	}
	e.checkInCallSeries(t) // metrics_e2e_test.go

	// Alice mutes. Chromium goes on sending, silence, and writes each
	// packet's level into it (RFC 6464): the intercom stops decoding her.
	if err := alice.Mute(ctx, true); err != nil {
		t.Fatal(err)
	}
	before := s.Media.ReceivedAudio
	s = e.waitStatus(ctx, "alice's silence not decoded", func(s status) bool {
		ra := s.Media.ReceivedAudio
		return ra.Skipped-before.Skipped > 50 && ra.Level < -100
	})
	ra = s.Media.ReceivedAudio
	t.Logf("alice muted: %d of %d packets since not decoded, level %.1f dBov", ra.Skipped-before.Skipped, ra.Packets-before.Packets, ra.Level)

	if err := alice.Hangup(); err != nil {
		t.Fatal(err)
	}
	s = e.waitStatus(ctx, "idle after hangup", func(s status) bool { return s.State == "idle" })
	for _, c := range s.Calls {
		if c.State != "ended" {
			t.Errorf("call %+v not ended", c)
		}
	}
	s = e.waitStatus(ctx, "encoders stopped", func(s status) bool {
		return !slices.ContainsFunc(s.Media.Encoders, func(enc encoderStatus) bool { return enc.Running })
	})
	t.Logf("idle RSS after a call: %.1f MB", float64(s.Process.RSS)/1e6)
	e.checkClassicCallCounted(t, alice.UserID()) // metrics_e2e_test.go
}

// TestRejectTimeoutAndShutdown: one resident rejects, the other lets it
// ring out; the intercom goes idle, and a press then SIGTERM hangs up.
func TestRejectTimeoutAndShutdown(t *testing.T) {
	e := startSystem(t, "carol", "dave")
	carol, dave := e.residents[0], e.residents[1]
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	e.press()
	for _, r := range e.residents {
		if _, err := r.WaitFor(ctx, "incoming"); err != nil {
			t.Fatal(err)
		}
	}
	if err := carol.Reject(); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(ctx, "carol's call ended", func(s status) bool {
		return s.State == "ringing" && slices.ContainsFunc(s.Calls, func(c callStatus) bool {
			return c.Resident == carol.UserID() && c.State == "ended"
		})
	})
	// dave lets it ring out: 30 s ring timeout, invite_timeout.
	h, err := dave.WaitFor(ctx, "hangup")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dave's ringing ended: %v", h.Fields)
	s := e.waitStatus(ctx, "idle after timeout", func(s status) bool { return s.State == "idle" })
	for _, c := range s.Calls {
		if c.Resident == dave.UserID() && c.Reason != "invite_timeout" {
			t.Errorf("dave's call ended with %q", c.Reason)
		}
	}

	e.press()
	if _, err := carol.WaitFor(ctx, "incoming"); err != nil {
		t.Fatal(err)
	}
	e.stop()
	if h, err := carol.WaitFor(ctx, "hangup"); err != nil {
		t.Fatalf("stopping the intercom left carol ringing: %v", err)
	} else {
		t.Logf("carol's ringing ended on shutdown: %v", h.Fields)
	}
}
