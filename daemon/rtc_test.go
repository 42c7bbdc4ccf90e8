package daemon

import (
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/rtc"
	"github.com/doorbell/intercom/matrix"
	"github.com/doorbell/intercom/provisioning"
)

// TestEncryptedRoomsRungClassicOnly: once sync shows a room's encryption,
// MatrixRTC leaves it to the classic call (this MatrixRTC media is not
// end-to-end encrypted); the other rooms and the household room still get
// their MatrixRTC ring.
func TestEncryptedRoomsRungClassicOnly(t *testing.T) {
	st, err := provisioning.OpenState(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	session, err := matrix.New(matrix.Options{Homeserver: "http://127.0.0.1:1", UserID: "@door:example.org",
		AccessToken: "unused", Store: stateStore{st}})
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close()
	home := callengine.RoomID("!home:example.org")
	m := newMatrixRTC(session, nil, nil, "https://rtc.example.org", 0,
		func() []callengine.RoomID { return []callengine.RoomID{home} }, slog.New(slog.DiscardHandler))
	enc, _ := json.Marshal(map[string]string{"algorithm": "m.megolm.v1.aes-sha2"})
	m.onState(matrix.StateEvent{Room: "!alice:example.org", Type: "m.room.encryption", Content: enc})
	m.onState(matrix.StateEvent{Room: "!bob:example.org", Type: "m.room.encryption", Content: []byte(`{}`)}) // redacted: not encrypted
	m.ring([]callengine.Resident{{User: "@alice:example.org", Room: "!alice:example.org"}, {User: "@bob:example.org", Room: "!bob:example.org"}})

	var targets []rtc.Target
	for _, it := range m.take() {
		if r, ok := it.ev.(rtc.RingRequested); ok {
			targets = r.Targets
		}
	}
	if len(targets) != 2 || targets[0].Room != "!bob:example.org" || targets[1].Room != home || !targets[1].Group || len(targets[1].Residents) != 2 {
		t.Fatalf("MatrixRTC targets %+v: want bob's room and the household room, not alice's encrypted one", targets)
	}
}
