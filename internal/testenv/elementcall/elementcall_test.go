package elementcall

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/dendrite"
	"github.com/doorbell/intercom/internal/testenv/livekit"
	"github.com/doorbell/intercom/internal/testenv/lkjwt"
	"github.com/doorbell/intercom/internal/testenv/nodeproc"
)

func TestMediaReady(t *testing.T) {
	ff, err := nodeproc.ParseEvent([]byte(`{"event":"frameFirst","ts":300,"trackTs":100,"connectedTs":200}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := MediaReady(ff); got.UnixMilli() != 200 {
		t.Errorf("MediaReady = %v, want the later of track and connection (200 ms)", got.UnixMilli())
	}
	ring, err := nodeproc.ParseEvent([]byte(`{"event":"ring","ts":1724312345678,"roomId":"!r:hs","live":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := MediaReady(ring); !got.IsZero() {
		t.Errorf("MediaReady of a ring = %v, want zero", got)
	}
}

// TestEncryptedPair proves the host's end-to-end encryption plumbing
// without the door: two Element Call hosts (dave and erin, rust crypto on
// both) in an encrypted DM on a real Dendrite, livekit-server and the JWT
// stand-in. Dave's Element Call starts the call and rings (start_call_dm);
// erin's host sees the Megolm-encrypted ring and opens Element Call with
// join_existing_dm; the two Element Calls exchange their media keys as
// Olm-encrypted to-device messages through the hosts
// (io.element.call.encryption_keys), subscribe to each other's tracks with
// LiveKit frame encryption on, and decode each other's video and audio.
func TestEncryptedPair(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Dendrite, livekit-server, node and Chromium")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	hs := dendrite.StartTWith(t, dendrite.Options{OpenIDUserInfo: true})
	sfu := livekit.StartT(t, livekit.Options{NodeIP: "127.0.0.1"})
	svc := lkjwt.Start(t, lkjwt.Options{Homeserver: hs.BaseURL, LiveKitURL: sfu.URL, APIKey: sfu.APIKey, APISecret: sfu.APISecret})

	// Both hosts start at once: each is a Chromium and a rust crypto to
	// initialise, seconds each on a loaded 2-core machine.
	names := []string{"dave", "erin"}
	hosts := make([]*Host, len(names))
	errs := make(chan error, len(names))
	for i, name := range names {
		u, err := hs.Register(ctx, name, name+"-password")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			h, err := Start(ctx, Options{
				Homeserver: hs.BaseURL, UserID: u.UserID, Password: name + "-password", ServiceURL: svc,
				AutoJoin: true, Encryption: true, Log: prefixed(t, name),
			})
			hosts[i] = h
			errs <- err
		}()
	}
	for range names {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for _, h := range hosts {
		if h != nil {
			t.Cleanup(func() {
				if err := h.Close(); err != nil {
					t.Errorf("close element call host: %v", err)
				}
			})
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	dave, erin := hosts[0], hosts[1]
	room, err := dave.CreateRoom(ctx, CreateRoomOptions{Invite: []string{erin.UserID()}, Encrypted: true, Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := erin.WaitMatch(ctx, EventJoined, time.Time{}, func(ev Event) bool { return ev.Str("roomId") == room }); err != nil {
		t.Fatal(err)
	}
	// Dave's sync must show erin joined before his Element Call starts, or
	// it would share its media key with nobody (Element Call re-shares on
	// membership changes, but a ring needs a member to mention).
	if _, err := dave.WaitMatch(ctx, EventRoomMember, time.Time{}, func(ev Event) bool {
		return ev.Str("roomId") == room && ev.Str("userId") == erin.UserID() && ev.Str("membership") == "join"
	}); err != nil {
		t.Fatal(err)
	}

	daveOpened, err := dave.Join(ctx, room, "start_call_dm")
	if err != nil {
		t.Fatal(err)
	}
	if !daveOpened.Bool("encrypted") {
		t.Fatalf("dave's Element Call opened without perParticipantE2EE in an encrypted room: %s", daveOpened)
	}
	ring, err := erin.WaitRing(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if ring.Str("sender") != dave.UserID() || !ring.Bool("encrypted") || ring.Str("notificationType") != "ring" {
		t.Fatalf("erin's ring %s: want dave's encrypted ring", ring)
	}
	t.Logf("dave's Element Call opened → erin's host sees its ring %v", ring.TS.Sub(daveOpened.TS))
	erinOpened, err := erin.Join(ctx, room, IntentJoinExistingDM)
	if err != nil {
		t.Fatal(err)
	}

	for _, h := range hosts {
		ff, err := h.WaitFirstFrame(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st, err := h.WaitStats(ctx, func(s Stats) bool { return s.FramesDecoded > 30 && s.TotalAudioEnergy > 0 })
		if err != nil {
			t.Fatal(err)
		}
		// Both directions went through LiveKit frame encryption, with keys
		// that travelled Olm-encrypted through the hosts.
		for _, kind := range []string{"audio", "video"} {
			sub, err := h.WaitMatch(ctx, EventECSubscribed, time.Time{}, func(ev Event) bool { return ev.Str("kind") == kind })
			if err != nil {
				t.Fatal(err)
			}
			if !sub.Bool("encrypted") {
				t.Errorf("%s's Element Call subscribed to an unencrypted %s track: %s", h.UserID(), kind, sub)
			}
		}
		keys, err := h.WaitMatch(ctx, EventToDeviceSent, time.Time{}, func(ev Event) bool {
			return ev.Str("type") == "io.element.call.encryption_keys"
		})
		if err != nil {
			t.Fatal(err)
		}
		if !keys.Bool("encrypted") {
			t.Errorf("%s's Element Call sent its media keys in the clear: %s", h.UserID(), keys)
		}
		t.Logf("%s: first frame %vx%v %s; %d frames, audio energy %.3g", h.UserID(), ff.Fields["width"], ff.Fields["height"],
			ff.Str("codec"), st.FramesDecoded, st.TotalAudioEnergy)
	}
	erinFrame, err := erin.WaitMatch(ctx, EventFirstFrame, erinOpened.TS, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("erin's Element Call opened → first decoded frame %v (encrypted)", erinFrame.TS.Sub(erinOpened.TS))

	// Erin hangs up; dave's Element Call (autoLeaveWhenOthersLeft in a DM)
	// leaves by itself and closes.
	if err := erin.Hangup(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := dave.WaitMatch(ctx, EventWidgetClosed, daveOpened.TS, nil); err != nil {
		t.Fatalf("dave's Element Call stayed after erin left: %v", err)
	}
}

// prefixed sends whole lines to t.Log with a name in front.
func prefixed(t testing.TB, name string) io.Writer {
	return nodeproc.TestLog(t, name+": ")
}
