package resident_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/dendrite"
	"github.com/doorbell/intercom/internal/testenv/nodeproc"
	"github.com/doorbell/intercom/internal/testenv/resident"
)

// TestCallBetweenTwoResidents proves the harness before the intercom is
// plugged in: two residents on a real Dendrite, alice calls bob, bob answers,
// both decode the other's fake camera and microphone, alice hangs up.
func TestCallBetweenTwoResidents(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Dendrite, node and Chromium")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	hs := dendrite.StartT(t)
	aliceUser, err := hs.Register(ctx, "alice", "alice-password")
	if err != nil {
		t.Fatal(err)
	}
	bobUser, err := hs.Register(ctx, "bob", "bob-password")
	if err != nil {
		t.Fatal(err)
	}

	// A direct room with exactly two members, as the intercom creates per
	// resident (Matrix spec, Client-Server API: POST /createRoom, /join).
	var room struct {
		RoomID string `json:"room_id"`
	}
	clientAPI(ctx, t, hs.BaseURL, aliceUser.AccessToken, "/createRoom", map[string]any{
		"preset": "private_chat", "is_direct": true, "invite": []string{bobUser.UserID},
	}, &room)
	clientAPI(ctx, t, hs.BaseURL, bobUser.AccessToken, "/join/"+url.PathEscape(room.RoomID), map[string]any{}, nil)

	// Start both in parallel: each is a Chromium. Alice logs in with an
	// access token, bob with his password, so both paths are exercised.
	rs := startAll(ctx, t,
		resident.Options{Homeserver: hs.BaseURL, AccessToken: aliceUser.AccessToken, Log: prefixed(t, "alice")},
		resident.Options{Homeserver: hs.BaseURL, UserID: bobUser.UserID, Password: bobUser.Password, Log: prefixed(t, "bob")},
	)
	alice, bob := rs[0], rs[1]
	if alice.UserID() != aliceUser.UserID || bob.UserID() != bobUser.UserID {
		t.Fatalf("logged in as %q and %q, want %q and %q", alice.UserID(), bob.UserID(), aliceUser.UserID, bobUser.UserID)
	}

	if caps, err := bob.VideoCapabilities(ctx); err != nil {
		t.Error(err)
	} else {
		t.Logf("Chromium receives video codecs: %s", strings.Join(caps, ", "))
	}

	if err := alice.PlaceCall(room.RoomID); err != nil {
		t.Fatal(err)
	}
	placing := waitFor(ctx, t, alice, resident.EventPlacing)
	incoming := waitFor(ctx, t, bob, resident.EventIncoming)
	if incoming.CallID() != placing.CallID() || incoming.Str("roomId") != room.RoomID || incoming.Str("sender") != aliceUser.UserID {
		t.Fatalf("bob rings for %s, want call %s in %s from %s", incoming, placing.CallID(), room.RoomID, aliceUser.UserID)
	}

	if err := bob.Answer(); err != nil {
		t.Fatal(err)
	}
	answered := waitFor(ctx, t, bob, resident.EventAnswered)
	for _, side := range []struct {
		name       string
		self, peer *resident.Resident
	}{{"alice", alice, bob}, {"bob", bob, alice}} {
		connected := waitFor(ctx, t, side.self, resident.EventConnected)
		frame := waitFor(ctx, t, side.self, resident.EventFirstFrame)
		camera := waitFor(ctx, t, side.peer, resident.EventLocalMedia)
		w, h := int(frame.Num("width")), int(frame.Num("height"))
		if w <= 0 || h <= 0 {
			t.Errorf("%s: first frame %dx%d", side.name, w, h)
		}
		// WebRTC may start below the capture size while it probes the
		// bandwidth; on loopback it reaches the fake camera's size quickly.
		want := fmt.Sprintf("%dx%d", int(camera.Num("width")), int(camera.Num("height")))
		s := waitStats(ctx, t, side.self, func(s resident.Stats) bool {
			return s.TotalAudioEnergy > 1e-4 && fmt.Sprintf("%dx%d", s.FrameWidth, s.FrameHeight) == want
		})
		t.Logf("%s: connected %v after answer, first frame %dx%d %v after answer (%s); then %dx%d %s, %d frames, audio %s energy %.4g over %d packets, ICE %s <-> %s",
			side.name, connected.TS.Sub(answered.TS), w, h, frame.TS.Sub(answered.TS), frame.Str("via"),
			s.FrameWidth, s.FrameHeight, s.VideoCodec, s.FramesDecoded, s.AudioCodec, s.TotalAudioEnergy, s.AudioPacketsReceived,
			s.LocalAddress, s.RemoteAddress)
		// The pages signal loopback candidates only, so one end of the
		// selected pair is a loopback address. Chromium may still send from
		// another local address of this host to it (seen as peer-reflexive on
		// the other side); such packets stay inside the host too.
		if !isLoopback(s.LocalAddress) && !isLoopback(s.RemoteAddress) {
			t.Errorf("%s: ICE pair %s <-> %s has no loopback end", side.name, s.LocalAddress, s.RemoteAddress)
		}
	}
	t.Logf("latency: invite (origin_server_ts) -> bob rings %v (sync delivered it after %v); placeCall -> bob rings %v",
		incoming.TS.Sub(time.UnixMilli(int64(incoming.Num("inviteTs")))),
		time.UnixMilli(int64(incoming.Num("syncedTs"))).Sub(time.UnixMilli(int64(incoming.Num("inviteTs")))),
		incoming.TS.Sub(placing.TS))

	if err := alice.Hangup(); err != nil {
		t.Fatal(err)
	}
	for _, side := range []struct {
		name  string
		r     *resident.Resident
		party string
	}{{"alice", alice, "local"}, {"bob", bob, "remote"}} {
		ev := waitFor(ctx, t, side.r, resident.EventHangup)
		if ev.CallID() != placing.CallID() || ev.Str("party") != side.party || ev.Str("reason") != "user_hangup" {
			t.Errorf("%s: %s, want call %s hung up by party %s with reason user_hangup", side.name, ev, placing.CallID(), side.party)
		}
	}
	if err := bob.Hangup(); err == nil {
		t.Error("bob hung up an ended call without error")
	}
}

// TestRejectAndAutoAnswer checks that a rejected call ends on both sides,
// then that AutoAnswer answers a call the other way round.
func TestRejectAndAutoAnswer(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Dendrite, node and Chromium")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	hs := dendrite.StartT(t)
	carol, err := hs.Register(ctx, "carol", "carol-password")
	if err != nil {
		t.Fatal(err)
	}
	dave, err := hs.Register(ctx, "dave", "dave-password")
	if err != nil {
		t.Fatal(err)
	}
	var room struct {
		RoomID string `json:"room_id"`
	}
	clientAPI(ctx, t, hs.BaseURL, carol.AccessToken, "/createRoom", map[string]any{
		"preset": "private_chat", "is_direct": true, "invite": []string{dave.UserID},
	}, &room)

	// Dave has not joined yet: AutoJoin takes the invite. Both log in with
	// their passwords: the access tokens of shared-secret registration share
	// one device ID, which js-sdk uses as party_id, and js-sdk ignores call
	// events that carry its own party_id.
	rs := startAll(ctx, t,
		resident.Options{Homeserver: hs.BaseURL, UserID: carol.UserID, Password: carol.Password, AutoAnswer: true, Log: prefixed(t, "carol")},
		resident.Options{Homeserver: hs.BaseURL, UserID: dave.UserID, Password: dave.Password, AutoJoin: true, Log: prefixed(t, "dave")},
	)
	caller, callee := rs[0], rs[1]
	if ev := waitFor(ctx, t, callee, resident.EventJoined); ev.Str("roomId") != room.RoomID {
		t.Fatalf("dave joined %s, want %s", ev.Str("roomId"), room.RoomID)
	}
	if err := caller.PlaceCall(room.RoomID); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, callee, resident.EventIncoming)
	if err := callee.Reject(); err != nil {
		t.Fatal(err)
	}
	// js-sdk reports a reject as a hangup with reason user_hangup, by the
	// local party on the callee and the remote party on the caller.
	for _, side := range []struct {
		r     *resident.Resident
		party string
	}{{caller, "remote"}, {callee, "local"}} {
		ev := waitFor(ctx, t, side.r, resident.EventHangup)
		if ev.Str("party") != side.party {
			t.Errorf("%s: %s, want party %s", side.r.UserID(), ev, side.party)
		}
	}
	if err := callee.Answer(); err == nil {
		t.Error("answered a rejected call without error")
	}

	// Now dave calls carol, who answers by herself.
	if err := callee.PlaceCall(room.RoomID); err != nil {
		t.Fatal(err)
	}
	placing := waitFor(ctx, t, callee, resident.EventPlacing)
	for _, r := range []*resident.Resident{caller, callee} {
		if ev := waitFor(ctx, t, r, resident.EventConnected); ev.CallID() != placing.CallID() {
			t.Fatalf("%s: connected %s, want call %s", r.UserID(), ev, placing.CallID())
		}
	}
	answered := waitFor(ctx, t, caller, resident.EventAnswered)
	frame := waitFor(ctx, t, callee, resident.EventFirstFrame)
	t.Logf("auto-answer -> dave's first frame %v", frame.TS.Sub(answered.TS))
	if err := caller.Hangup(); err != nil {
		t.Fatal(err)
	}
	if ev := waitFor(ctx, t, callee, resident.EventHangup); ev.CallID() != placing.CallID() || ev.Str("party") != "remote" {
		t.Errorf("dave: %s, want the remote party to end call %s", ev, placing.CallID())
	}
}

// TestStartFailsFast checks that a login failure ends Start with the page's
// error instead of a timeout.
func TestStartFailsFast(t *testing.T) {
	if testing.Short() {
		t.Skip("needs node and Chromium")
	}
	// A listener that answers nothing Matrix-like: every request is a 404.
	hs := httptest.NewServer(http.NotFoundHandler())
	defer hs.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	start := time.Now()
	r, err := resident.Start(ctx, resident.Options{Homeserver: hs.URL, UserID: "nobody", Password: "password1", Log: prefixed(t, "nobody")})
	if err == nil {
		r.Close()
		t.Fatal("Start succeeded against a homeserver that does not exist")
	}
	t.Logf("Start failed after %v: %v", time.Since(start), err)
}

// TestHandler checks that the demo can serve the built page under a prefix.
func TestHandler(t *testing.T) {
	if testing.Short() {
		t.Skip("needs node and npm")
	}
	dir, err := resident.Setup(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/resident/", http.StripPrefix("/resident", resident.Handler(dir)))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for path, want := range map[string]string{"/resident/": "./resident.js", "/resident/resident.js": "matrix"} {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		_, _ = body.ReadFrom(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || !strings.Contains(body.String(), want) {
			t.Errorf("GET %s: %s, want 200 with %q", path, res.Status, want)
		}
	}
	// The rust crypto's wasm, where its loader looks for it, of the type
	// WebAssembly.instantiateStreaming insists on.
	res, err := http.Head(srv.URL + "/resident/pkg/matrix_sdk_crypto_wasm_bg.wasm")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/wasm" {
		t.Errorf("HEAD the crypto wasm: %s, Content-Type %q; want 200 application/wasm", res.Status, res.Header.Get("Content-Type"))
	}
}

func isLoopback(addr string) bool {
	return strings.HasPrefix(addr, "127.") || strings.HasPrefix(addr, "::1:")
}

// startAll starts residents in parallel (each is a Chromium) and closes them
// in t.Cleanup.
func startAll(ctx context.Context, t *testing.T, opts ...resident.Options) []*resident.Resident {
	t.Helper()
	rs := make([]*resident.Resident, len(opts))
	errs := make([]error, len(opts))
	var wg sync.WaitGroup
	for i, o := range opts {
		wg.Go(func() { rs[i], errs[i] = resident.Start(ctx, o) })
	}
	wg.Wait()
	for _, r := range rs {
		if r != nil {
			t.Cleanup(func() {
				if err := r.Close(); err != nil {
					t.Errorf("close resident %s: %v", r.UserID(), err)
				}
			})
		}
	}
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return rs
}

func waitFor(ctx context.Context, t *testing.T, r *resident.Resident, name string) resident.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ev, err := r.WaitFor(ctx, name)
	if err != nil {
		t.Fatalf("%s: %v", r.UserID(), err)
	}
	return ev
}

// waitStats waits until the resident's latest stats satisfy ok.
func waitStats(ctx context.Context, t *testing.T, r *resident.Resident, ok func(resident.Stats) bool) resident.Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for {
		s := r.LastStats()
		if ok(s) {
			return s
		}
		if _, err := r.WaitFor(ctx, resident.EventStats); err != nil {
			t.Fatalf("%s: last stats %+v: %v", r.UserID(), s, err)
		}
	}
}

// clientAPI calls POST /_matrix/client/v3<path> and decodes the answer.
func clientAPI(ctx context.Context, t *testing.T, base, token, path string, body, out any) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/_matrix/client/v3"+path, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var raw bytes.Buffer
	_, _ = raw.ReadFrom(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %s: %s", path, res.Status, raw.Bytes())
	}
	if out != nil {
		if err := json.Unmarshal(raw.Bytes(), out); err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
	}
}

// prefixed logs through t.Log with a name in front of each line.
func prefixed(t *testing.T, name string) io.Writer {
	return nodeproc.TestLog(t, name+": ")
}
