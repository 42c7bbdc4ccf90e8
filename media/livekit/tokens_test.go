package livekit

import (
	"strings"
	"testing"

	"github.com/livekit/protocol/auth"

	"github.com/doorbell/intercom/callengine/rtc"
)

// TestMintedTokens: a self-minted token names the identity and LiveKit
// room lk-jwt-service would, and is signed with the configured key pair.
func TestMintedTokens(t *testing.T) {
	self := rtc.Device{User: "@door:hs.test", DeviceID: "DEV"}
	m := MintedTokens{URL: "wss://sfu.hs.test", Key: "APIkey", Secret: strings.Repeat("s", 32), Self: self}
	tok, err := m.Token(t.Context(), "!room:hs.test")
	if err != nil || tok.URL != "wss://sfu.hs.test" {
		t.Fatalf("token %+v, %v", tok, err)
	}
	v, err := auth.ParseAPIToken(tok.JWT)
	if err != nil {
		t.Fatal(err)
	}
	if v.APIKey() != "APIkey" {
		t.Errorf("signed with key %q", v.APIKey())
	}
	_, claims, err := v.Verify(m.Secret)
	if err != nil {
		t.Fatal(err)
	}
	g := claims.Video
	if claims.Identity != self.Identity() || g == nil || !g.RoomJoin || g.Room != rtc.LiveKitRoomName("!room:hs.test") ||
		g.CanPublish == nil || !*g.CanPublish || g.CanSubscribe == nil || !*g.CanSubscribe {
		t.Errorf("claims %+v, video %+v", claims, g)
	}
	if _, _, err := v.Verify("another secret, long enough to be a secret"); err == nil {
		t.Error("token verifies with another secret")
	}
}
