package livekit

import (
	"bytes"
	"errors"
	"testing"

	"github.com/doorbell/intercom/callengine/rtc"
	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/framecrypt"
)

// TestCallCrypto: a frame the door seals with its current key opens at a
// participant that holds that key for the door's identity (both sides
// fed through rtc.CallKeys, as the runner feeds them), and fails without
// it or after tampering.
func TestCallCrypto(t *testing.T) {
	key := bytes.Repeat([]byte{7}, rtc.MediaKeyBytes)
	door := &rtc.CallKeys{}
	door.Add(rtc.KeyUpdate{Own: true, Index: 3, Key: key})
	sender := NewCallCrypto(door, nil)

	listener := &rtc.CallKeys{}
	receiver := NewCallCrypto(listener, nil) // keys after construction too
	listener.Add(rtc.KeyUpdate{Identity: "@door:hs:DOOR", Index: 3, Key: key})

	frame := append([]byte{0x78}, bytes.Repeat([]byte{1, 2, 3}, 40)...) // an Opus TOC byte and payload
	sealed, err := sender.Encrypt(media.Opus, frame)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(sealed[1:len(frame)], frame[1:]) {
		t.Fatal("payload sent in the clear")
	}
	sealed = append([]byte(nil), sealed...) // the encryptor reuses its buffer
	opened, err := receiver.Decrypt(media.Opus, "@door:hs:DOOR", sealed)
	if err != nil || !bytes.Equal(opened, frame) {
		t.Fatalf("decrypt = %x, %v; want %x", opened, err, frame)
	}
	if _, err := receiver.Decrypt(media.Opus, "@someone:hs:ELSE", sealed); !errors.Is(err, framecrypt.ErrNoKey) {
		t.Errorf("decrypt without that participant's key: %v, want ErrNoKey", err)
	}
	sealed[len(sealed)/2] ^= 1
	if _, err := receiver.Decrypt(media.Opus, "@door:hs:DOOR", sealed); err == nil {
		t.Error("a tampered frame decrypted")
	}
	if _, err := NewCallCrypto(&rtc.CallKeys{}, nil).Encrypt(media.Opus, frame); err == nil {
		t.Error("encrypted without a key")
	}
}
