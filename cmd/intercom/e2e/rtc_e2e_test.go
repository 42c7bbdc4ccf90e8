package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/dendrite"
	"github.com/doorbell/intercom/internal/testenv/livekit"
	"github.com/doorbell/intercom/internal/testenv/lkjwt"
	"github.com/doorbell/intercom/internal/testenv/resident"
)

// rtcSystem is an end-to-end system with MatrixRTC on: a real
// livekit-server and the JWT service stand-in beside Dendrite. alice
// answers through MatrixRTC (as Element X would), bob through a classic
// call (as Element Web does).
type rtcSystem struct {
	*e2e
	sfu *livekit.Server
	svc string // JWT service URL
}

// startRTCSystem starts it. selfMinted makes the intercom mint its own
// LiveKit tokens from the server's key pair instead of asking the service
// (residents still get theirs from the service, as with a homeserver that
// runs one).
func startRTCSystem(t testing.TB, selfMinted bool, extra string) *rtcSystem {
	t.Helper()
	return startRTCSystemFor(t, selfMinted, func(*dendrite.Server) string { return extra })
}

// startRTCSystemFor is startRTCSystem with YAML made once the homeserver
// runs (after the intercom's account and the residents are registered).
func startRTCSystemFor(t testing.TB, selfMinted bool, extraFor func(hs *dendrite.Server) string) *rtcSystem {
	t.Helper()
	return startRTCSystemOpts(t, rtcOptions{SelfMinted: selfMinted, ExtraFor: extraFor})
}

// startRTCSystemWith is startRTCSystemFor with residents' paths
// (systemOptions.ResidentPaths).
func startRTCSystemWith(t testing.TB, selfMinted bool, extraFor func(hs *dendrite.Server) string, paths map[string]string) *rtcSystem {
	t.Helper()
	return startRTCSystemOpts(t, rtcOptions{SelfMinted: selfMinted, ExtraFor: extraFor, Paths: paths})
}

// rtcOptions are startRTCSystemOpts's.
type rtcOptions struct {
	SelfMinted bool
	// Encrypted: matrix.encryption on, the residents with crypto, the
	// direct rooms encrypted.
	Encrypted bool
	ExtraFor  func(hs *dendrite.Server) string
	// Paths are the residents' paths (systemOptions.ResidentPaths).
	Paths map[string]string
	// RingTimeout is ring.timeout (systemOptions.RingTimeout).
	RingTimeout time.Duration
	// Env is added to the intercom's environment (systemOptions.Env).
	Env []string
	// Bursts: the residents' pages measure mouth-to-ear
	// (resident.Options.Bursts).
	Bursts bool
}

func startRTCSystemOpts(t testing.TB, o rtcOptions) *rtcSystem {
	t.Helper()
	selfMinted, extraFor := o.SelfMinted, o.ExtraFor
	if extraFor == nil {
		extraFor = func(*dendrite.Server) string { return "" }
	}
	sfu := startSFU(t)
	rs := &rtcSystem{sfu: sfu}
	opts := systemOptions{
		Homeserver: dendrite.Options{OpenIDUserInfo: true},
		ConfigFor: func(hs *dendrite.Server, dir string) string {
			rs.svc = lkjwt.Start(t, lkjwt.Options{Homeserver: hs.BaseURL, LiveKitURL: sfu.URL, APIKey: sfu.APIKey, APISecret: sfu.APISecret})
			cfg := fmt.Sprintf("matrixrtc:\n  enabled: true\n  livekit_service_url: %s\n", rs.svc)
			if selfMinted {
				for name, v := range map[string]string{"lk-key": sfu.APIKey, "lk-secret": sfu.APISecret} {
					if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				cfg += fmt.Sprintf("  livekit:\n    url: %s\n    api_key_file: ./lk-key\n    api_secret_file: ./lk-secret\n", sfu.URL)
			}
			return cfg + extraFor(hs)
		},
	}
	// The SFU's candidates are on the veth address: the residents' pages
	// must accept more than loopback (everything stays in the namespace).
	opts.Resident.AnyInterface = true
	opts.Resident.Bursts = o.Bursts
	opts.Encrypted = o.Encrypted
	opts.ResidentPaths = o.Paths
	opts.RingTimeout = o.RingTimeout
	opts.Env = o.Env
	rs.e2e = startSystemWith(t, opts, "alice", "bob")
	return rs
}

// startSFU skips the test under -short or without a non-loopback address
// for pion, and starts a livekit-server. pion (inside livekit-server and
// the intercom's LiveKit client) gathers no loopback candidates: the SFU
// uses the namespace's veth address when TestMain made one.
func startSFU(t testing.TB) *livekit.Server {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: needs Dendrite, livekit-server and Chromium")
	}
	livekit.SkipWithoutClientAddress(t)
	return livekit.StartT(t, livekit.Options{NodeIP: sfuNodeIP()})
}

// sfuNodeIP is the address a livekit-server in these tests announces.
func sfuNodeIP() string {
	if ip := os.Getenv(livekit.VethIPEnv); ip != "" {
		return ip
	}
	return "127.0.0.1"
}

// waitEvent waits for an event called name, at or after since, that
// match accepts (whatever WaitFor has consumed).
func waitEvent(ctx context.Context, t testing.TB, r *resident.Resident, name string, since time.Time, match func(resident.Event) bool) resident.Event {
	t.Helper()
	for {
		for _, ev := range r.Events() {
			if ev.Name == name && !ev.TS.Before(since) && match(ev) {
				return ev
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: no %s event: %v", r.UserID(), name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestMatrixRTCAnswer: a press rings alice through MatrixRTC and bob
// through a classic call at once; alice joins the call, sees the test
// pattern and hears the tone through the SFU, the intercom hears her, and
// bob's classic call stops; when she leaves, the intercom leaves too and
// clears its membership.
func TestMatrixRTCAnswer(t *testing.T) {
	s := startRTCSystem(t, false, "")
	alice, bob := s.residents[0], s.residents[1]
	room := roomOf(t, alice)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	pressed := s.press()
	ring := waitEvent(ctx, t, alice, resident.EventRTCRing, pressed, func(ev resident.Event) bool { return ev.Str("roomId") == room })
	if ring.Fields["mentionsMe"] != true || ring.Str("notificationType") != "ring" || ring.Fields["sdkValid"] != true {
		t.Fatalf("alice's ring %s: want a ring that mentions her and that matrix-js-sdk accepts", ring)
	}
	t.Logf("press → MatrixRTC ring at alice: %v", ring.TS.Sub(pressed))
	if _, err := bob.WaitFor(ctx, resident.EventIncoming); err != nil {
		t.Fatal(err)
	}
	s.waitStatus(ctx, "ringing", func(st status) bool { return st.State == "ringing" && st.Ringer.Ringing })

	// Alice answers by joining; the service URL comes from the intercom's
	// membership (foci_preferred), as Element Call finds it.
	if _, err := alice.RTCJoin(ctx, room, ""); err != nil {
		t.Fatal(err)
	}
	ff := waitEvent(ctx, t, alice, resident.EventRTCFirstFrame, pressed, func(resident.Event) bool { return true })
	t.Logf("alice joins → first decoded frame: %.0f ms (%vx%v)", ff.Num("ms"), ff.Fields["width"], ff.Fields["height"])
	if _, err := bob.WaitFor(ctx, resident.EventHangup); err != nil {
		t.Fatalf("bob's classic call still rings after alice answered: %v", err)
	}
	st := s.waitStatus(ctx, "in a MatrixRTC call", func(st status) bool {
		for _, c := range st.Calls {
			if strings.HasPrefix(c.CallID, "matrixrtc:") && c.State == "connected" && c.Resident == alice.UserID() {
				return st.State == "in_call" && !st.Ringer.Ringing
			}
		}
		return false
	})
	t.Logf("status: %+v", st.Calls)

	// Picture and sound both ways.
	rs := s.waitMediaBothWays(t, alice)
	t.Logf("alice: %d frames %dx%d %s, audio energy %.3g; intercom hears her", rs.FramesDecoded, rs.FrameWidth, rs.FrameHeight, rs.VideoCodec, rs.TotalAudioEnergy)
	if st, err := s.status(); err == nil {
		ra := st.Media.ReceivedAudio
		// livekit-server 1.13.5 does not offer subscribers the RFC 6464
		// extension, so through the SFU every packet is decoded; this
		// shows it if a server starts to.
		t.Logf("through the SFU: %d packets, %d not decoded by their level", ra.Packets, ra.Skipped)
	}

	// Alice leaves: the intercom leaves and clears its membership.
	left := time.Now()
	if err := alice.RTCLeave(ctx, room); err != nil {
		t.Fatal(err)
	}
	s.waitStatus(ctx, "idle after alice left", func(st status) bool { return st.State == "idle" })
	s.waitLeft(ctx, t, alice, room, left)
}

// TestMatrixRTCHousehold: with matrixrtc.household and no group call, the
// intercom creates the household room, invites the residents and rings its
// call too; alice answering there takes the ring from every other path.
func TestMatrixRTCHousehold(t *testing.T) {
	s := startRTCSystem(t, false, "  household: true\nhousehold:\n  room: \"#home:localhost\"\n")
	alice, bob := s.residents[0], s.residents[1]
	dm := roomOf(t, alice)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	// The household room is made at start; alice joins it on invite.
	home := waitEvent(ctx, t, alice, resident.EventJoined, time.Time{}, func(ev resident.Event) bool { return ev.Str("roomId") != dm }).Str("roomId")
	// Alice may join before the intercom's createRoom returned: press only
	// once the intercom rings that room.
	s.waitStatus(ctx, "household room known to MatrixRTC", func(st status) bool {
		var m struct {
			RTC struct {
				Rooms []string `json:"household_rooms"`
			} `json:"matrixrtc"`
		}
		_ = json.Unmarshal(st.Matrix, &m)
		return slices.Contains(m.RTC.Rooms, home)
	})

	pressed := s.press()
	ring := waitEvent(ctx, t, alice, resident.EventRTCRing, pressed, func(ev resident.Event) bool { return ev.Str("roomId") == home })
	if ring.Fields["mentionsMe"] != true || ring.Fields["sdkValid"] != true {
		t.Fatalf("household ring %s: want one that mentions the room and that matrix-js-sdk accepts", ring)
	}
	waitEvent(ctx, t, alice, resident.EventRTCRing, pressed, func(ev resident.Event) bool { return ev.Str("roomId") == dm })
	if _, err := alice.RTCJoin(ctx, home, ""); err != nil {
		t.Fatal(err)
	}
	waitEvent(ctx, t, alice, resident.EventRTCFirstFrame, pressed, func(resident.Event) bool { return true })
	if _, err := bob.WaitFor(ctx, resident.EventHangup); err != nil {
		t.Fatalf("bob's classic call still rings: %v", err)
	}
	st := s.waitStatus(ctx, "answered in the household room", func(st status) bool {
		n := 0
		for _, c := range st.Calls {
			if strings.HasPrefix(c.CallID, "matrixrtc:") {
				n++
			}
		}
		return st.State == "in_call" && n == 1
	})
	for _, c := range st.Calls {
		if strings.HasPrefix(c.CallID, "matrixrtc:") && (c.Room != home || c.State != "connected") {
			t.Fatalf("MatrixRTC legs %+v: want only the household room's, connected", st.Calls)
		}
	}
}

// TestMatrixRTCDeclineSelfMinted: with self-minted LiveKit tokens, a
// decline from alice makes the intercom leave her room's call, while bob
// is still rung both ways.
func TestMatrixRTCDeclineSelfMinted(t *testing.T) {
	s := startRTCSystem(t, true, "")
	alice, bob := s.residents[0], s.residents[1]
	room := roomOf(t, alice)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	pressed := s.press()
	ring := waitEvent(ctx, t, alice, resident.EventRTCRing, pressed, func(ev resident.Event) bool { return ev.Str("roomId") == room })
	if _, err := bob.WaitFor(ctx, resident.EventIncoming); err != nil {
		t.Fatal(err)
	}
	// The intercom is at the SFU before anyone answers (a self-minted
	// token for the room lk-jwt-service names).
	s.waitStatus(ctx, "at the SFU", func(st status) bool {
		var m struct {
			RTC struct {
				Rooms []struct {
					Room string `json:"room_id"`
					SFU  bool   `json:"sfu_connected"`
				} `json:"rooms"`
			} `json:"matrixrtc"`
		}
		_ = json.Unmarshal(st.Matrix, &m)
		for _, r := range m.RTC.Rooms {
			if r.Room == room && r.SFU {
				return true
			}
		}
		return false
	})
	declined := time.Now()
	if err := alice.RTCDecline(ctx, room, ring.Str("eventId")); err != nil {
		t.Fatal(err)
	}
	s.waitLeft(ctx, t, alice, room, declined)
	st := s.waitStatus(ctx, "bob still ringing", func(st status) bool { return st.State == "ringing" })
	bobRTC := false
	for _, c := range st.Calls {
		if c.CallID == "matrixrtc:"+room {
			t.Fatalf("alice's MatrixRTC call not left after her decline: %+v", st.Calls)
		}
		bobRTC = bobRTC || strings.HasPrefix(c.CallID, "matrixrtc:")
	}
	if !bobRTC {
		t.Fatalf("bob's MatrixRTC ring stopped by alice's decline: %+v", st.Calls)
	}
	t.Log("declined; bob's classic call and MatrixRTC ring go on")
}

// heardAudio reports whether the intercom has received non-silent audio
// from a resident (status media.received_audio).
// waitMediaBothWays waits (30 s at most) until r decodes the door's
// video and audio through the SFU and the intercom hears r, and returns
// r's stats then.
func (s *rtcSystem) waitMediaBothWays(t testing.TB, r *resident.Resident) resident.RTCStats {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rs := r.LastRTCStats()
		heard := s.heardAudio()
		if rs.FramesDecoded > 30 && rs.TotalAudioEnergy > 0 && heard {
			return rs
		}
		if time.Now().After(deadline) {
			t.Fatalf("media incomplete: %s %+v, intercom hears them: %v", r.UserID(), rs, heard)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *rtcSystem) heardAudio() bool {
	st, err := s.status()
	return err == nil && st.Media.ReceivedAudio.Packets > 50 && st.Media.ReceivedAudio.Level > -60 // dBov
}

// BenchmarkMatrixRTC measures issue 7's and issue 18's latencies over
// rounds of a real system: press → the MatrixRTC ring accepted by the
// homeserver (its origin_server_ts; Dendrite runs on this machine's
// clock), press → alice's client receives the ring, and alice joins → her
// first decoded frame through the SFU (the page's own clock from the join
// command; the token, LiveKit connection and subscription are inside it).
func BenchmarkMatrixRTC(b *testing.B) { benchMatrixRTC(b, nil) }

// BenchmarkMatrixRTCPaths is BenchmarkMatrixRTC with each resident rung
// one way, as issue 18 lets an installer ask: alice (Element X) only
// through MatrixRTC, bob only with a classic call. No invite shares
// alice's room with the membership and the ring.
func BenchmarkMatrixRTCPaths(b *testing.B) {
	benchMatrixRTC(b, map[string]string{"alice": "[matrixrtc]", "bob": "[classic]"})
}

func benchMatrixRTC(b *testing.B, paths map[string]string) {
	s := startRTCSystemWith(b, false, func(*dendrite.Server) string { return "" }, paths)
	alice, bob := s.residents[0], s.residents[1]
	room := roomOf(b, alice)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var atServer, ring, frame, invite []time.Duration
	var rounds []ringRound
	b.ResetTimer()
	for range b.N {
		s.waitStatus(ctx, "idle", func(st status) bool { return st.State == "idle" })
		pressed := s.press()
		ev := waitEvent(ctx, b, alice, resident.EventRTCRing, pressed, func(ev resident.Event) bool { return ev.Str("roomId") == room })
		ring = append(ring, ev.TS.Sub(pressed))
		atServer = append(atServer, time.UnixMilli(int64(ev.Num("serverTs"))).Sub(pressed))
		rounds = append(rounds, ringRound{Pressed: pressed, Room: room, EventID: ev.Str("eventId"), ServerTS: time.UnixMilli(int64(ev.Num("serverTs")))})
		inc, err := bob.WaitFor(ctx, resident.EventIncoming)
		if err != nil {
			b.Fatal(err)
		}
		invite = append(invite, inc.TS.Sub(pressed))
		joined := time.Now()
		if _, err := alice.RTCJoin(ctx, room, ""); err != nil {
			b.Fatal(err)
		}
		ff := waitEvent(ctx, b, alice, resident.EventRTCFirstFrame, joined, func(resident.Event) bool { return true })
		frame = append(frame, time.Duration(ff.Num("ms")*float64(time.Millisecond)))
		if _, err := bob.WaitFor(ctx, resident.EventHangup); err != nil {
			b.Fatal(err)
		}
		if err := alice.RTCLeave(ctx, room); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(ms(median(atServer)), "press-to-ring-at-homeserver-ms")
	b.ReportMetric(ms(median(ring)), "press-to-ring-ms")
	b.ReportMetric(ms(median(frame)), "join-to-frame-ms")
	b.ReportMetric(ms(median(invite)), "press-to-bob-invite-ms")
	reportRingSteps(b, collectRingSteps(rounds, s.log.String()))
	b.ReportMetric(0, "ns/op")
	// Printed as well as logged: the residents' console fills the
	// benchmark's log, which the testing package truncates.
	line := fmt.Sprintf("rounds %d: press → ring's origin_server_ts %v; press → ring at alice %v; join → first frame %v; press → bob's classic call %v", b.N, atServer, ring, frame, invite)
	b.Log(line)
	fmt.Println(b.Name(), line)
}

// TestClassicAnswerStopsMatrixRTC: bob answering the classic call takes
// the ring, so the intercom leaves the MatrixRTC calls it rang (alice
// sees its membership cleared) and stays in bob's call.
func TestClassicAnswerStopsMatrixRTC(t *testing.T) {
	s := startRTCSystem(t, false, "")
	alice, bob := s.residents[0], s.residents[1]
	room := roomOf(t, alice)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	pressed := s.press()
	waitEvent(ctx, t, alice, resident.EventRTCRing, pressed, func(ev resident.Event) bool { return ev.Str("roomId") == room })
	if _, err := bob.WaitFor(ctx, resident.EventIncoming); err != nil {
		t.Fatal(err)
	}
	answered := time.Now()
	if err := bob.Answer(); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.WaitFor(ctx, resident.EventFirstFrame); err != nil {
		t.Fatal(err)
	}
	s.waitLeft(ctx, t, alice, room, answered)
	st := s.waitStatus(ctx, "in bob's call only", func(st status) bool {
		for _, c := range st.Calls {
			if strings.HasPrefix(c.CallID, "matrixrtc:") {
				return false
			}
		}
		return st.State == "in_call"
	})
	t.Logf("calls after bob answered: %+v", st.Calls)
}

// waitLeft waits until r sees the intercom clear its membership in room
// (leave the call) at or after since.
func (s *rtcSystem) waitLeft(ctx context.Context, t testing.TB, r *resident.Resident, room string, since time.Time) {
	t.Helper()
	waitEvent(ctx, t, r, resident.EventRTCMembership, since, func(ev resident.Event) bool {
		c, _ := ev.Fields["content"].(map[string]any)
		return ev.Str("roomId") == room && ev.Str("sender") == s.bot.UserID && len(c) == 0
	})
}
