package matrix

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/sqlstatestore"
)

// offlineE2EE is an e2ee with a real crypto store and OlmMachine whose
// homeserver answers every request with 404 but to-device sends (taken,
// delivered to nobody): what the decoders make of a sync response, and
// what sending costs, without a network.
func offlineE2EE(t testing.TB) *e2ee {
	t.Helper()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/sendToDevice/") {
			w.Write([]byte(`{}`)) // accepted, delivered to nobody
			return
		}
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"errcode":"M_UNRECOGNIZED","error":"offline"}`))
	}))
	t.Cleanup(hs.Close)
	s, err := New(Options{Homeserver: hs.URL, Store: &memStore{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	c := s.newClient("@door:hs.test", "DOOR", "token")
	s.cli.Store(c)
	db, err := dbutil.NewWithDialect("file:"+t.TempDir()+"/crypto.db?_txlock=immediate", "sqlite3-fk-wal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx := context.Background()
	e := &e2ee{s: s, db: db, device: c.DeviceID, cli: c, requestAfter: keyRequestAfter, waitLimit: keyWaitLimit,
		prepared: map[id.RoomID]bool{}, warm: make(chan struct{}, 1)}
	e.store = crypto.NewSQLCryptoStore(db, dbutil.NoopLogger, "", c.DeviceID, make([]byte, pickleKeyLength))
	if err := e.store.DB.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	e.state = sqlstatestore.NewSQLStateStore(db, dbutil.NoopLogger, false)
	if err := e.state.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	c.StateStore = e.state
	e.mach = crypto.NewOlmMachine(c, nil, e.store, e.state)
	if err := e.mach.Load(ctx); err != nil {
		t.Fatal(err)
	}
	s.crypt.Store(e)
	return e
}

// FuzzCryptoSync feeds arbitrary sync responses to the crypto's decoders
// (handleSync: state, device lists, key counts, Olm to-device events) and
// each timeline event to the Megolm path. Nothing may panic, and nothing
// that did not decrypt may come out as decrypted.
func FuzzCryptoSync(f *testing.F) {
	room := `"!dm:hs.test"`
	for _, seed := range []string{
		`{}`,
		`{"to_device":{"events":[{"type":"m.room.encrypted","sender":"@alice:hs.test","content":{"algorithm":"m.olm.v1.curve25519-aes-sha2","sender_key":"x","ciphertext":{"k":{"type":0,"body":"AwogAAA"}}}}]}}`,
		`{"to_device":{"events":[{"type":"m.room_key_request","sender":"@alice:hs.test","content":{"action":"request","requesting_device_id":"P","request_id":"1","body":{"room_id":"!dm:hs.test"}}}]}}`,
		`{"device_lists":{"changed":["@alice:hs.test"],"left":[]},"device_one_time_keys_count":{"signed_curve25519":3}}`,
		`{"device_lists":{"changed":"nope"},"device_one_time_keys_count":[]}`,
		`{"rooms":{"join":{` + room + `:{"state":{"events":[{"type":"m.room.encryption","state_key":"","sender":"@alice:hs.test","content":{"algorithm":"m.megolm.v1.aes-sha2"}},{"type":"m.room.member","state_key":"@alice:hs.test","sender":"@alice:hs.test","content":{"membership":"join"}}]},"timeline":{"events":[{"type":"m.room.encrypted","event_id":"$e","sender":"@alice:hs.test","origin_server_ts":1,"content":{"algorithm":"m.megolm.v1.aes-sha2","sender_key":"k","session_id":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","ciphertext":"AwgAEhAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","device_id":"P"}}]}}}}}`,
		`{"rooms":{"join":{` + room + `:{"timeline":{"events":[{"type":"m.room.encrypted","event_id":"$f","sender":"@alice:hs.test","content":{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":12}}]}}}}}`,
	} {
		f.Add([]byte(seed))
	}
	e := offlineE2EE(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		ctx := context.Background()
		var resp cryptoSync
		if json.Unmarshal(body, &resp) != nil {
			return // the sync loop hands the crypto nothing
		}
		for _, td := range e.handleSync(ctx, &resp, false) {
			if !td.Encrypted {
				t.Fatalf("a to-device event came out of the crypto unmarked: %+v", td)
			}
		}
		for roomID, j := range resp.Rooms.Join {
			for _, raw := range j.Timeline.Events {
				var se syncEvent
				if json.Unmarshal(raw, &se) != nil || se.Type != "m.room.encrypted" {
					continue
				}
				// No room key was ever received: nothing decrypts.
				if ev, ok := e.decryptTimeline(ctx, roomID, raw, se); ok {
					t.Fatalf("decrypted without a key: %+v", ev)
				}
			}
		}
		// Waiting events are bounded, whatever arrives.
		e.mu.Lock()
		n := len(e.waiting)
		e.mu.Unlock()
		if n > maxWaiting {
			t.Fatalf("%d events waiting, bound %d", n, maxWaiting)
		}
	})
}
