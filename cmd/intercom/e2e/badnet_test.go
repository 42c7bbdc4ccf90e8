package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/impair"
)

// badNet is a system whose door reaches the resident only through a bad
// network: the intercom is relay-only (turn.relay_only) and its one TURN
// server (turn.uris) is an impair.Forwarder in front of coturn, so its
// TURN allocation, the only 5-tuple its media can use, crosses the
// forwarder in both directions. The resident (Chromium) gets no TURN
// server from the homeserver and answers on its loopback host candidate:
// the path is door ⇄ forwarder ⇄ coturn (relay) ⇄ resident, impaired on
// the door's side only, as a door on a poor uplink would be.
type badNet struct {
	*e2e
	turn *coturn
	fwd  *impair.Forwarder
}

// startBadNet starts coturn, the forwarder in front of it (forwarding
// unimpaired until a test sets its links), and the system.
func startBadNet(t testing.TB, residents ...string) *badNet {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: needs coturn, Dendrite and Chromium")
	}
	turn := startCoturn(t)
	fwd, err := impair.Listen("127.0.0.1:0", fmt.Sprintf("127.0.0.1:%d", turn.Port), impair.Link{}, impair.Link{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fwd.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("forwarder: %v", err)
		}
	})
	// The TURN REST scheme coturn checks (use-auth-secret): the user name
	// is "expiry:name", the password base64(HMAC-SHA1(secret, user name)).
	user := strconv.FormatInt(time.Now().Add(24*time.Hour).Unix(), 10) + ":intercom"
	mac := hmac.New(sha1.New, []byte(turn.Secret))
	mac.Write([]byte(user))
	pwFile := filepath.Join(t.TempDir(), "turn-password")
	if err := os.WriteFile(pwFile, []byte(base64.StdEncoding.EncodeToString(mac.Sum(nil))), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("turn:\n  uris: [\"turn:%s?transport=udp\"]\n  username: %q\n  password_file: %s\n  relay_only: true\n",
		fwd.Addr(), user, pwFile)
	// A camera's picture, not the bare pattern: its encoder must want
	// more than the capped link carries.
	e := startSystemWith(t, systemOptions{Config: cfg, Env: []string{"INTERCOM_TEST_PATTERN_NOISE=1"}}, residents...)
	return &badNet{e2e: e, turn: turn, fwd: fwd}
}

// setLinks impairs both directions of the door's path alike.
func (n *badNet) setLinks(l impair.Link, seed uint64) {
	n.fwd.SetLink(impair.Up, l, seed)
	n.fwd.SetLink(impair.Down, l, seed+1)
}

// TestBadNetworkPath (issue 16): a call whose door is relay-only behind
// the impairing forwarder, at 2 % loss each way. Every byte the resident
// receives from the door crossed the forwarder (its up direction carried
// at least as many bytes as the resident's video and audio payload, which
// leaves out the RTP, SRTP and TURN headers the forwarder also carried),
// every packet the door heard came through it (its down direction
// forwarded at least as many packets as the door received audio packets),
// the forwarder really dropped packets, and the video still flows.
func TestBadNetworkPath(t *testing.T) {
	n := startBadNet(t, "judy")
	judy := n.residents[0]
	n.setLinks(impair.Link{Loss: 0.02}, 16)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	before := n.fwd.Stats()
	n.answerCall(ctx, judy)
	st := waitFrames(ctx, t, judy, 60)
	s := n.waitStatus(ctx, "in call, hearing judy", func(s status) bool {
		return s.State == "in_call" && len(s.Calls) == 1 && s.Calls[0].State == "connected" && s.Media.ReceivedAudio.Packets > 100
	})
	after := n.fwd.Stats()
	st2 := judy.LastStats()
	if st2.FramesDecoded >= st.FramesDecoded {
		st = st2
	}
	t.Logf("judy: %d frames, %d video bytes, %d audio packets, pair %s → %s; the door heard %d packets; forwarder %+v",
		st.FramesDecoded, st.VideoBytesReceived, st.AudioPacketsReceived, st.LocalAddress, st.RemoteAddress, s.Media.ReceivedAudio.Packets, after)

	if got := candidateType(st.RemoteAddress); got != "relay" {
		t.Errorf("the door's side of the selected pair is %q (%s), want relay", got, st.RemoteAddress)
	}
	if got := candidateType(st.LocalAddress); got != "host" {
		t.Errorf("judy's side of the selected pair is %q (%s), want her host candidate", got, st.LocalAddress)
	}
	up := after.Up.ForwardedBytes - before.Up.ForwardedBytes
	if st.VideoBytesReceived == 0 || up < uint64(st.VideoBytesReceived) {
		t.Errorf("the forwarder carried %d bytes up, the resident received %d bytes of video alone", up, st.VideoBytesReceived)
	}
	if down := after.Down.Forwarded - before.Down.Forwarded; down < s.Media.ReceivedAudio.Packets {
		t.Errorf("the forwarder carried %d packets down, the door received %d audio packets", down, s.Media.ReceivedAudio.Packets)
	}
	// The draws are the seeds' (16 and 17: their first losses are the
	// 22nd and 14th packet after setLinks), so this cannot flake.
	if after.Up.Lost == 0 || after.Down.Lost == 0 {
		t.Errorf("no packet dropped at 2 %% loss: %+v", after)
	}
	if a := n.turn.allocations(":intercom"); len(a) == 0 {
		t.Error("coturn allocated no relay for the intercom")
	}

	if err := judy.Hangup(); err != nil {
		t.Fatal(err)
	}
	n.waitStatus(ctx, "idle", func(s status) bool { return s.State == "idle" })
}
