package householdpeer

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	// Registers the "sqlite3-fk-wal" driver (mattn/go-sqlite3 with
	// foreign keys and WAL), the one mautrix's SQL stores are tested with.
	_ "go.mau.fi/util/dbutil/litestream"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Bounds of the ring notifications that wait for their room key.
const (
	megolmWaitLimit = 30 * time.Second
	maxMegolmWait   = 32
)

// olm is a device's end-to-end encryption, as a famedly client with
// encryption has it: mautrix's OlmMachine over a SQLite crypto store and
// an in-memory room state store (the device needs only whether its room is
// encrypted). Its methods run on the sync goroutine (sync, decrypt) and on
// the senders' goroutines (encrypt); the OlmMachine locks what it shares.
type olm struct {
	mach  *crypto.OlmMachine
	state *mautrix.MemoryStateStore
	db    *dbutil.Database
	tmp   string // a store directory made by openOlm, removed by close

	mu      sync.Mutex
	waiting []waitingRoomEvent
}

// waitingRoomEvent is an m.room.encrypted timeline event whose Megolm
// session has not arrived yet.
type waitingRoomEvent struct {
	evt   *event.Event
	since time.Time
}

// openOlm opens the crypto store in o.CryptoDir (a new temporary directory
// if empty), creates the device's Olm account if the store has none, and
// uploads its device keys and one-time keys, so that the intercom can
// start an Olm session with it before it publishes its membership.
func openOlm(ctx context.Context, o Options) (_ *olm, err error) {
	c := &olm{state: mautrix.NewMemoryStateStore().(*mautrix.MemoryStateStore)}
	dir := o.CryptoDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "householdpeer-crypto"); err != nil {
			return nil, err
		}
		c.tmp = dir
	}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	zl := zerolog.New(logfWriter(o.Logf)).Level(zerolog.WarnLevel)
	if c.db, err = dbutil.NewWithDialect("file:"+filepath.Join(dir, "crypto.db")+"?_txlock=immediate", "sqlite3-fk-wal"); err != nil {
		return nil, fmt.Errorf("crypto store: %w", err)
	}
	// The store's secrets are pickled with this key. A test device keeps
	// it only for its lifetime: a store left in CryptoDir is not meant to
	// be opened again.
	pickle := make([]byte, 32)
	_, _ = rand.Read(pickle)
	store := crypto.NewSQLCryptoStore(c.db, dbutil.ZeroLogger(zl), "", id.DeviceID(o.DeviceID), pickle)
	if err := store.DB.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("crypto store: %w", err)
	}
	cli, err := mautrix.NewClient(o.Homeserver, id.UserID(o.UserID), o.AccessToken)
	if err != nil {
		return nil, err
	}
	cli.DeviceID = id.DeviceID(o.DeviceID)
	cli.Log = zl
	cli.StateStore = c.state
	c.mach = crypto.NewOlmMachine(cli, &zl, store, c.state)
	if err := c.mach.Load(ctx); err != nil {
		return nil, fmt.Errorf("olm account: %w", err)
	}
	if err := c.mach.ShareKeys(ctx, -1); err != nil {
		return nil, fmt.Errorf("upload device keys: %w", err)
	}
	return c, nil
}

func (c *olm) close() {
	if c.mach != nil {
		c.mach.Destroy()
	}
	if c.db != nil {
		_ = c.db.Close()
	}
	if c.tmp != "" {
		_ = os.RemoveAll(c.tmp)
	}
}

// updateState records a state event of room (m.room.encryption, members)
// in the state store.
func (c *olm) updateState(ctx context.Context, room string, raw json.RawMessage) {
	evt := parseEvent(raw, room)
	if evt == nil || evt.StateKey == nil {
		return
	}
	mautrix.UpdateStateStore(ctx, c.state, evt)
}

// roomEncrypted reports whether room has m.room.encryption, as far as the
// device has seen its state.
func (c *olm) roomEncrypted(ctx context.Context, room string) bool {
	enc, err := c.state.IsEncrypted(ctx, id.RoomID(room))
	return err == nil && enc
}

// toDeviceEvent is a to-device event as the call code takes it.
type toDeviceEvent struct {
	Sender    string          `json:"sender"`
	Type      string          `json:"type"`
	Content   json.RawMessage `json:"content"`
	encrypted bool
	device    string // the sender's device, known for decrypted events only
}

// handleSync feeds the crypto parts of one /sync response to the machine,
// in the order mautrix's own ProcessSyncResponse uses: device list
// changes, the to-device events (Olm-decrypted; room keys and key requests
// are the machine's), then the one-time key count (topped up when fewer
// than half are left). It returns the other to-device events, decrypted
// or in the clear, in arrival order; undecryptable ones are counted in
// failed.
func (c *olm) handleSync(ctx context.Context, toDevice []json.RawMessage, deviceLists, otkCount json.RawMessage) (out []toDeviceEvent, failed int) {
	var dl mautrix.DeviceLists
	if len(deviceLists) > 0 && json.Unmarshal(deviceLists, &dl) == nil {
		c.mach.HandleDeviceLists(ctx, &dl, "")
	}
	for _, raw := range toDevice {
		var plain toDeviceEvent
		if json.Unmarshal(raw, &plain) != nil || plain.Type == "" {
			continue
		}
		switch plain.Type {
		case event.ToDeviceEncrypted.Type:
		case event.ToDeviceRoomKeyRequest.Type, event.ToDeviceRoomKeyWithheld.Type, event.ToDeviceOrgMatrixRoomKeyWithheld.Type:
			if evt := parseEvent(raw, ""); evt != nil {
				evt.Type.Class = event.ToDeviceEventType
				c.mach.HandleToDeviceEvent(ctx, evt)
			}
			continue
		default:
			// In the clear, call signalling among it: handed on as
			// it came, whatever mautrix would make of its content.
			out = append(out, plain)
			continue
		}
		evt := parseEvent(raw, "")
		if evt == nil {
			failed++
			continue
		}
		evt.Type.Class = event.ToDeviceEventType
		if _, ok := evt.Content.Parsed.(*event.EncryptedEventContent); !ok {
			failed++
			continue
		}
		dec := c.mach.HandleEncryptedEvent(ctx, evt)
		if dec == nil {
			// A room key or a dummy is nil too: only Olm messages
			// that decrypt to something else reach the call code.
			continue
		}
		td := toDeviceEvent{Sender: string(dec.Sender), Type: dec.Type.Type, Content: dec.Content.VeryRaw, encrypted: true}
		if dec.SenderDevice != nil {
			td.device = string(dec.SenderDevice.DeviceID)
		}
		out = append(out, td)
	}
	var otk mautrix.OTKCount
	if len(otkCount) > 0 && json.Unmarshal(otkCount, &otk) == nil {
		c.mach.HandleOTKCounts(ctx, &otk)
	}
	c.mach.MarkOlmHashSavePoint(ctx)
	return out, failed
}

// decryptRoomEvent decrypts an m.room.encrypted timeline event of room.
// An event whose Megolm session has not arrived waits (retryWaiting);
// ok is false then, and for events that do not decrypt at all (gaveUp).
func (c *olm) decryptRoomEvent(ctx context.Context, room string, raw json.RawMessage) (typ string, ok, gaveUp bool) {
	evt := parseEvent(raw, room)
	if evt == nil {
		return "", false, true
	}
	dec, err := c.mach.DecryptMegolmEvent(ctx, evt)
	switch {
	case errors.Is(err, crypto.ErrNoSessionFound):
		c.mu.Lock()
		defer c.mu.Unlock()
		if len(c.waiting) >= maxMegolmWait {
			c.waiting = c.waiting[1:]
		}
		c.waiting = append(c.waiting, waitingRoomEvent{evt: evt, since: time.Now()})
		return "", false, false
	case err != nil:
		return "", false, true
	}
	return dec.Type.Type, true, false
}

// retryWaiting decrypts the events that waited for their session, after a
// sync that may have brought it. It returns the types of those that
// decrypted and how many were given up.
func (c *olm) retryWaiting(ctx context.Context) (types []string, gaveUp int) {
	c.mu.Lock()
	pending := c.waiting
	c.waiting = nil
	c.mu.Unlock()
	var keep []waitingRoomEvent
	for _, w := range pending {
		dec, err := c.mach.DecryptMegolmEvent(ctx, w.evt)
		switch {
		case err == nil:
			types = append(types, dec.Type.Type)
		case errors.Is(err, crypto.ErrNoSessionFound) && time.Since(w.since) < megolmWaitLimit:
			keep = append(keep, w)
		default:
			gaveUp++
		}
	}
	c.mu.Lock()
	c.waiting = append(keep, c.waiting...)
	c.mu.Unlock()
	return types, gaveUp
}

// sendToDevice sends content Olm-encrypted to one device, as dart-sdk's
// sendToDeviceEncrypted does for call signalling in an encrypted room.
func (c *olm) sendToDevice(ctx context.Context, user, device, eventType string, content map[string]any) error {
	dev, err := c.mach.GetOrFetchDevice(ctx, id.UserID(user), id.DeviceID(device))
	if err != nil {
		return err
	}
	b, err := json.Marshal(content)
	if err != nil {
		return err
	}
	return c.mach.SendEncryptedToDevice(ctx, dev, event.Type{Type: eventType, Class: event.ToDeviceEventType}, event.Content{VeryRaw: b})
}

// parseEvent decodes one client-format event, its content parsed as
// mautrix knows it (unknown types stay raw); nil if it does not decode.
func parseEvent(raw json.RawMessage, room string) *event.Event {
	var evt event.Event
	if json.Unmarshal(raw, &evt) != nil || evt.Type.Type == "" {
		return nil
	}
	if room != "" {
		evt.RoomID = id.RoomID(room)
	}
	if evt.StateKey != nil {
		evt.Type.Class = event.StateEventType
	} else {
		evt.Type.Class = event.MessageEventType
	}
	if err := evt.Content.ParseRaw(evt.Type); err != nil && !errors.Is(err, event.ErrUnsupportedContentType) {
		return nil
	}
	return &evt
}

// logfWriter turns zerolog's lines into Logf calls.
type logfWriter func(format string, args ...any)

func (w logfWriter) Write(p []byte) (int, error) {
	w("crypto: %s", strings.TrimSpace(string(p)))
	return len(p), nil
}
