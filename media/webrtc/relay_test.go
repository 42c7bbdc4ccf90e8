package webrtc

import (
	"errors"
	"testing"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/codec"
	"github.com/pion/webrtc/v4"
)

// TestRelayOnly: a relay-only factory makes no peer while it knows no TURN
// server (such a peer could never connect), and once it knows one its
// peers use ICE transport policy "relay".
func TestRelayOnly(t *testing.T) {
	stream, err := media.NewStream(media.StreamConfig{Encoders: codec.Encoders()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stream.Close() })
	f, err := NewPeerFactory(stream, Config{RelayOnly: true, LoopbackOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	sink := func(callengine.PeerEvent) {}
	if _, err := f.NewPeer(t.Context(), sink); !errors.Is(err, ErrNoRelay) {
		t.Fatalf("NewPeer without a TURN server: %v, want ErrNoRelay", err)
	}
	// A resident's offer (live view): audio and video both ways.
	caller, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		if _, err := caller.AddTransceiverFromKind(kind); err != nil {
			t.Fatal(err)
		}
	}
	offer, err := caller.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.AcceptOffer(t.Context(), offer.SDP, sink); !errors.Is(err, ErrNoRelay) {
		t.Fatalf("AcceptOffer without a TURN server: %v, want ErrNoRelay", err)
	}

	// Port 9 (discard) on loopback: nothing answers, which is fine here.
	f.SetICEServers([]ICEServer{{URLs: []string{"turn:127.0.0.1:9?transport=udp"}, Username: "u", Credential: "p"}})
	p, err := f.NewPeer(t.Context(), sink)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	got := p.(*Peer).pc.GetConfiguration()
	if got.ICETransportPolicy != webrtc.ICETransportPolicyRelay || len(got.ICEServers) != 1 {
		t.Errorf("peer configuration %+v, want relay policy and the TURN server", got)
	}
}
