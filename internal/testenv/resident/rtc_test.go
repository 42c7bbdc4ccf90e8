package resident_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/dendrite"
	"github.com/doorbell/intercom/internal/testenv/livekit"
	"github.com/doorbell/intercom/internal/testenv/lkjwt"
	"github.com/doorbell/intercom/internal/testenv/resident"
)

// TestMatrixRTCCall proves the MatrixRTC mode before the intercom uses it:
// on a real Dendrite, a real livekit-server and the lkjwt token service,
// alice joins the room's call and rings; bob rings, sees her membership,
// joins through the SFU she names, decodes her fake camera and hears her
// microphone (and she him); bob declines the ring, which alice sees; both
// leave.
func TestMatrixRTCCall(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Dendrite, livekit-server, node and Chromium")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	hs := dendrite.StartTWith(t, dendrite.Options{OpenIDUserInfo: true})
	sfu := livekit.StartT(t, livekit.Options{NodeIP: "127.0.0.1"})
	svc := lkjwt.Start(t, lkjwt.Options{Homeserver: hs.BaseURL, LiveKitURL: sfu.URL, APIKey: sfu.APIKey, APISecret: sfu.APISecret})

	aliceUser, err := hs.Register(ctx, "alice", "alice-password")
	if err != nil {
		t.Fatal(err)
	}
	bobUser, err := hs.Register(ctx, "bob", "bob-password")
	if err != nil {
		t.Fatal(err)
	}
	// Everyone may send call.member state, as Element sets it for call
	// rooms (the default state_default 50 would stop bob).
	var room struct {
		RoomID string `json:"room_id"`
	}
	clientAPI(ctx, t, hs.BaseURL, aliceUser.AccessToken, "/createRoom", map[string]any{
		"preset": "private_chat", "is_direct": true, "invite": []string{bobUser.UserID},
		"power_level_content_override": map[string]any{"events": map[string]int{
			"org.matrix.msc3401.call.member": 0,
		}},
	}, &room)
	clientAPI(ctx, t, hs.BaseURL, bobUser.AccessToken, "/join/"+url.PathEscape(room.RoomID), map[string]any{}, nil)

	// Password logins: each page gets its own device.
	rs := startAll(ctx, t,
		resident.Options{Homeserver: hs.BaseURL, UserID: aliceUser.UserID, Password: aliceUser.Password, Log: prefixed(t, "alice")},
		resident.Options{Homeserver: hs.BaseURL, UserID: bobUser.UserID, Password: bobUser.Password, Log: prefixed(t, "bob")},
	)
	alice, bob := rs[0], rs[1]

	// Alice starts the call and rings.
	aj, err := alice.RTCJoinWith(ctx, resident.RTCJoinOptions{RoomID: room.RoomID, ServiceURL: svc, Notify: "ring"})
	if err != nil {
		t.Fatal(err)
	}
	wantIdentity := alice.UserID() + ":" + alice.DeviceID()
	if aj.Str("identity") != wantIdentity || aj.Str("livekitRoom") != lkjwt.RoomAlias(room.RoomID, lkjwt.SlotRoom) {
		t.Errorf("alice joined as %q in LiveKit room %q, want %q in %q", aj.Str("identity"), aj.Str("livekitRoom"),
			wantIdentity, lkjwt.RoomAlias(room.RoomID, lkjwt.SlotRoom))
	}
	t.Logf("alice joined: %v", aj.Fields["timings"])

	ring := waitMatch(ctx, t, bob, resident.EventRTCRing, func(ev resident.Event) bool { return ev.Str("roomId") == room.RoomID })
	rel, _ := ring.Fields["relatesTo"].(map[string]any)
	if ring.Str("sender") != alice.UserID() || ring.Str("notificationType") != "ring" || ring.Fields["mentionsMe"] != true ||
		ring.Num("lifetime") <= 0 || rel["rel_type"] != "m.reference" || rel["event_id"] != aj.Str("membershipEventId") {
		t.Errorf("bob's ring %s: want a ring from %s mentioning him, referencing %s", ring, alice.UserID(), aj.Str("membershipEventId"))
	}
	t.Logf("bob rings %v after the notification's origin_server_ts; matrix-js-sdk's own check: valid=%v %s",
		ring.TS.Sub(time.UnixMilli(int64(ring.Num("serverTs")))), ring.Fields["sdkValid"], ring.Str("sdkReason"))

	// Bob sees her membership, as the raw state event and as js-sdk's session.
	stateKey := "_" + alice.UserID() + "_" + alice.DeviceID() + "_m.call"
	m := waitMatch(ctx, t, bob, resident.EventRTCMembership, func(ev resident.Event) bool { return ev.Str("stateKey") == stateKey })
	content, _ := m.Fields["content"].(map[string]any)
	foci, _ := content["foci_preferred"].([]any)
	if content["application"] != "m.call" || content["device_id"] != alice.DeviceID() || len(foci) == 0 ||
		foci[0].(map[string]any)["livekit_service_url"] != svc || foci[0].(map[string]any)["livekit_alias"] != room.RoomID {
		t.Errorf("alice's membership %s", m)
	}
	waitMatch(ctx, t, bob, resident.EventRTCSession, func(ev resident.Event) bool {
		ms, _ := ev.Fields["memberships"].([]any)
		for _, x := range ms {
			if mm, _ := x.(map[string]any); mm["sender"] == alice.UserID() && mm["serviceUrl"] == svc {
				return true
			}
		}
		return false
	})

	// Bob joins through the service alice's membership names.
	bj, err := bob.RTCJoin(ctx, room.RoomID, "")
	if err != nil {
		t.Fatal(err)
	}
	if bj.Str("serviceUrl") != svc || bj.Str("livekitRoom") != aj.Str("livekitRoom") {
		t.Errorf("bob joined %s, want alice's service %s and LiveKit room %s", bj, svc, aj.Str("livekitRoom"))
	}
	frame := waitMatch(ctx, t, bob, resident.EventRTCFirstFrame, func(resident.Event) bool { return true })
	t.Logf("bob: rtcJoin -> first decoded frame of %s %.0fx%.0f in %.0f ms (%s); join timings %v",
		frame.Str("participant"), frame.Num("width"), frame.Num("height"), frame.Num("ms"), frame.Str("via"), bj.Fields["timings"])
	if frame.Str("participant") != wantIdentity {
		t.Errorf("bob's first frame from %q, want %q", frame.Str("participant"), wantIdentity)
	}
	for _, side := range []struct {
		name string
		r    *resident.Resident
	}{{"bob", bob}, {"alice", alice}} {
		first := waitRTCStats(ctx, t, side.r, func(s resident.RTCStats) bool {
			return s.FramesDecoded > 0 && s.FrameWidth > 0 && s.TotalAudioEnergy > 0 && s.AudioBytesSent > 0
		})
		// Audio energy keeps growing: the far end's tone plays.
		s := waitRTCStats(ctx, t, side.r, func(s resident.RTCStats) bool {
			return s.TotalAudioEnergy > first.TotalAudioEnergy+1e-4 && s.FramesDecoded > first.FramesDecoded+10 && s.AudioBytesSent > first.AudioBytesSent
		})
		t.Logf("%s: %dx%d %s, %d frames at %.0f fps; %s energy %.4g over %d packets; sending audio %d B, video %d B; subscriber ICE %s <-> %s",
			side.name, s.FrameWidth, s.FrameHeight, s.VideoCodec, s.FramesDecoded, s.FramesPerSecond, s.AudioCodec,
			s.TotalAudioEnergy, s.AudioPacketsReceived, s.AudioBytesSent, s.VideoBytesSent, s.LocalAddress, s.RemoteAddress)
		if !isLoopback(s.LocalAddress) && !isLoopback(s.RemoteAddress) {
			t.Errorf("%s: ICE pair %s <-> %s has no loopback end", side.name, s.LocalAddress, s.RemoteAddress)
		}
	}

	// Bob declines the ring (a second device of his would, say); alice sees it.
	if err := bob.RTCDecline(ctx, room.RoomID, ring.Str("eventId")); err != nil {
		t.Fatal(err)
	}
	dec := waitMatch(ctx, t, alice, resident.EventRTCDeclined, func(ev resident.Event) bool { return ev.Str("roomId") == room.RoomID })
	if rel, _ := dec.Fields["relatesTo"].(map[string]any); dec.Str("sender") != bob.UserID() || rel["event_id"] != ring.Str("eventId") || rel["rel_type"] != "m.reference" {
		t.Errorf("alice saw decline %s, want bob's referencing %s", dec, ring.Str("eventId"))
	}

	// Bob leaves: his membership becomes {} and he leaves the SFU room.
	if err := bob.RTCLeave(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	bobKey := "_" + bob.UserID() + "_" + bob.DeviceID() + "_m.call"
	waitMatch(ctx, t, alice, resident.EventRTCMembership, func(ev resident.Event) bool {
		c, _ := ev.Fields["content"].(map[string]any)
		return ev.Str("stateKey") == bobKey && len(c) == 0
	})
	waitMatch(ctx, t, alice, resident.EventRTCParticipant, func(ev resident.Event) bool {
		return ev.Str("identity") == bob.UserID()+":"+bob.DeviceID() && ev.Fields["joined"] == false
	})
	if err := alice.RTCLeave(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}

	// In a room with the default power levels (state_default 50) bob may
	// not send call.member state: the join fails at once, saying why.
	var plain struct {
		RoomID string `json:"room_id"`
	}
	clientAPI(ctx, t, hs.BaseURL, aliceUser.AccessToken, "/createRoom", map[string]any{
		"preset": "private_chat", "is_direct": true, "invite": []string{bobUser.UserID},
	}, &plain)
	clientAPI(ctx, t, hs.BaseURL, bobUser.AccessToken, "/join/"+url.PathEscape(plain.RoomID), map[string]any{}, nil)
	t0 := time.Now()
	if _, err := bob.RTCJoin(ctx, plain.RoomID, svc); err == nil || !strings.Contains(err.Error(), "M_FORBIDDEN") {
		t.Errorf("bob joined a call where he may not send call.member: %v", err)
	} else {
		t.Logf("join refused after %v: %v", time.Since(t0).Round(time.Millisecond), err)
	}
	if err := alice.RTCLeave(ctx, room.RoomID); err == nil || !strings.Contains(err.Error(), "not in the call") {
		t.Errorf("second leave: %v", err)
	}
}

// waitMatch waits for the next event called name that ok accepts.
func waitMatch(ctx context.Context, t *testing.T, r *resident.Resident, name string, ok func(resident.Event) bool) resident.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		ev, err := r.WaitFor(ctx, name)
		if err != nil {
			t.Fatalf("%s: %v", r.UserID(), err)
		}
		if ok(ev) {
			return ev
		}
	}
}

// waitRTCStats waits until the resident's latest RTC stats satisfy ok.
func waitRTCStats(ctx context.Context, t *testing.T, r *resident.Resident, ok func(resident.RTCStats) bool) resident.RTCStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		s := r.LastRTCStats()
		if ok(s) {
			return s
		}
		if _, err := r.WaitFor(ctx, resident.EventRTCStats); err != nil {
			t.Fatalf("%s: last RTC stats %+v: %v", r.UserID(), s, err)
		}
	}
}
