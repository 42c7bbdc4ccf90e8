package matrix

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/doorbell/intercom/callengine"
)

// The resident in these tests is a second Session with encryption (the
// same mautrix crypto); the end-to-end tests (cmd/intercom/e2e) use
// matrix-js-sdk's rust crypto in Chromium instead.

// cryptoSession returns a Session of user with encryption in dir; the
// door's residents are alice, alice's resident is the door (so that she
// joins the door's invites).
func (e *hsEnv) cryptoSession(t *testing.T, door bool, store Store, dir string) *Session {
	t.Helper()
	u, peer, pass := e.door, e.alice, doorPassword
	if !door {
		u, peer, pass = e.alice, e.door, "alice-password-1"
	}
	s, err := New(Options{
		Homeserver: e.srv.BaseURL,
		UserID:     callengine.UserID(u.UserID),
		Password:   pass,
		DeviceName: "Front door",
		Residents:  []callengine.UserID{callengine.UserID(peer.UserID)},
		Store:      store,
		Messages:   true,
		Encryption: &EncryptionOptions{Dir: dir},
		Logger:     slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: cryptoTestLogLevel})),
		HTTPClient: &http.Client{Transport: e.count},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// joinedDM makes the door's encrypted DM with alice and waits until the
// door sees her joined.
func (e *hsEnv) joinedDM(t *testing.T, door *Session) id.RoomID {
	t.Helper()
	rooms, err := door.EnsureDirectRooms(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	room := id.RoomID(rooms[callengine.UserID(e.alice.UserID)])
	eventually(t, "alice joins the DM", 30*time.Second, func() bool {
		return door.crypt.Load().state.IsInRoom(t.Context(), room, id.UserID(e.alice.UserID))
	})
	return room
}

// runUntil runs s until the returned stop is called.
func runUntil(t *testing.T, s *Session) (<-chan callengine.RoomEvent, func()) {
	t.Helper()
	ch := make(chan callengine.RoomEvent, 100)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, func(ev callengine.RoomEvent) { ch <- ev }) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	}
	t.Cleanup(stop)
	eventually(t, "first sync", 30*time.Second, s.Healthy)
	return ch, stop
}

// receiveType waits for the next event of type typ, skipping others.
func receiveType(t *testing.T, ch <-chan callengine.RoomEvent, typ string) callengine.RoomEvent {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case ev := <-ch:
			if ev.Type == typ {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s within 30s", typ)
		}
	}
}

func testJPEG(t *testing.T) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for i := range img.Pix {
		img.Pix[i] = byte(i)
	}
	img.Set(1, 1, color.White)
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestDendriteEncryptedDirectRoom(t *testing.T) {
	e := startHS(t)
	ctx := t.Context()
	doorDir, aliceDir := t.TempDir(), t.TempDir()
	door := e.cryptoSession(t, true, e.store, doorDir)
	if err := door.Login(ctx); err != nil {
		t.Fatal(err)
	}
	alice := e.cryptoSession(t, false, &memStore{}, aliceDir)
	if err := alice.Login(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{cryptoDBName, pickleKeyName} {
		fi, err := os.Stat(filepath.Join(doorDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	doorCh, stopDoor := runUntil(t, door)
	aliceCh, _ := runUntil(t, alice)

	rooms, err := door.EnsureDirectRooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	room := rooms[callengine.UserID(e.alice.UserID)]
	eventually(t, "alice joins the encrypted DM", 30*time.Second, func() bool {
		members, err := door.crypt.Load().state.GetRoomJoinedOrInvitedMembers(ctx, id.RoomID(room))
		return err == nil && len(members) == 2 && door.crypt.Load().state.IsInRoom(ctx, id.RoomID(room), id.UserID(e.alice.UserID))
	})
	if !door.crypt.Load().roomEncrypted(ctx, id.RoomID(room)) {
		t.Fatal("the DM the intercom created is not encrypted")
	}
	if err := door.PrepareEncryption(ctx, room); err != nil {
		t.Fatal(err)
	}

	// Door → alice: a notice, encrypted.
	if _, err := door.SendText(ctx, room, "Someone rang", false); err != nil {
		t.Fatal(err)
	}
	got := receiveType(t, aliceCh, event.EventMessage.Type)
	if !got.Seal.Encrypted || got.Seal.Trust != callengine.TrustDevice || got.Seal.Device != door.DeviceID() {
		t.Errorf("alice got the notice with seal %+v, want encrypted from device %s", got.Seal, door.DeviceID())
	}
	if !bytes.Contains(got.Content, []byte(`"Someone rang"`)) {
		t.Errorf("alice got %s", got.Content)
	}

	// Alice → door: a command, encrypted, tied to her device.
	if err := alice.PrepareEncryption(ctx, room); err != nil {
		t.Fatal(err)
	}
	cmdID, err := alice.SendText(ctx, room, "!open", true)
	if err != nil {
		t.Fatal(err)
	}
	cmd := receiveType(t, doorCh, event.EventMessage.Type)
	if cmd.ID != cmdID || !cmd.Seal.Encrypted || !cmd.Seal.RoomEncrypted || cmd.Seal.Trust != callengine.TrustDevice || cmd.Seal.Device != alice.DeviceID() {
		t.Errorf("door got %s with seal %+v, want %s encrypted from alice's device %s", cmd.ID, cmd.Seal, cmdID, alice.DeviceID())
	}
	if m, ok := ParseMessage(cmd); !ok || m.Body != "!open" {
		t.Errorf("door got %s", cmd.Content)
	}

	// Door → alice: a snapshot, as an encrypted attachment.
	jpg := testJPEG(t)
	if _, err := door.SendJPEG(ctx, room, "Visitor", "visitor.jpg", jpg); err != nil {
		t.Fatal(err)
	}
	img := receiveType(t, aliceCh, event.EventMessage.Type)
	var content event.MessageEventContent
	if err := json.Unmarshal(img.Content, &content); err != nil {
		t.Fatal(err)
	}
	if content.URL != "" || content.File == nil {
		t.Fatalf("snapshot content %s: want an encrypted file, no url", img.Content)
	}
	mxc, err := content.File.URL.Parse()
	if err != nil {
		t.Fatal(err)
	}
	c, _ := alice.client()
	r, err := c.Download(ctx, mxc)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := io.ReadAll(r.Body)
	r.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ct, jpg[:64]) {
		t.Error("the homeserver stores the snapshot in the clear")
	}
	pt, err := content.File.Decrypt(ct)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jpeg.Decode(bytes.NewReader(pt)); err != nil || !bytes.Equal(pt, jpg) {
		t.Errorf("decrypted snapshot: %v (equal %v)", err, bytes.Equal(pt, jpg))
	}

	// Restart the door with its stores kept: same identity, no new keys,
	// old sessions still decrypt, no old command delivered again.
	ed := door.CryptoStatus().Ed25519
	stopDoor()
	door.Close()
	door2 := e.cryptoSession(t, true, e.store, doorDir)
	if err := door2.Login(ctx); err != nil {
		t.Fatal(err)
	}
	if got := door2.CryptoStatus().Ed25519; got != ed || got == "" {
		t.Errorf("identity key after restart %q, want %q", got, ed)
	}
	doorCh2, stopDoor2 := runUntil(t, door2)
	cmd2, err := alice.SendText(ctx, room, "!open again", true)
	if err != nil {
		t.Fatal(err)
	}
	again := receiveType(t, doorCh2, event.EventMessage.Type)
	if again.ID != cmd2 || again.Seal.Trust != callengine.TrustDevice {
		t.Errorf("after restart the door got %s (seal %+v), want %s (an old command replayed?)", again.ID, again.Seal, cmd2)
	}
	stopDoor2()
	door2.Close()

	// The crypto store deleted while the access token is kept: refused.
	for _, n := range []string{cryptoDBName, cryptoDBName + "-wal", cryptoDBName + "-shm"} {
		os.Remove(filepath.Join(doorDir, n))
	}
	door3 := e.cryptoSession(t, true, e.store, doorDir)
	if err := door3.Login(ctx); !errors.Is(err, ErrCryptoStore) {
		t.Errorf("Login without the crypto store: %v, want ErrCryptoStore", err)
	} else {
		t.Logf("refused as expected: %v", err)
	}
	door3.Close()

	// A corrupted store: refused too, never replaced.
	garbage := bytes.Repeat([]byte("not a database "), 512)
	if err := os.WriteFile(filepath.Join(doorDir, cryptoDBName), garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	door4 := e.cryptoSession(t, true, e.store, doorDir)
	if err := door4.Login(ctx); !errors.Is(err, ErrCryptoStore) || !strings.Contains(err.Error(), "restore") {
		t.Errorf("Login with a corrupted crypto store: %v, want ErrCryptoStore with a way out", err)
	}
	if b, _ := os.ReadFile(filepath.Join(doorDir, cryptoDBName)); !bytes.Equal(b, garbage) {
		t.Error("the corrupted store was replaced")
	}
}

// TestDendriteCrossSigningAndIdentityReset: the intercom's identity is
// made once and signs its device, so a resident sees it cross-signed; a
// resident's cross-signed device counts as such at the door until the
// resident resets their identity, after which it is only a device of
// theirs (door.require_cross_signed then refuses it).
func TestDendriteCrossSigningAndIdentityReset(t *testing.T) {
	e := startHS(t)
	ctx := t.Context()
	door := e.cryptoSession(t, true, e.store, t.TempDir())
	alice := e.cryptoSession(t, false, &memStore{}, t.TempDir())
	for _, s := range []*Session{door, alice} {
		if err := s.Login(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if door.CryptoStatus().CrossSigned {
		t.Fatal("cross-signed before provisioning")
	}
	cs, err := door.EnsureCrossSigning(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if !cs.Created || cs.RecoveryKey == "" || cs.MasterKey == "" || !door.CryptoStatus().CrossSigned {
		t.Fatalf("first EnsureCrossSigning: %+v, status %+v", cs, door.CryptoStatus())
	}
	again, err := door.EnsureCrossSigning(ctx, "")
	if err != nil || again.Created || again.Signed || again.MasterKey != cs.MasterKey {
		t.Fatalf("second EnsureCrossSigning: %+v, %v; want nothing done", again, err)
	}
	if _, err := alice.EnsureCrossSigning(ctx, ""); err != nil {
		t.Fatal(err)
	}

	doorCh, _ := runUntil(t, door)
	aliceCh, stopAlice := runUntil(t, alice)
	room := callengine.RoomID(e.joinedDM(t, door))
	if _, err := door.SendText(ctx, room, "ring", false); err != nil {
		t.Fatal(err)
	}
	if got := receiveType(t, aliceCh, event.EventMessage.Type); got.Seal.Trust != callengine.TrustCrossSigned {
		t.Errorf("alice sees the door's notice with trust %s, want cross_signed", got.Seal.Trust)
	}
	if _, err := alice.SendText(ctx, room, "!open", true); err != nil {
		t.Fatal(err)
	}
	if got := receiveType(t, doorCh, event.EventMessage.Type); got.Seal.Trust != callengine.TrustCrossSigned {
		t.Errorf("door sees alice's command with trust %s, want cross_signed", got.Seal.Trust)
	}

	// Alice resets her identity (as "reset cryptographic identity" in
	// Element does): a new master key signs her device. Her sync loop is
	// stopped meanwhile: mautrix's OlmMachine keeps its own cross-signing
	// keys unguarded, and a client does this from one place.
	stopAlice()
	am := alice.crypt.Load().mach
	if _, _, err := am.GenerateAndUploadCrossSigningKeysWithPassword(ctx, "alice-password-1", ""); err != nil {
		t.Fatal(err)
	}
	if err := am.SignOwnDevice(ctx, am.OwnIdentity()); err != nil {
		t.Fatal(err)
	}
	if err := am.SignOwnMasterKey(ctx); err != nil {
		t.Fatal(err)
	}
	runUntil(t, alice)
	// The door learns of the change from the device list in its sync; the
	// command after it is a device of alice's, no longer cross-signed by
	// the identity the door first saw.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := alice.SendText(ctx, room, "!open", true); err != nil {
			t.Fatal(err)
		}
		got := receiveType(t, doorCh, event.EventMessage.Type)
		if got.Seal.Trust == callengine.TrustDevice {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after alice's identity reset the door still sees trust %s", got.Seal.Trust)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// holdingTransport keeps back the Olm-encrypted to-device messages (room
// keys) while hold is set, answering 200 as if delivered; Release sends
// the kept ones on.
type holdingTransport struct {
	base http.RoundTripper
	mu   sync.Mutex
	hold bool
	kept []*http.Request
}

func (h *holdingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	hold := h.hold && r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/sendToDevice/m.room.encrypted/")
	h.mu.Unlock()
	if !hold {
		return h.base.RoundTrip(r)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	kept := r.Clone(context.Background())
	kept.Body = io.NopCloser(bytes.NewReader(body))
	kept.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	h.mu.Lock()
	h.kept = append(h.kept, kept)
	h.mu.Unlock()
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader("{}")), Request: r}, nil
}

func (h *holdingTransport) setHold(v bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hold = v
}

func (h *holdingTransport) release(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	kept := h.kept
	h.kept = nil
	h.mu.Unlock()
	for _, r := range kept {
		resp, err := h.base.RoundTrip(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
}

// TestDendriteMissingRoomKey: a command whose room key is late waits (the
// status names its room and sender) and is delivered once the key comes;
// one whose key never comes is asked for, then given up on, and never
// reaches the door.
func TestDendriteMissingRoomKey(t *testing.T) {
	e := startHS(t)
	ctx := t.Context()
	door := e.cryptoSession(t, true, e.store, t.TempDir())
	alice := e.cryptoSession(t, false, &memStore{}, t.TempDir())
	hold := &holdingTransport{base: http.DefaultTransport}
	alice.http = &http.Client{Transport: hold}
	for _, s := range []*Session{door, alice} {
		if err := s.Login(ctx); err != nil {
			t.Fatal(err)
		}
	}
	de := door.crypt.Load()
	de.requestAfter, de.waitLimit = 300*time.Millisecond, 2*time.Second
	doorCh, _ := runUntil(t, door)
	runUntil(t, alice)
	room := callengine.RoomID(e.joinedDM(t, door))

	// The key is late.
	hold.setHold(true)
	late, err := alice.SendText(ctx, room, "!open", true)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the door waiting for the key", 10*time.Second, func() bool {
		w := door.CryptoStatus().Waiting
		return len(w) == 1 && w[0].EventID == late && w[0].Room == string(room) && w[0].Sender == e.alice.UserID
	})
	hold.setHold(false)
	hold.release(t)
	if got := receiveType(t, doorCh, event.EventMessage.Type); got.ID != late || !got.Seal.Encrypted {
		t.Fatalf("after the late key the door got %s (%+v), want %s", got.ID, got.Seal, late)
	}
	if st := door.CryptoStatus(); len(st.Waiting) != 0 || st.Undecryptable != 0 {
		t.Errorf("status after the late key: %+v", st)
	}

	// The key never comes: asked for, then given up on.
	if err := alice.crypt.Load().store.RemoveOutboundGroupSession(ctx, id.RoomID(room)); err != nil {
		t.Fatal(err)
	}
	hold.setHold(true)
	lost, err := alice.SendText(ctx, room, "!open", true)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the door giving up", 20*time.Second, func() bool {
		st := door.CryptoStatus()
		return st.Undecryptable == 1 && st.LastFailure != nil && st.LastFailure.EventID == lost
	})
	st := door.CryptoStatus()
	if !strings.Contains(st.LastFailure.Reason, "no room key") || st.LastFailure.Sender != e.alice.UserID || len(st.Waiting) != 0 {
		t.Errorf("status after giving up: %+v (last failure %+v)", st, *st.LastFailure)
	}
	select {
	case ev := <-doorCh:
		if ev.ID == lost {
			t.Fatalf("the undecryptable command reached the door: %+v", ev)
		}
	default:
	}
	// The key request went out to alice's devices (and was kept back with
	// her answer, if she gave one).
	hold.mu.Lock()
	n := len(hold.kept)
	hold.mu.Unlock()
	t.Logf("to-device messages kept back from alice: %d", n)
}

// TestDendriteRoomKeysKeptWarm: when a resident adds a device, the door's
// sync loop shares the prepared room's key with it ahead of the next
// send, so a press does not pay for it.
func TestDendriteRoomKeysKeptWarm(t *testing.T) {
	e := startHS(t)
	ctx := t.Context()
	door := e.cryptoSession(t, true, e.store, t.TempDir())
	alice := e.cryptoSession(t, false, &memStore{}, t.TempDir())
	for _, s := range []*Session{door, alice} {
		if err := s.Login(ctx); err != nil {
			t.Fatal(err)
		}
	}
	runUntil(t, door)
	runUntil(t, alice)
	room := e.joinedDM(t, door)
	de := door.crypt.Load()
	if err := door.PrepareEncryption(ctx, callengine.RoomID(room)); err != nil {
		t.Fatal(err)
	}

	// Alice's second device.
	phone := e.cryptoSession(t, false, &memStore{}, t.TempDir())
	if err := phone.Login(ctx); err != nil {
		t.Fatal(err)
	}
	phoneKey := phone.crypt.Load().mach.OwnIdentity().IdentityKey
	eventually(t, "the door sharing the room key with alice's new device", 30*time.Second, func() bool {
		sess, err := de.store.GetOutboundGroupSession(ctx, room)
		if err != nil || sess == nil || !sess.Shared {
			return false
		}
		ok, err := de.store.IsOutboundGroupSessionShared(ctx, id.UserID(e.alice.UserID), phoneKey, sess.ID())
		return err == nil && ok
	})
}

// TestDendriteEncryptedToDeviceOnce: with the household room encrypted,
// SendToDevice sends Olm-encrypted, and a retry after a lost response
// delivers the event once, as in the clear (the transaction ID is kept):
// the retry sends the same ciphertext again instead of encrypting anew.
func TestDendriteEncryptedToDeviceOnce(t *testing.T) {
	e := startHS(t)
	ctx := t.Context()
	door := e.cryptoSession(t, true, e.store, t.TempDir())
	if err := door.Login(ctx); err != nil {
		t.Fatal(err)
	}
	alice := e.cryptoSession(t, false, &memStore{}, t.TempDir())
	if err := alice.Login(ctx); err != nil {
		t.Fatal(err)
	}
	runUntil(t, door)
	runUntil(t, alice)
	rooms, err := door.EnsureDirectRooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	room := rooms[callengine.UserID(e.alice.UserID)]
	eventually(t, "alice joins the encrypted DM", 30*time.Second, func() bool {
		return door.crypt.Load().state.IsInRoom(ctx, id.RoomID(room), id.UserID(e.alice.UserID)) &&
			door.crypt.Load().roomEncrypted(ctx, id.RoomID(room))
	})
	door.SetHouseholdHooks(&HouseholdHooks{Room: room, ToDevice: func(ToDeviceEvent) {}})
	got := make(chan ToDeviceEvent, 10)
	alice.SetHouseholdHooks(&HouseholdHooks{Room: room, ToDevice: func(ev ToDeviceEvent) { got <- ev }})

	send := func(callID string) {
		t.Helper()
		if err := door.SendToDevice(ctx, "com.famedly.call.member.invite", callengine.UserID(e.alice.UserID), alice.DeviceID(),
			map[string]any{"call_id": callID}); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-got:
			if !ev.Encrypted || ev.Device != door.DeviceID() || ev.Type != "com.famedly.call.member.invite" ||
				!bytes.Contains(ev.Content, []byte(callID)) {
				t.Fatalf("alice got %+v (%s), want %s encrypted from device %s", ev, ev.Content, callID, door.DeviceID())
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s never reached alice", callID)
		}
	}
	send("c1")
	e.count.loseNext(func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/sendToDevice/m.room.encrypted/")
	})
	send("c2")
	send("c3") // a later sync: anything sent twice has arrived by now
	select {
	case ev := <-got:
		t.Errorf("alice got %s twice (%s): the retry was delivered too", ev.Type, ev.Content)
	case <-time.After(time.Second):
	}
}

// TestDendriteEncryptedToDevicesOneRequest: SendEncryptedToDevices seals
// a MatrixRTC media key for each of alice's two devices and sends both in
// one request; a device with no keys on the homeserver is named in the
// error and does not stop the others.
func TestDendriteEncryptedToDevicesOneRequest(t *testing.T) {
	e := startHS(t)
	ctx := t.Context()
	door := e.cryptoSession(t, true, e.store, t.TempDir())
	phone := e.cryptoSession(t, false, &memStore{}, t.TempDir())
	laptop := e.cryptoSession(t, false, &memStore{}, t.TempDir())
	for _, s := range []*Session{door, phone, laptop} {
		if err := s.Login(ctx); err != nil {
			t.Fatal(err)
		}
		runUntil(t, s)
	}
	rooms, err := door.EnsureDirectRooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	room := rooms[callengine.UserID(e.alice.UserID)]
	eventually(t, "alice joins the encrypted DM", 30*time.Second, func() bool {
		return door.crypt.Load().state.IsInRoom(ctx, id.RoomID(room), id.UserID(e.alice.UserID))
	})
	got := make(chan ToDeviceEvent, 10)
	for _, s := range []*Session{phone, laptop} {
		dev := s.DeviceID()
		s.SetHouseholdHooks(&HouseholdHooks{Room: room, ToDevice: func(ev ToDeviceEvent) {
			ev.Device = dev // which of alice's devices got it
			got <- ev
		}})
	}
	const typ = "io.element.call.encryption_keys"
	before := e.count.count("PUT /sendToDevice")
	err = door.SendEncryptedToDevices(ctx, typ, map[callengine.UserID][]string{
		callengine.UserID(e.alice.UserID): {phone.DeviceID(), "NOSUCHDEVICE", laptop.DeviceID()},
	}, map[string]any{"call_id": "", "keys": []any{}})
	if err == nil || !strings.Contains(err.Error(), "NOSUCHDEVICE") ||
		strings.Contains(err.Error(), phone.DeviceID()) || strings.Contains(err.Error(), laptop.DeviceID()) {
		t.Fatalf("err %v: want one naming NOSUCHDEVICE only", err)
	}
	if n := e.count.count("PUT /sendToDevice") - before; n != 1 {
		t.Errorf("%d sendToDevice requests, want 1", n)
	}
	reached := map[string]bool{}
	for len(reached) < 2 {
		select {
		case ev := <-got:
			if ev.Type != typ || !ev.Encrypted {
				t.Fatalf("a device got %+v, want %s Olm-encrypted", ev, typ)
			}
			reached[ev.Device] = true
		case <-time.After(30 * time.Second):
			t.Fatalf("only %v got the key", reached)
		}
	}
}

// TestDendriteReplayedCiphertextRefused: the same Megolm ciphertext sent
// again as a new event (a new event ID and timestamp, as a homeserver or
// anyone with the sender's token could) does not decrypt a second time:
// mautrix remembers each (session, message index) with its event, so the
// door's event-ID memory is not the only guard.
func TestDendriteReplayedCiphertextRefused(t *testing.T) {
	e := startHS(t)
	ctx := t.Context()
	door := e.cryptoSession(t, true, e.store, t.TempDir())
	alice := e.cryptoSession(t, false, &memStore{}, t.TempDir())
	for _, s := range []*Session{door, alice} {
		if err := s.Login(ctx); err != nil {
			t.Fatal(err)
		}
	}
	doorCh, _ := runUntil(t, door)
	runUntil(t, alice)
	room := e.joinedDM(t, door)
	first, err := alice.SendText(ctx, callengine.RoomID(room), "!open", true)
	if err != nil {
		t.Fatal(err)
	}
	if got := receiveType(t, doorCh, event.EventMessage.Type); got.ID != first {
		t.Fatalf("door got %s, want %s", got.ID, first)
	}
	ac, _ := alice.client()
	orig, err := ac.GetEvent(ctx, room, id.EventID(first))
	if err != nil {
		t.Fatal(err)
	}
	if orig.Type != event.EventEncrypted {
		t.Fatalf("alice's command went out as %s", orig.Type.Type)
	}
	resp, err := ac.SendMessageEvent(ctx, room, event.EventEncrypted, json.RawMessage(orig.Content.VeryRaw))
	if err != nil {
		t.Fatal(err)
	}
	replay := string(resp.EventID)
	eventually(t, "the replay refused", 30*time.Second, func() bool {
		f := door.CryptoStatus().LastFailure
		return f != nil && f.EventID == replay
	})
	if f := door.CryptoStatus().LastFailure; !strings.Contains(f.Reason, "duplicate") {
		t.Errorf("replay refused for %q, want a duplicate message index", f.Reason)
	}
	select {
	case ev := <-doorCh:
		t.Fatalf("the replayed ciphertext reached the door as %s (%s)", ev.ID, ev.Content)
	case <-time.After(500 * time.Millisecond):
	}
}

// TestDendriteWedgedOlmSession: the door lost its Olm sessions (a state
// directory restored from an older backup, say), so the room key alice
// sends over her existing session does not decrypt. mautrix starts a new
// Olm session with her device (and sends it a dummy event), the door asks
// for the missing key, and alice's device sends it over the new session:
// the command that waited is delivered.
func TestDendriteWedgedOlmSession(t *testing.T) {
	e := startHS(t)
	ctx := t.Context()
	doorDir := t.TempDir()
	door := e.cryptoSession(t, true, e.store, doorDir)
	alice := e.cryptoSession(t, false, &memStore{}, t.TempDir())
	for _, s := range []*Session{door, alice} {
		if err := s.Login(ctx); err != nil {
			t.Fatal(err)
		}
	}
	doorCh, stopDoor := runUntil(t, door)
	runUntil(t, alice)
	room := e.joinedDM(t, door)
	first, err := alice.SendText(ctx, callengine.RoomID(room), "!open", true)
	if err != nil {
		t.Fatal(err)
	}
	if got := receiveType(t, doorCh, event.EventMessage.Type); got.ID != first {
		t.Fatalf("door got %s, want %s", got.ID, first)
	}

	// The door forgets every Olm session.
	stopDoor()
	door.Close()
	db, err := sql.Open("sqlite3-fk-wal", "file:"+filepath.Join(doorDir, cryptoDBName))
	if err != nil {
		t.Fatal(err)
	}
	res, err := db.Exec(`DELETE FROM crypto_olm_session`)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := res.RowsAffected()
	db.Close()
	if n == 0 {
		t.Fatal("no Olm session to forget")
	}
	door2 := e.cryptoSession(t, true, e.store, doorDir)
	if err := door2.Login(ctx); err != nil {
		t.Fatal(err)
	}
	d2 := door2.crypt.Load()
	d2.requestAfter, d2.waitLimit = 300*time.Millisecond, 30*time.Second
	doorCh2, _ := runUntil(t, door2)

	// A new room key, sent over alice's old (now wedged) Olm session.
	if err := alice.crypt.Load().store.RemoveOutboundGroupSession(ctx, room); err != nil {
		t.Fatal(err)
	}
	cmd, err := alice.SendText(ctx, callengine.RoomID(room), "!open", true)
	if err != nil {
		t.Fatal(err)
	}
	got := receiveType(t, doorCh2, event.EventMessage.Type)
	if got.ID != cmd || !got.Seal.Encrypted {
		t.Fatalf("after the wedge the door got %s (%+v), want %s", got.ID, got.Seal, cmd)
	}
	t.Logf("delivered after the unwedge with seal %+v", got.Seal)
}

// cryptoTestLogLevel is the level of the crypto tests' logs; debug shows
// mautrix's own.
var cryptoTestLogLevel = slog.LevelInfo
