package livekit

import (
	"context"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	protologger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	pionmedia "github.com/pion/webrtc/v4/pkg/media"
)

// nodeIPFromEnv returns $INTERCOM_TEST_VETH_IP, else 127.0.0.1: both work
// for the SDK client (see SkipWithoutClientAddress).
func nodeIPFromEnv() string {
	if ip := os.Getenv(VethIPEnv); ip != "" {
		return ip
	}
	return "127.0.0.1"
}

// TestSFUForwardsMedia connects two Go SDK participants: one publishes an
// Opus track, the other subscribes and must receive its RTP packets
// through the SFU.
func TestSFUForwardsMedia(t *testing.T) {
	SkipWithoutClientAddress(t)
	// In cmd/intercom/e2e's namespace the veth address; else loopback.
	srv := StartT(t, Options{NodeIP: nodeIPFromEnv()})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	got := make(chan int, 1)
	var packets atomic.Int64
	subTok, err := srv.Token("viewer", "room1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	cb := lksdk.NewRoomCallback()
	cb.OnTrackSubscribed = func(tr *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		t.Logf("subscribed to %s from %s", tr.Codec().MimeType, rp.Identity())
		go func() {
			for {
				if _, _, err := tr.ReadRTP(); err != nil {
					return
				}
				if packets.Add(1) == 50 {
					got <- 50
				}
			}
		}()
	}
	t0 := time.Now()
	sub, err := lksdk.ConnectToRoomWithToken(srv.URL, subTok, cb, lksdk.WithAutoSubscribe(true))
	if err != nil {
		t.Fatalf("viewer connect: %v", err)
	}
	defer sub.Disconnect()

	pubTok, err := srv.Token("door", "room1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := lksdk.ConnectToRoomWithToken(srv.URL, pubTok, lksdk.NewRoomCallback())
	if err != nil {
		t.Fatalf("publisher connect: %v", err)
	}
	defer pub.Disconnect()
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "door")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.LocalParticipant.PublishTrack(track, &lksdk.TrackPublicationOptions{Name: "mic"}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	t.Logf("both joined and published in %v", time.Since(t0))

	// Any bytes do as Opus payload: the SFU forwards without decoding.
	frame := []byte{0xfc, 0xff, 0xfe}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-got:
			t.Logf("viewer received %d packets after %d samples, %v after joining", packets.Load(), i, time.Since(t0))
			return
		case <-ctx.Done():
			t.Fatalf("viewer received %d packets after %d samples", packets.Load(), i)
		case <-tick.C:
			if err := track.WriteSample(pionmedia.Sample{Data: frame, Duration: 20 * time.Millisecond}); err != nil {
				t.Fatalf("write sample: %v", err)
			}
		}
	}
}

// TestTokenAndConfig checks the parts that need no server process.
func TestTokenAndConfig(t *testing.T) {
	c := newConfig(7880, 7881, 7882, "10.203.0.1", "APIk", "secret")
	if strings.Join(c.BindAddresses, ",") != "127.0.0.1,10.203.0.1" || c.RTC.IPs.Includes[0] != "10.203.0.1/32" || !c.RTC.EnableLoopbackCandidate ||
		strings.Join(c.RTC.STUNServers, ",") != "10.203.0.1:7882" {
		t.Errorf("config %+v", c)
	}
	s := &Server{APIKey: "APIk", APISecret: strings.Repeat("s", 48)}
	tok, err := s.Token("door", "room", 0)
	if err != nil || strings.Count(tok, ".") != 2 {
		t.Errorf("token %q, %v", tok, err)
	}
}

func TestStopIsIdempotentAndKeepsLog(t *testing.T) {
	srv := StartT(t, Options{})
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if tail := srv.LogTail(20); !strings.Contains(tail, "starting LiveKit server") {
		t.Errorf("log tail after stop:\n%s", tail)
	}
	if _, err := os.Stat(srv.Dir); !os.IsNotExist(err) {
		t.Errorf("directory left: %v", err)
	}
}

func TestMain(m *testing.M) {
	// The SDK logs, and has pion log, through its package logger (stderr
	// by default); set once, before any room exists.
	lksdk.SetLogger(protologger.GetDiscardLogger())
	os.Exit(m.Run())
}
