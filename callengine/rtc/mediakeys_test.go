package rtc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// keyMachine is a machine whose keys are 16 bytes of 1, 2, 3, … in the
// order it makes them.
func keyMachine() *Machine {
	cfg := DefaultConfig(self, "https://rtc.example.org/livekit/jwt")
	n := byte(0)
	cfg.NewKey = func() []byte { n++; return bytes.Repeat([]byte{n}, MediaKeyBytes) }
	return New(cfg)
}

func encryptedTargets() []Target {
	return []Target{{Room: roomA, Residents: []callengine.UserID{alice.User, bob.User}, Encrypted: true}}
}

// TestMediaKeyRules follows the intercom's key for one encrypted room
// through a ring, a first answer long after it, a second joiner inside
// and outside the grace, and a leaver.
func TestMediaKeyRules(t *testing.T) {
	m := keyMachine()
	effs := m.Step(t0, RingRequested{Targets: encryptedTargets()})
	use := find[UseMediaKey](effs)
	if len(use) != 1 || use[0].Index != 0 || use[0].Key[0] != 1 {
		t.Fatalf("ring: key use %+v, want key 1 at index 0", use)
	}
	// The key must be in use before the SFU connection is asked for.
	iUse, iJoin := -1, -1
	for i, e := range effs {
		switch e.(type) {
		case UseMediaKey:
			iUse = i
		case JoinSFU:
			iJoin = i
		}
	}
	if iUse > iJoin {
		t.Fatalf("SFU joined before the key was set: %v", effs)
	}
	m.Step(t0, MembershipSent{Room: roomA, EventID: "$m"})

	// alice answers 30 s later: the key nobody has yet is hers, no
	// rotation (see the package comment on the first joiners).
	at := t0.Add(30 * time.Second)
	effs = m.Step(at, MemberChanged{Room: roomA, Event: joinEvent(alice, at)})
	share := find[ShareMediaKey](effs)
	if len(share) != 1 || share[0].Index != 0 || len(share[0].To) != 1 || share[0].To[0] != alice {
		t.Fatalf("first answer: shares %+v, want key 0 to alice", share)
	}
	if len(find[UseMediaKey](effs)) != 0 || len(find[StartTimer](effs)) != 1 { // the presence timer only
		t.Fatalf("first answer rotated: %v", effs)
	}

	// bob joins 5 s later: inside the grace, he gets the same key.
	at = at.Add(5 * time.Second)
	effs = m.Step(at, MemberChanged{Room: roomA, Event: joinEvent(bob, at)})
	share = find[ShareMediaKey](effs)
	if len(share) != 1 || share[0].Index != 0 || len(share[0].To) != 1 || share[0].To[0] != bob {
		t.Fatalf("joiner in grace: shares %+v, want key 0 to bob", share)
	}

	// bob leaves: rotate to index 1, sent to alice at once, used a
	// KeyUseDelay later.
	at = at.Add(time.Minute)
	effs = m.Step(at, MemberChanged{Room: roomA, Event: leaveEvent(bob, at)})
	share = find[ShareMediaKey](effs)
	if len(share) != 1 || share[0].Index != 1 || share[0].Key[0] != 2 || len(share[0].To) != 1 || share[0].To[0] != alice {
		t.Fatalf("leaver: shares %+v, want key 1 to alice", share)
	}
	if len(find[UseMediaKey](effs)) != 0 {
		t.Fatalf("rotated key used before its delay: %v", effs)
	}
	timers := find[StartTimer](effs)
	if len(timers) != 1 || timers[0].ID != (TimerID{Kind: TimerKeyUse, Room: roomA}) || timers[0].After != time.Second {
		t.Fatalf("leaver: timers %+v", timers)
	}
	effs = m.Step(at.Add(time.Second), TimerFired{ID: timers[0].ID})
	if use := find[UseMediaKey](effs); len(use) != 1 || use[0].Index != 1 || use[0].Key[0] != 2 {
		t.Fatalf("key use after the delay: %v", effs)
	}

	// bob comes back 20 s after the rotation: outside the grace, so a new
	// key (index 2) for both.
	at = at.Add(20 * time.Second)
	effs = m.Step(at, MemberChanged{Room: roomA, Event: joinEvent(bob, at)})
	share = find[ShareMediaKey](effs)
	if len(share) != 1 || share[0].Index != 2 || len(share[0].To) != 2 {
		t.Fatalf("late joiner: shares %+v, want key 2 to alice and bob", share)
	}

	// Leaving the room stops the pending key timer.
	effs = m.Step(at, HangupRequested{})
	found := false
	for _, st := range find[StopTimer](effs) {
		found = found || st.ID == (TimerID{Kind: TimerKeyUse, Room: roomA})
	}
	if !found {
		t.Fatalf("hangup left the key timer running: %v", effs)
	}
}

// TestMediaKeyIndexWraps: the index counts modulo 256, as js-sdk's.
func TestMediaKeyIndexWraps(t *testing.T) {
	m := keyMachine()
	m.Step(t0, RingRequested{Targets: encryptedTargets()})
	m.Step(t0, MemberChanged{Room: roomA, Event: joinEvent(alice, t0)})
	at := t0
	const rounds = 300 // each leave rotates once
	for range rounds {
		at = at.Add(time.Second)
		m.Step(at, MemberChanged{Room: roomA, Event: joinEvent(bob, at)})
		m.Step(at, MemberChanged{Room: roomA, Event: leaveEvent(bob, at)})
	}
	if got, want := m.legs[roomA].keys.index, byte(rounds%256); got != want {
		t.Fatalf("index after %d rotations = %d, want %d", rounds, got, want)
	}
}

// TestRemoteKeys: a member's key applies to their LiveKit identity, at
// once for a member, after the membership for an early one; keys for
// rooms not in a call or not encrypted are dropped.
func TestRemoteKeys(t *testing.T) {
	m := keyMachine()
	m.Step(t0, RingRequested{Targets: append(encryptedTargets(), Target{Room: roomB, Residents: []callengine.UserID{bob.User}})})
	k := bytes.Repeat([]byte{9}, 16)

	effs := m.Step(t0, MediaKeyReceived{Key: MediaKey{Room: roomA, From: alice, Index: 3, Key: k}})
	if len(effs) != 0 {
		t.Fatalf("early key applied before the membership: %v", effs)
	}
	effs = m.Step(t0, MemberChanged{Room: roomA, Event: joinEvent(alice, t0)})
	rk := find[RemoteMediaKey](effs)
	// Under both identities she may have at the SFU (identity.go).
	if len(rk) != 2 || rk[0].Identity != alice.Identity() || rk[1].Identity != HashedIdentity(alice, alice.Identity()) ||
		rk[0].Index != 3 || !bytes.Equal(rk[0].Key, k) || !bytes.Equal(rk[1].Key, k) {
		t.Fatalf("early key after the membership: %+v", rk)
	}
	effs = m.Step(t0, MediaKeyReceived{Key: MediaKey{Room: roomA, From: alice, Index: 4, Key: k}})
	if rk := find[RemoteMediaKey](effs); len(rk) != 2 || rk[0].Index != 4 {
		t.Fatalf("member's key: %v", effs)
	}
	for _, room := range []callengine.RoomID{roomB, "!other:example.org"} {
		effs = m.Step(t0, MediaKeyReceived{Key: MediaKey{Room: room, From: bob, Index: 0, Key: k}})
		if ig := find[Ignored](effs); len(ig) != 1 || len(find[RemoteMediaKey](effs)) != 0 {
			t.Fatalf("key for %s: %v", room, effs)
		}
	}
	// The early buffer is bounded.
	for i := range 3 * maxEarlyKeys {
		m.Step(t0, MediaKeyReceived{Key: MediaKey{Room: roomA, From: Device{User: "@x:example.org", DeviceID: string(rune('A' + i))}, Key: k}})
	}
	if n := len(m.legs[roomA].keys.early); n != maxEarlyKeys {
		t.Fatalf("early keys kept = %d, want %d", n, maxEarlyKeys)
	}
}

// TestUnencryptedRoomHasNoKeys: nothing about keys in a plain room.
func TestUnencryptedRoomHasNoKeys(t *testing.T) {
	m := keyMachine()
	effs := m.Step(t0, RingRequested{Targets: targets()})
	effs = append(effs, m.Step(t0, MemberChanged{Room: roomA, Event: joinEvent(alice, t0)})...)
	if len(find[UseMediaKey](effs))+len(find[ShareMediaKey](effs)) != 0 {
		t.Fatalf("keys in an unencrypted room: %v", effs)
	}
}

func TestDecodeEncryptionKeys(t *testing.T) {
	good := NewEncryptionKeys(alice, roomA, 7, bytes.Repeat([]byte{5}, 16), t0)
	raw, _ := json.Marshal(good)
	mk, err := DecodeEncryptionKeys(alice.User, alice.DeviceID, raw)
	if err != nil || mk.Room != roomA || mk.From != alice || mk.Index != 7 || !bytes.Equal(mk.Key, bytes.Repeat([]byte{5}, 16)) {
		t.Fatalf("decode %s = %+v, %v", raw, mk, err)
	}
	// js-sdk's exact shape, key unpadded and 32 bytes (other clients).
	js := `{"keys":{"index":0,"key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},"member":{"id":"@alice:example.org:ALICEPHONE","claimed_device_id":"ALICEPHONE"},"room_id":"!a:example.org","session":{"call_id":"","application":"m.call","scope":"m.room"},"sent_ts":1}`
	if mk, err := DecodeEncryptionKeys(alice.User, alice.DeviceID, []byte(js)); err != nil || len(mk.Key) != 32 {
		t.Fatalf("js-sdk shape: %+v, %v", mk, err)
	}
	for name, c := range map[string]string{
		"other device":  `{"keys":{"index":0,"key":"BQUFBQUFBQUFBQUFBQUFBQ=="},"member":{"claimed_device_id":"EVIL"},"room_id":"!a:example.org"}`,
		"no room":       `{"keys":{"index":0,"key":"BQUFBQUFBQUFBQUFBQUFBQ=="},"member":{"claimed_device_id":"ALICEPHONE"}}`,
		"no index":      `{"keys":{"key":"BQUFBQUFBQUFBQUFBQUFBQ=="},"member":{"claimed_device_id":"ALICEPHONE"},"room_id":"!a:example.org"}`,
		"index 256":     `{"keys":{"index":256,"key":"BQUFBQUFBQUFBQUFBQUFBQ=="},"member":{"claimed_device_id":"ALICEPHONE"},"room_id":"!a:example.org"}`,
		"index 1.5":     `{"keys":{"index":1.5,"key":"BQUFBQUFBQUFBQUFBQUFBQ=="},"member":{"claimed_device_id":"ALICEPHONE"},"room_id":"!a:example.org"}`,
		"short key":     `{"keys":{"index":0,"key":"BQUF"},"member":{"claimed_device_id":"ALICEPHONE"},"room_id":"!a:example.org"}`,
		"not base64":    `{"keys":{"index":0,"key":"!!!!"},"member":{"claimed_device_id":"ALICEPHONE"},"room_id":"!a:example.org"}`,
		"a list (old)":  `{"keys":[{"index":0,"key":"BQUFBQUFBQUFBQUFBQUFBQ=="}],"device_id":"ALICEPHONE","call_id":""}`,
		"not an object": `[]`,
	} {
		if _, err := DecodeEncryptionKeys(alice.User, alice.DeviceID, []byte(c)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
	}
}

// ringEncrypted starts a runner with media encryption, makes roomA
// encrypted and rings alice there; the runner stops with the test. Call
// it inside synctest.Test.
func ringEncrypted(t *testing.T) (*fakeTransport, *fakeSFU, *Runner) {
	t.Helper()
	tr, sfu := &fakeTransport{}, &fakeSFU{}
	r := NewRunner(RunnerConfig{Machine: DefaultConfig(self, "https://rtc.example.org/livekit/jwt"), MediaEncryption: true}, tr, sfu)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	r.HandleState(callengine.StateEvent{Room: roomA, Type: TypeEncryption, Content: []byte(`{"algorithm":"m.megolm.v1.aes-sha2"}`)})
	if err := r.Ring(t.Context(), []callengine.Resident{{User: alice.User, Room: roomA}}); err != nil {
		t.Fatal(err)
	}
	return tr, sfu, r
}

// TestRunnerMediaKeys: in an encrypted room the SFU connection gets the
// intercom's key before it is joined and the resident's once they are a
// member; the intercom's key goes Olm-encrypted to the resident's device
// when they join; a key in the clear is dropped.
func TestRunnerMediaKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr, sfu, r := ringEncrypted(t)
		synctest.Wait()
		c := sfu.conn(roomA)
		if c == nil || c.keys == nil {
			t.Fatalf("encrypted room joined without keys: %+v", c)
		}
		var got []KeyUpdate
		c.keys.Watch(func(u KeyUpdate) { got = append(got, u) })
		if len(got) != 1 || !got[0].Own || got[0].Index != 0 || len(got[0].Key) != MediaKeyBytes {
			t.Fatalf("keys at join: %+v", got)
		}
		ak := bytes.Repeat([]byte{7}, 16)
		content, _ := json.Marshal(NewEncryptionKeys(alice, roomA, 0, ak, t0))
		r.HandleToDevice(alice.User, alice.DeviceID, TypeEncryptionKeys, content, false) // in the clear
		r.HandleToDevice(alice.User, alice.DeviceID, TypeEncryptionKeys, content, true)
		r.HandleState(stateOf(roomA, joinEvent(alice, time.Now())))
		synctest.Wait()
		// Her key, under both identities she may have at the SFU.
		want := []string{alice.Identity(), HashedIdentity(alice, alice.Identity())}
		if len(got) != 3 || got[1].Own || got[2].Own || got[1].Identity != want[0] || got[2].Identity != want[1] ||
			!bytes.Equal(got[1].Key, ak) || !bytes.Equal(got[2].Key, ak) {
			t.Fatalf("keys after alice joined: %+v, want hers for %v", got, want)
		}
		sent := tr.sentToDevice()
		if len(sent) != 1 || sent[0].Type != TypeEncryptionKeys || sent[0].To != alice {
			t.Fatalf("to-device sends %+v", sent)
		}
		mk, err := DecodeEncryptionKeys(self.User, self.DeviceID, sent[0].Content)
		if err != nil || mk.Room != roomA || !bytes.Equal(mk.Key, got[0].Key) {
			t.Fatalf("shared key %+v, %v; want the key in use", mk, err)
		}
	})
}

// TestRunnerRotatedKeyOneRequest: when a member leaves, the rotated key
// goes to every remaining device in one to-device request (one round trip
// however many devices a household has in the call), each device named
// once.
func TestRunnerRotatedKeyOneRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr, _, r := ringEncrypted(t)
		synctest.Wait()
		laptop := Device{User: alice.User, DeviceID: "ALICELAPTOP"}
		tablet := Device{User: alice.User, DeviceID: "ALICETABLET"}
		for _, d := range []Device{alice, laptop, tablet} {
			r.HandleState(stateOf(roomA, joinEvent(d, time.Now())))
			synctest.Wait()
		}
		before := tr.sentCount()
		r.HandleState(stateOf(roomA, leaveEvent(tablet, time.Now())))
		synctest.Wait()
		sent, requests := tr.sentSince(before)
		var to []Device
		for _, s := range sent {
			to = append(to, s.To)
		}
		if requests != 1 || len(sent) != 2 || !slices.Contains(to, alice) || !slices.Contains(to, laptop) {
			t.Fatalf("after the tablet left: %d requests to %v, want one request to %v and %v", requests, to, alice, laptop)
		}
		a, errA := DecodeEncryptionKeys(self.User, self.DeviceID, sent[0].Content)
		b, errB := DecodeEncryptionKeys(self.User, self.DeviceID, sent[1].Content)
		if errA != nil || errB != nil || a.Index != 1 || !bytes.Equal(a.Key, b.Key) {
			t.Fatalf("rotated keys %+v %v, %+v %v: want index 1, the same key to both", a, errA, b, errB)
		}
	})
}
